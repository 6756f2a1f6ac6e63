"""The supervised re-ID task: TransReID (He et al., ICCV 2021), its ViT baseline, the CNN BoT baseline.

``ReIDNet`` (backbone -> global/JPM branches -> BNNeck heads), or the net that ``model.net`` names
(e.g. ``CNNReIDNet``: ResNet -> pooling -> BNNeck, BoT), is trained with the ID + triplet
objective summed over branches (``reid.losses.Objective``: named, weighted terms); validation embeds query and
gallery images and ranks them with ``reid.evaluation.ReIDEvaluator``. Optimiser, parameter
groups are built here from the ``_partial_`` configs; the lr schedule (``reid.optim.epoch_schedules``)
sets every group's lr at the start of each epoch.

Built by :func:`reid.tasks.from_config.build_task` from ``conf/model``: every argument arrives built, the
parts that need the data or the net as partials the task completes (the backbone is called with the
data's camera/view counts, the net with the identity count, loss terms with the net's sizes).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from lightning.pytorch.utilities.types import OptimizerConfig
from torch import Tensor, nn

from reid.data.records import DatasetInfo
from reid.evaluation import EvalConfig, ReIDEvaluator
from reid.losses import Objective, ObjectiveInput, TermOptimizers
from reid.models.jpm import JPMConfig
from reid.models.reid_net import GlobalFeature, NeckFeat, ReIDModelOutput, ReIDNet
from reid.models.sie import SIEConfig
from reid.models.weights import load_pretrained
from reid.optim import EpochSchedule, OptimizerFactory, ParamGroupConfig, build_param_groups, set_epoch_lr
from reid.optim.param_groups import checked_base_lr
from reid.tasks.retrieval_evaluation import RetrievalEvaluation


def _is_classifier(key: str) -> bool:
    """An ID classifier weight of a head (``...classifier.weight``, ``...classifier_1.weight``), or a loss
    term's tensor (``objective.*``: BoT's per-identity centres), both training-only."""
    return key.startswith("objective.") or key.rsplit(".", 2)[-2].startswith("classifier")


class TransReIDTask(RetrievalEvaluation):
    """Args:
    data_info: classes / cameras / views of the training data.
    evaluation: how retrieval is scored (metric, normalisation, flip, AQE, re-ranking).
    backbone: a backbone factory (``functools.partial`` of ``reid.models.vit.vit_base``,
        ``reid.models.resnet.resnet50``, ...), called with ``camera_embed=`` (``None`` unless ``sie`` is on).
    sie: which side information is embedded (:class:`~reid.models.sie.SIEConfig`: camera, view,
        coefficient, init_std), or ``None``.
    jpm: :class:`~reid.models.jpm.JPMConfig` (shift, groups, num_local) or ``None`` (no jigsaw branches).
    neck_feat: ``"before"`` | ``"after"`` the BNNeck for the retrieval feature.
    feature: ``"cls"`` | ``"cls_parts"`` (PASS fine-tuning).
    loss: an :class:`~reid.losses.Objective` (its terms by name; parameters of terms are trained; a term
        given as a partial is completed with the model's sizes, :meth:`~reid.losses.Objective.bind_model`).
    optimizer: an optimiser factory (``functools.partial(torch.optim.SGD, lr=..., ...)``) whose ``lr`` /
        ``weight_decay`` are the base values; called with the parameter groups.
    param_groups: :class:`ParamGroupConfig`, or None: its defaults.
    schedule: an epoch schedule (``reid.optim.epoch_schedules``: ``TimmCosineLR`` for the TransReID
        family, ``WarmupMultiStepLR`` for BoT), or None: the optimiser's lr throughout.
    weights: path of a checkpoint to initialise from (see ``reid.models.weights``), or None.
    weights_grid: ``[rows, cols]`` of the checkpoint's patch position grid (TransReID-SSL's
        ``PRETRAIN_HW_RATIO``), or None: the grid recorded in the checkpoint, else the one the
        position count allows (``reid.models.position.checkpoint_grid``), else an error. ViT only.
    weights_strict: a ``weights`` file that fills less than the backbone is an error (``False``: the
        matching tensors are loaded, the rest keeps its initialisation, with a warning).
    net: a factory of the network (a partial of its class), called as ``net(backbone, num_classes, jpm=...,
        neck_feat=..., feature=..., classifier=...)``; ``None`` means :class:`ReIDNet` (ViT backbones). CNN
        backbones take ``reid.models.cnn_reid_net.CNNReIDNet``, which refuses JPM and part features.
    classifier: a factory of the ID classifier of every head (a partial of a ``reid.models.classifiers``
        class, e.g. ``functools.partial(ArcFace, scale=30, margin=0.5)``; ``conf/model/classifier``), called
        per head with ``(in_dim, num_classes)``, or ``None``: the linear one. The training labels reach it
        through ``net(..., labels)``.
    sie_at_test: give SIE the query/gallery images' camera (and view) ids at evaluation (official);
        ``False`` evaluates in the camera-free mode (mean embedding, ``reid.models.sie``), as a
        deployed model must when an image's camera is unknown.
    """

    def __init__(
        self,
        data_info: DatasetInfo,
        evaluation: EvalConfig,
        backbone: Callable[..., nn.Module],
        loss: Objective,
        optimizer: OptimizerFactory,
        sie: SIEConfig | None = None,
        jpm: JPMConfig | None = None,
        neck_feat: NeckFeat = "before",
        feature: GlobalFeature = "cls",
        param_groups: ParamGroupConfig | None = None,
        schedule: EpochSchedule | None = None,
        weights: str | None = None,
        net: Callable[..., nn.Module] | None = None,
        sie_at_test: bool = True,
        weights_grid: Sequence[int] | None = None,
        weights_strict: bool = True,
        classifier: Callable[[int, int], nn.Module] | None = None,
    ) -> None:
        super().__init__()
        self.weights_grid = list(weights_grid) if weights_grid is not None else None
        self.weights_strict = bool(weights_strict)
        self.data_info = data_info
        self.sie_at_test = sie_at_test
        self.evaluation = evaluation
        camera_embed = sie.camera_embed(data_info.num_cameras, data_info.num_views) if sie else None
        build_net: Callable[..., Any] = net if net is not None else ReIDNet  # ReIDNet, CNNReIDNet
        self.net = build_net(
            backbone(camera_embed=camera_embed),
            data_info.num_classes,
            jpm=jpm,
            neck_feat=neck_feat,
            feature=feature,
            classifier=classifier,
        )
        self.objective = loss.bind_model(num_classes=data_info.num_classes, feat_dim=self.net.embedding_dim)
        self.term_optimizers = TermOptimizers(self.objective)  # terms with their own optimiser (BoT centres)
        self.optimizer_factory = optimizer
        checked_base_lr(self.optimizer_factory)  # a bad model.optimizer.lr fails here, before data is read
        self.param_group_config = param_groups if param_groups is not None else ParamGroupConfig()
        self.schedule = schedule
        self.evaluators: list[ReIDEvaluator] = []  # one per evaluation dataloader, during evaluation
        self.evaluation_names: list[str] = []
        if weights is not None:
            self.load_weights(weights)

    def load_weights(self, path: str) -> None:
        """Initialise ``self.net`` from a checkpoint file (its position grid: ``weights_grid`` or the
        file's record); logs what was missing, unexpected, resized or re-initialised (a classifier
        trained on other identities), and warns on a partial load (``weights_strict=False``)."""
        if not str(path).strip():
            raise ValueError(
                f"model.weights={path!r} names no file: set model.weights=null to start from random "
                "initialisation, or the path of a checkpoint"
            )
        report = load_pretrained(self.net, path, old_grid=self.weights_grid, strict=self.weights_strict)
        (rank_zero_warn if report.partial else rank_zero_info)(report.summary())

    def load_for_evaluation(self, checkpoint: Mapping[str, Any], path: str) -> list[str]:
        """Test-only: load a run's checkpoint without its ID classifiers when they were trained for another
        number of identities (evaluation ranks neck features; the classifier never runs). Any other
        difference is an error naming the file. Returns the classifier keys left out."""
        saved, own = checkpoint["state_dict"], self.state_dict()
        dropped = [
            key
            for key, value in saved.items()
            if key in own and _is_classifier(key) and tuple(value.shape) != tuple(own[key].shape)
        ]
        state = {key: value for key, value in saved.items() if key not in dropped}
        try:
            missing, unexpected = self.load_state_dict(state, strict=False)
        except RuntimeError as error:
            raise ValueError(f"ckpt_path={path} does not fit this model: {error}") from error
        missing = [key for key in missing if key not in dropped]
        if missing or unexpected:
            raise ValueError(
                f"ckpt_path={path} does not fit this model: {len(missing)} missing, {len(unexpected)} "
                f"unexpected tensors (e.g. {(missing + list(unexpected))[0]}); evaluate it with its own "
                "model config"
            )
        if dropped:
            shapes = f"{saved[dropped[0]].shape[0]} identities vs {own[dropped[0]].shape[0]} here"
            rank_zero_info(
                f"evaluating {path} without its ID classifier ({', '.join(dropped)}: {shapes}); the "
                "ranking uses the neck features only, so test-only evaluation on another dataset is exact"
            )
        return dropped

    def forward(self, images: Tensor, camids: Tensor | None = None, viewids: Tensor | None = None) -> Tensor:
        """Retrieval embedding [B, D] (eval mode), flip-averaged when ``evaluation.flip``."""
        embedding = self.net(images, camids, viewids).embedding
        if self.evaluation.flip:
            flipped = self.net(torch.flip(images, dims=[3]), camids, viewids).embedding
            embedding = (embedding + flipped) / 2
        return embedding

    # ---- training -------------------------------------------------------------------------
    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        out: ReIDModelOutput = self.net(batch["image"], batch["camid"], batch["viewid"], batch["pid"])
        inputs = ObjectiveInput(
            out.feats,
            out.logits,
            batch["pid"],
            self.net.branch_weights,
            batch["camid"],
            aux=out.aux,
            step=self.global_step,
        )
        losses = self.objective(inputs)
        acc = (out.logits[0].argmax(dim=1) == batch["pid"]).float().mean()
        size = batch["image"].shape[0]
        self.log("train/loss", losses.total, prog_bar=True, batch_size=size)
        for name, value in losses.terms.items():
            self.log(f"train/loss_{name}", value, batch_size=size)
        for name, value in losses.stats.items():
            self.log(f"train/{name}", value, batch_size=size)
        self.log("train/acc", acc, prog_bar=True, batch_size=size)
        self.log("train/lr", self._base_group_lr(), batch_size=size)
        return losses.total

    def _base_group_lr(self) -> float:
        if self._trainer is None or not self.trainer.optimizers:
            return math.nan
        groups = self.trainer.optimizers[0].param_groups
        base = [g for g in groups if g.get("lr_factor", 1.0) == 1.0] or groups
        return float(base[0]["lr"])

    def configure_optimizers(self) -> OptimizerConfig:
        base_lr = checked_base_lr(self.optimizer_factory)
        weight_decay = float(getattr(self.optimizer_factory, "keywords", {}).get("weight_decay", 0.0))
        groups = build_param_groups(self.net, base_lr, weight_decay, self.param_group_config)
        groups += self.objective.param_groups(base_lr)
        optimizer = self.optimizer_factory(groups)
        self.term_optimizers.build()
        return {"optimizer": optimizer}

    def on_train_start(self) -> None:
        self._set_epoch_lr()  # a run resumed mid-epoch gets no on_train_epoch_start for that epoch

    def on_train_epoch_start(self) -> None:
        self._set_epoch_lr()

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        if getattr(self.schedule, "per_step", False):  # fractional epochs (reid.optim.epoch_schedules)
            self._set_epoch_lr(batch_idx / max(1, self.trainer.num_training_batches))

    def _set_epoch_lr(self, progress: float = 0.0) -> None:
        if self.schedule is not None:
            base_lr = checked_base_lr(self.optimizer_factory)
            optimizer, epoch = self.trainer.optimizers[0], self.current_epoch + progress
            set_epoch_lr(optimizer, self.schedule, epoch, base_lr, self.trainer.max_epochs)

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        scaler = getattr(self.trainer.precision_plugin, "scaler", None)  # fp16: grads still scaled here
        self.term_optimizers.step(loss_scale=scaler.get_scale() if scaler is not None else 1.0)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.term_optimizers.save(checkpoint)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.term_optimizers.load(checkpoint)
