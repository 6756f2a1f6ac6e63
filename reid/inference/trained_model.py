"""Rebuild a trained retrieval task from its run folder, for inference.

The tasks (:data:`RetrievalTask`, chosen by the class ``model._target_`` names): a supervised
:class:`~reid.tasks.TransReIDTask` run (ViT or CNN, ID classifiers, optional SIE) or a Cluster Contrast
run (:class:`~reid.tasks.cluster_contrast.ClusterContrastTask`: USL, or UDA from a source model; ViT or
CNN, ``normalize(BN(feature))``, no classifier, images only).

A run of ``python -m reid.run`` leaves ``<run>/.hydra/config.yaml`` (the composed config) and
``<run>/checkpoints/*.ckpt`` (Lightning checkpoints). :func:`load_trained_model` builds the task from
the config's ``model`` node as ``reid.run`` does, loads the checkpoint strictly and returns it in eval
mode with the run's test transform (``data.image_size``, ``pixel_mean``, ``pixel_std``) and evaluation
settings (``eval``: L2 normalisation, flip averaging).

The training data need not be on disk: what the task is built for (:class:`DatasetInfo`) is read from
the checkpoint. For a supervised run the number of identities is the rows of the ID classifiers
(``net.*classifier*.weight``); the cameras and views are the rows of the SIE table
(``net.backbone.sie_embed``, ``[C * V, 1, D]``) read with the run's ``model.sie`` switches. A table of both
cameras and views holds ``C * V`` rows that do not say ``C``: pass ``num_cameras``. A Cluster Contrast run
has no identities and embeds images alone: ``DatasetInfo(0, 1, 1)``; its pseudo labels and cluster memory
(``checkpoint["cluster_contrast"]``, for resuming training) are not read. ``model.weights`` (the
initialisation of the run) is not read: the checkpoint holds every tensor.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from torch import Tensor

from reid.config import register_resolvers
from reid.config_schema import typed_node
from reid.data.records import DatasetInfo
from reid.data.transforms import ReIDTransforms
from reid.evaluation import EvalConfig
from reid.inference.device import parse_device
from reid.models.sie import CameraEmbedConfig
from reid.models.weights_checks import state_differences
from reid.tasks import TransReIDTask
from reid.tasks.cluster_contrast import ClusterContrastTask
from reid.tasks.from_config import build_task
from reid.training.checkpoint_io import AtomicCheckpointIO

CONFIG_FILE = Path(".hydra") / "config.yaml"
SIE_TABLE = "net.backbone.sie_embed"

RetrievalTask = TransReIDTask | ClusterContrastTask
"""The tasks a run is rebuilt as: each has ``net.backbone`` and ``forward(images, camids=None,
viewids=None) -> [B, D]``, the retrieval embedding its evaluation ranks (Cluster Contrast ignores the ids)."""

UNSUPERVISED_DATA_INFO = DatasetInfo(num_classes=0, num_cameras=1, num_views=1)
"""What a Cluster Contrast task is built for: no identities, no side information."""


@dataclass(frozen=True)
class RunFiles:
    """The config and the checkpoint a trained model is rebuilt from."""

    config: Path
    checkpoint: Path


@dataclass
class TrainedModel:
    """A trained task in eval mode with what its inputs and outputs need.

    ``camera_embed``: the SIE settings of the backbone (``None`` without SIE).
    """

    task: RetrievalTask
    files: RunFiles
    data_info: DatasetInfo
    evaluation: EvalConfig
    image_size: tuple[int, int]
    pixel_mean: tuple[float, float, float]
    pixel_std: tuple[float, float, float]
    model_target: str
    test_interpolation: str = "bicubic"
    weights_sha256: str = ""
    """sha256 of the tensors loaded (:func:`weights_digest`): two runs' ``last.ckpt`` differ here."""
    feature_settings: dict[str, Any] | None = None
    """The model config that shapes the feature besides the weights (``neck_feat``, ``feature``,
    ``sie_at_test``): part of :meth:`fingerprint`."""

    @property
    def camera_embed(self) -> CameraEmbedConfig | None:
        return getattr(self.task.net.backbone, "camera_embed", None)

    @property
    def uses_cameras(self) -> bool:
        return self.camera_embed is not None and self.camera_embed.uses_cameras

    @property
    def uses_views(self) -> bool:
        return self.camera_embed is not None and self.camera_embed.uses_views

    def test_transform(self) -> Any:
        """The run's test pipeline: resize (its ``data.transforms.test_interpolation``) -> tensor in [0, 1]
        -> ``(x - mean) / std``."""
        transforms = ReIDTransforms(test_interpolation=self.test_interpolation, erasing=None)
        return transforms.test(self.image_size, self.pixel_mean, self.pixel_std)

    def feature_definition(self, camera_mode: str) -> dict[str, Any]:
        """Everything that decides the feature of an image: the weights and the settings around them."""
        return {
            "weights_sha256": self.weights_sha256,
            "model": self.model_target,
            **(self.feature_settings or {}),
            **self._input_and_output(),
            "camera_mode": camera_mode,
        }

    def _input_and_output(self) -> dict[str, Any]:
        """The test transform and the feature's post-processing: part of both :meth:`feature_definition`
        and :meth:`description`."""
        return {
            "image_size": list(self.image_size),
            "pixel_mean": list(self.pixel_mean),
            "pixel_std": list(self.pixel_std),
            "interpolation": self.test_interpolation,
            "normalized": self.evaluation.normalize,
            "flip": self.evaluation.flip,
        }

    def fingerprint(self, camera_mode: str) -> str:
        """A short hash of :meth:`feature_definition`: equal fingerprints, comparable features."""
        text = json.dumps(self.feature_definition(camera_mode), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def description(self) -> dict[str, Any]:
        """What the features are, for the metadata of extracted features and exported models."""
        return {
            "weights_sha256": self.weights_sha256,
            "feature_settings": dict(self.feature_settings or {}),
            "checkpoint": str(self.files.checkpoint),
            "config": str(self.files.config),
            "model": self.model_target,
            **self._input_and_output(),
            "metric": self.evaluation.metric,
            # steps of the run's evaluation that need the query and gallery sets, not applied per image
            "not_applied": [name for name in ("aqe", "rerank") if getattr(self.evaluation, name) is not None],
            "num_cameras": self.data_info.num_cameras if self.uses_cameras else 0,
            "num_views": self.data_info.num_views if self.uses_views else 0,
        }


def _plain(value: Any) -> Any:
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def _three(values: Any, key: str) -> tuple[float, float, float]:
    """The three channel values of ``key`` (``data.pixel_mean`` / ``data.pixel_std``) of a run config."""
    channels = [float(v) for v in values]
    if len(channels) != 3:
        raise ValueError(f"{key}={channels}: expected one value per RGB channel")
    return channels[0], channels[1], channels[2]


def weights_digest(state: Mapping[str, Tensor]) -> str:
    """sha256 over the tensors of ``state`` (names, dtypes, shapes and bytes, in name order)."""
    digest = hashlib.sha256()
    for name in sorted(state):
        value = state[name].detach().cpu().contiguous()
        digest.update(f"{name}|{value.dtype}|{tuple(value.shape)}|".encode())
        digest.update(value.reshape(-1).view(torch.uint8).numpy().tobytes() if value.numel() else b"")
    return digest.hexdigest()


FEATURE_KEYS = ("neck_feat", "feature", "sie_at_test")
"""``model.*`` keys that change the retrieval feature of the same weights."""


def _tested_in_results(run_dir: Path) -> Path | None:
    """The checkpoint whose test ``results.json`` reports (``tested_weights``; ``best_checkpoint`` in runs
    made before it), looked up by file name in the run's ``checkpoints/``: the run may have been moved."""
    results = run_dir / "results.json"
    if not results.is_file():
        return None
    summary = json.loads(results.read_text())
    tested = (summary.get("tested_weights") or {}).get("checkpoint") or summary.get("best_checkpoint")
    found = run_dir / "checkpoints" / Path(tested).name if tested else None
    return found if found is not None and found.is_file() else None


def find_run_files(
    path: str | Path, checkpoint: str | Path | None = None, config: str | Path | None = None
) -> RunFiles:
    """``path``: a run folder, or a checkpoint inside one (``<run>/checkpoints/x.ckpt``), or anywhere
    with ``config`` (the run config file, instead of ``<run>/.hydra/config.yaml``).

    From a folder the checkpoint is ``checkpoint`` (a file name in ``<run>/checkpoints`` or a path), else
    the one whose test ``results.json`` reports, else ``last.ckpt``.
    """
    path = Path(path)
    if path.is_file():
        if checkpoint is not None:
            raise ValueError(
                f"{path} is a checkpoint file; a checkpoint ({checkpoint}) goes with a run folder"
            )
        run_dir = path.parent.parent if path.parent.name == "checkpoints" else path.parent
        chosen = path
    elif path.is_dir():
        run_dir = path
        if checkpoint is not None:
            named = Path(checkpoint)
            chosen = named if named.is_file() else run_dir / "checkpoints" / named
        else:
            chosen = _tested_in_results(run_dir) or run_dir / "checkpoints" / "last.ckpt"
    else:
        raise FileNotFoundError(f"{path}: no such run folder or checkpoint file")
    config = Path(config) if config is not None else run_dir / CONFIG_FILE
    if not config.is_file():
        raise FileNotFoundError(
            f"{config}: no run config; expected the folder of a `python -m reid.run` run, holding "
            f"{CONFIG_FILE} and checkpoints/*.ckpt (or the run config file: --config)"
        )
    if not chosen.is_file():
        found = sorted(p.name for p in (run_dir / "checkpoints").glob("*.ckpt"))
        raise FileNotFoundError(
            f"{chosen}: no checkpoint (found in {run_dir / 'checkpoints'}: {', '.join(found) or 'none'}); "
            "expected a run that trained at least one epoch (checkpoints/last.ckpt)"
        )
    return RunFiles(config, chosen)


def _classes(state: Mapping[str, Tensor], path: Path) -> int:
    """Identities the task was trained for: the rows of its ID classifiers (all must agree)."""
    rows = {
        int(value.shape[0])
        for key, value in state.items()
        if key.startswith("net.")
        and key.rsplit(".", 2)[-2].startswith("classifier")
        and key.endswith("weight")
    }
    if len(rows) != 1:
        what = (
            "no ID classifier (net.*classifier*.weight)"
            if not rows
            else f"classifiers of {sorted(rows)} rows"
        )
        raise ValueError(
            f"checkpoint {path} holds {what}; expected a checkpoint of a supervised TransReIDTask run"
        )
    return rows.pop()


def _cameras_and_views(
    state: Mapping[str, Tensor], sie: Mapping[str, Any] | None, path: Path, num_cameras: int | None
) -> tuple[int, int]:
    """``(num_cameras, num_views)`` that rebuild the SIE table of ``state`` (1 for a side not used)."""
    table = state.get(SIE_TABLE)
    sie = sie or {}
    camera, view = bool(sie.get("camera", False)), bool(sie.get("view", False))
    if table is None:  # no SIE, or every used side had a single value (the backbone dropped it)
        return 1, 1
    rows = int(table.shape[0])
    if camera and view:
        if num_cameras is None:
            raise ValueError(
                f"checkpoint {path}: its SIE table embeds cameras and views together ({rows} = cameras "
                "x views rows); pass the number of training cameras (--num-cameras) to split it"
            )
        if num_cameras < 1 or rows % num_cameras:
            raise ValueError(
                f"checkpoint {path}: num_cameras={num_cameras} does not divide its {rows} SIE rows"
            )
        return num_cameras, rows // num_cameras
    if camera:
        return rows, 1
    if view:
        return 1, rows
    raise ValueError(
        f"checkpoint {path} has an SIE table ({SIE_TABLE}) but its model.sie uses no side: {sie}"
    )


def data_info_from_checkpoint(
    checkpoint: Mapping[str, Any],
    path: Path,
    num_cameras: int | None = None,
    task: type[RetrievalTask] = TransReIDTask,
) -> DatasetInfo:
    """The :class:`DatasetInfo` a ``task`` of ``checkpoint`` was built with: for a supervised task from
    its tensors and hparams; for a Cluster Contrast task :data:`UNSUPERVISED_DATA_INFO`."""
    if issubclass(task, ClusterContrastTask):
        return UNSUPERVISED_DATA_INFO
    state = checkpoint["state_dict"]
    cameras, views = _cameras_and_views(
        state, checkpoint.get("hyper_parameters", {}).get("sie"), path, num_cameras
    )
    return DatasetInfo(_classes(state, path), cameras, views)


def read_checkpoint(path: Path) -> dict[str, Any]:
    """A Lightning checkpoint of a run (state dict + hyper-parameters), else an error naming ``path``."""
    checkpoint = AtomicCheckpointIO().load_checkpoint(path)
    if not isinstance(checkpoint, Mapping) or not {"state_dict", "pytorch-lightning_version"} <= set(
        checkpoint
    ):
        raise ValueError(
            f"checkpoint {path} is not a Lightning checkpoint of a run (no state_dict / trainer state); "
            "expected <run>/checkpoints/*.ckpt written by `python -m reid.run`"
        )
    return dict(checkpoint)


def read_run_config(path: Path) -> DictConfig:
    """The composed config a run saved (``.hydra/config.yaml``), without its initialisation weights file;
    a file that is no run config is an error naming it."""
    register_resolvers()
    cfg = OmegaConf.load(path)
    if not isinstance(cfg, DictConfig) or "model" not in cfg or "data" not in cfg:
        raise ValueError(f"{path}: expected the composed config of a run (with `model` and `data` nodes)")
    with open_dict(cfg):
        cfg.model.weights = None  # the initialisation file is not needed: the checkpoint holds every tensor
        _sized_terms_as_partials(cfg)
    return cfg


def _sized_terms_as_partials(cfg: DictConfig) -> None:
    """In place: a loss term whose class needs the model's sizes (``LossTerm.model_dims``: BoT's center
    term) and that a run saved without ``_partial_`` (before issue 32, the task wrote the sizes into the
    config) becomes the partial the task completes now."""
    loss = OmegaConf.select(cfg, "model.loss")
    for term in loss.values() if isinstance(loss, DictConfig) else ():
        if isinstance(term, DictConfig) and isinstance(term.get("_target_"), str) and "_partial_" not in term:
            try:
                needs_sizes = bool(getattr(get_class(term._target_), "model_dims", ()))
            except (ImportError, ValueError):
                continue  # building the task reports the bad _target_ with its own message
            if needs_sizes:
                term._partial_ = True


def run_evaluation(cfg: DictConfig) -> EvalConfig:
    """The run's :class:`EvalConfig`, its node typed by the schema first: a run saved before the schema
    gave ``eval.aqe`` / ``eval.rerank`` their ``_target_`` holds them as plain mappings."""
    node = OmegaConf.to_container(cfg.eval, resolve=True)
    assert isinstance(node, dict)  # the eval group's node is a mapping
    evaluation = instantiate(typed_node({str(key): value for key, value in node.items()}, "eval"))
    assert isinstance(evaluation, EvalConfig)  # the eval schema's _target_
    return evaluation


def task_class(cfg: DictConfig, config: Path) -> type[RetrievalTask]:
    """The class ``cfg.model._target_`` names, a :data:`RetrievalTask` (or a subclass of one), else an
    error naming the config file and the target."""
    target = cfg.model.get("_target_")
    expected = (
        "feature extraction needs a supervised reid.tasks.TransReIDTask run or a Cluster Contrast "
        "reid.tasks.cluster_contrast.ClusterContrastTask run"
    )
    try:
        found = get_class(target) if isinstance(target, str) else None
    except (ImportError, ValueError) as error:
        raise ValueError(
            f"{config}: model._target_={target!r} is not a class ({error}); {expected}"
        ) from error
    if found is None or not issubclass(found, RetrievalTask):
        raise ValueError(f"{config}: model._target_ is {target}; {expected}")
    return found


def restore_task(
    cfg: DictConfig,
    state: Mapping[str, Tensor],
    data_info: DatasetInfo,
    evaluation: EvalConfig,
    files: RunFiles,
) -> RetrievalTask:
    """The task of ``cfg.model`` (as ``reid.run`` builds it) with the tensors ``state`` of the checkpoint
    ``files.checkpoint``, in eval mode; a state of another model is an error naming both files.

    The comparison is strict: a Cluster Contrast task's memory is a non-persistent buffer (refilled from
    the centroids every epoch), so neither side's state holds it."""
    task_class(cfg, files.config)
    task = cast(RetrievalTask, build_task(cfg.model, data_info, evaluation))  # task_class checked it
    differences = state_differences(state, task.state_dict())
    if differences:
        raise ValueError(
            f"checkpoint {files.checkpoint} is not of the model in {files.config}: its tensors do not fit "
            f"({'; '.join(differences)}); use the checkpoint of that run, or the run folder it came from"
        )
    task.load_state_dict(state, strict=True)
    return task.eval()


def add_run_arguments(parser: argparse.ArgumentParser, moved_checkpoints: bool = True) -> None:
    """The arguments of :func:`load_trained_model` for a tool's command line: the ``run`` positional (add
    it before the tool's other positionals) and ``--checkpoint``; with ``moved_checkpoints`` also
    ``--config`` and ``--num-cameras``."""
    parser.add_argument("run", help="a run folder, or a checkpoint in one (<run>/checkpoints/*.ckpt)")
    parser.add_argument(
        "--checkpoint", help="checkpoint of the run folder (name or path); default: best, else last"
    )
    if moved_checkpoints:
        parser.add_argument("--config", help="run config, when the checkpoint is not in its run folder")
        parser.add_argument(
            "--num-cameras", type=int, help="only for a camera x view SIE table: training cameras"
        )


def load_trained_model(
    path: str | Path,
    checkpoint: str | Path | None = None,
    config: str | Path | None = None,
    num_cameras: int | None = None,
    device: str | torch.device = "cpu",
) -> TrainedModel:
    """The trained task of a run folder or checkpoint (see :func:`find_run_files`), in eval mode.

    ``config``: the run config to use instead of ``<run>/.hydra/config.yaml`` (a checkpoint moved out of
    its run folder); ``num_cameras``: needed only for a camera x view SIE table. A CUDA ``device`` on a
    machine without one is an error before anything is read.
    """
    device = parse_device(str(device))
    files = find_run_files(path, checkpoint, config)
    cfg = read_run_config(files.config)
    saved = read_checkpoint(files.checkpoint)
    data_info = data_info_from_checkpoint(saved, files.checkpoint, num_cameras, task_class(cfg, files.config))
    evaluation = run_evaluation(cfg)
    task = restore_task(cfg, saved["state_dict"], data_info, evaluation, files).to(device)
    size = [int(v) for v in cfg.data.image_size]
    return TrainedModel(
        task=task,
        files=files,
        data_info=data_info,
        evaluation=evaluation,
        image_size=(size[0], size[1]),
        pixel_mean=_three(cfg.data.pixel_mean, "data.pixel_mean"),
        pixel_std=_three(cfg.data.pixel_std, "data.pixel_std"),
        model_target=str(cfg.model.backbone.get("_target_", "")),
        weights_sha256=weights_digest(saved["state_dict"]),
        feature_settings={key: _plain(cfg.model.get(key)) for key in FEATURE_KEYS if key in cfg.model},
        # runs made before data.transforms existed were evaluated with a bicubic resize
        test_interpolation=str(
            OmegaConf.select(cfg, "data.transforms.test_interpolation", default="bicubic")
        ),
    )
