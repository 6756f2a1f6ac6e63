"""Stateful evaluator for a Lightning validation/test loop, DDP-aware.

``update`` keeps (index, feature, pid, camid) of each batch on the module's device. ``compute``
gathers them from every rank (``all_gather``, only when a process group is initialised), drops
the duplicates that ``DistributedSampler`` pads in (same ``index``, first copy kept), orders by
index and evaluates: positions ``< num_query`` are queries, the rest gallery; with ``trials``
(VehicleID) all positions are test images re-split by each trial.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import torch
import torch.distributed as dist
from torch import Tensor

from reid.data.records import Trial
from reid.evaluation.config import EvalConfig
from reid.evaluation.pipeline import evaluate
from reid.evaluation.rank import RankResult
from reid.evaluation.vehicleid import evaluate_trials


class EvalState(NamedTuple):
    """Everything seen, one row per distinct index, sorted by index."""

    indices: Tensor  # each row's dataset index
    features: Tensor
    pids: Tensor
    camids: Tensor


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def gather_rows(tensor: Tensor) -> Tensor:
    """Concatenate ``tensor`` (rows may differ in number per rank) from every rank, rank order."""
    if not _distributed():
        return tensor
    world = dist.get_world_size()
    size = torch.tensor([tensor.shape[0]], device=tensor.device)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    longest = int(max(int(s) for s in sizes))
    padded = tensor.new_zeros((longest, *tensor.shape[1:]))
    padded[: tensor.shape[0]] = tensor
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded)
    return torch.cat([part[: int(s)] for part, s in zip(parts, sizes)])


def deduplicate(state: EvalState) -> EvalState:
    """Keep the first row of every index, sorted by index."""
    order = torch.argsort(state.indices, stable=True)
    index = state.indices[order]
    first = torch.ones_like(index, dtype=torch.bool)
    first[1:] = index[1:] != index[:-1]
    keep = order[first]
    return EvalState(state.indices[keep], state.features[keep], state.pids[keep], state.camids[keep])


class ReIDEvaluator:
    """Accumulate features over an epoch of the query+gallery loader; compute ReID metrics."""

    def __init__(self, num_query: int, config: EvalConfig, trials: Sequence[Trial] = ()) -> None:
        if num_query < 1:
            raise ValueError(f"ReIDEvaluator: num_query must be >= 1, got {num_query}")
        self.num_query, self.config, self.trials = int(num_query), config, tuple(trials)
        self.reset()

    def reset(self) -> None:
        self._features: list[Tensor] = []
        self._labels: list[Tensor] = []  # [B, 3] = index, pid, camid

    def update(self, features: Tensor, pids: Tensor, camids: Tensor, indices: Tensor) -> None:
        if features.ndim != 2 or not (features.shape[0] == pids.numel() == camids.numel() == indices.numel()):
            raise ValueError(
                f"ReIDEvaluator.update: expected features [B, D] and B pids/camids/indices, got "
                f"{list(features.shape)}, {pids.numel()}, {camids.numel()}, {indices.numel()}"
            )
        device = features.device
        labels = torch.stack([indices.reshape(-1), pids.reshape(-1), camids.reshape(-1)], 1)
        self._features.append(features.detach())
        self._labels.append(labels.to(device=device, dtype=torch.long))

    def gathered_state(self) -> EvalState:
        """The de-duplicated state of all ranks."""
        if not self._features:
            raise RuntimeError("ReIDEvaluator.compute: no features were given to update()")
        features = gather_rows(torch.cat(self._features))
        labels = gather_rows(torch.cat(self._labels))
        return deduplicate(EvalState(labels[:, 0], features, labels[:, 1], labels[:, 2]))

    def compute(self) -> RankResult:
        state = self.gathered_state()
        expected = torch.arange(state.indices.numel(), device=state.indices.device)
        if not torch.equal(state.indices, expected) or state.indices.numel() < self.num_query:
            raise ValueError(
                f"ReIDEvaluator: expected indices 0..N-1 covering at least the {self.num_query} queries, "
                f"got {state.indices.numel()} distinct indices ranging "
                f"{int(state.indices.min())}..{int(state.indices.max())}"
            )
        features = state.features if state.features.dtype == torch.float64 else state.features.float()
        if self.trials:
            return evaluate_trials(features, state.pids, self.trials, self.config)
        q, g = slice(0, self.num_query), slice(self.num_query, None)
        if state.indices.numel() == self.num_query:
            raise ValueError(
                f"ReIDEvaluator: only the {self.num_query} queries were seen, the gallery is empty"
            )
        return evaluate(
            features[q],
            features[g],
            state.pids[q],
            state.pids[g],
            state.camids[q],
            state.camids[g],
            self.config,
        )


@torch.no_grad()
def update_with_batch(
    evaluator: ReIDEvaluator,
    embed: Callable[[torch.Tensor], torch.Tensor],
    batch: Mapping[str, Any],
    config: EvalConfig,
    device: torch.device | str = "cpu",
) -> None:
    """Embed a supervised-format batch (``image``, ``pid``, ``camid``, ``index``) with ``embed`` on
    ``device`` (flip-averaged when ``config.flip``) and add it to ``evaluator``."""
    images = batch["image"].to(device)
    features = embed(images)
    if config.flip:
        features = (features + embed(images.flip(-1))) / 2
    evaluator.update(features.float(), batch["pid"], batch["camid"], batch["index"])
