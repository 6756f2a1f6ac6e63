"""The kNN monitor ranks the teacher's features in eval mode and leaves the module as it found it."""

from __future__ import annotations

from types import SimpleNamespace

import lightning as L
import torch
from torch import Tensor, nn

from reid.callbacks.knn_monitor import KNNMonitor
from reid.evaluation import EvalConfig, ReIDEvaluator


class _BatchNormEmbedder(L.LightningModule):
    """monitor_features = BatchNorm1d(x): in train mode the output depends on the batch."""

    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(4)
        with torch.no_grad():
            self.norm.running_mean.copy_(torch.tensor([1.0, -1.0, 0.5, 0.0]))
            self.norm.running_var.copy_(torch.tensor([4.0, 1.0, 0.25, 2.0]))

    def monitor_features(self, images: Tensor) -> Tensor:
        return self.norm(images)


def _monitor_set() -> tuple[list[dict[str, Tensor]], int]:
    generator = torch.Generator().manual_seed(0)
    pids = torch.tensor([0, 1, 2, 0, 0, 1, 1, 2, 2, 3])
    camids = torch.tensor([0, 0, 1, 1, 2, 1, 2, 0, 2, 0])
    images = torch.randn(10, 4, generator=generator) + pids[:, None].float()
    index = torch.arange(10)
    batches = [
        {"image": images[s], "pid": pids[s], "camid": camids[s], "index": index[s]}
        for s in (slice(0, 4), slice(4, 10))
    ]
    return batches, 3


def test_monitor_ranks_eval_mode_features_and_restores_the_module() -> None:
    module = _BatchNormEmbedder().train()
    buffers = {name: value.clone() for name, value in module.named_buffers()}
    batches, num_query = _monitor_set()
    datamodule = SimpleNamespace(num_query=num_query, monitor_dataloader=lambda: batches)
    trainer = SimpleNamespace(datamodule=datamodule, world_size=1, global_rank=0, global_step=7)
    config = EvalConfig(metric="cosine", normalize=True)

    metrics = KNNMonitor(every_n_epochs=1, evaluation=config).evaluate(trainer, module)

    assert module.training, "the monitor must hand the module back in train mode"
    for name, value in module.named_buffers():
        assert torch.equal(value, buffers[name]), f"the monitor changed buffer {name}"
    expected = ReIDEvaluator(num_query, config)
    module.eval()
    for batch in batches:
        with torch.no_grad():
            features = module.monitor_features(batch["image"])
        expected.update(features, batch["pid"], batch["camid"], batch["index"])
    result = expected.compute()
    want = {f"val/{name}": value for name, value in result.as_dict().items()}
    # the table states what it rests on (issue 15 item 7): queries with a match out of all queries
    want |= {"val/num_valid_queries": float(result.num_valid_queries), "val/num_queries": float(num_query)}
    assert metrics == want
