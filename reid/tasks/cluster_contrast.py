"""Unsupervised re-ID by Cluster Contrast (Dai et al. 2021), on ViTs as TransReID-SSL and PASS run it
and on ResNets as the method's own code does.

Official ``examples/cluster_contrast_train_usl.py`` (damo-cv/TransReID-SSL ``cluster-contrast-reid/``,
CASIA-IVA-Lab/PASS-reID ``PASS_cluster_contrast_reid/``, alibaba/cluster-contrast-reid). At the start of
every epoch:

1. embed the unlabelled training images (eval mode, test transform): ``f = normalize(BN(cls))`` (a CNN:
   ``normalize(BN(pool(map)))``, :class:`ClusterContrastNet`);
2. pseudo labels by ``model.clustering`` (``reid.clustering``): DBSCAN on the k-reciprocal Jaccard
   distance (the paper's, ``model/clustering=jaccard_dbscan``) or Infomap on the cosine kNN graph
   (``knn_infomap``); optionally of the features with each camera's mean removed
   (``model.clustering.camera_centering``); outliers are left out of the epoch;
3. the cluster memory starts from the L2-normalised centroids (``reid.losses.cluster_memory``);

then train ``data.iterations`` P x K batches over the pseudo labels (``reid.data.usl_datamodule``) with
ClusterNCE, the memory updated by momentum after every batch. UDA is the same run started from a model
fine-tuned on the source domain (``model.weights``; its BNNeck and classifier are not loaded, as the
official ``load_param`` skips ``bottleneck`` and ``classifier`` keys). Evaluation on query/gallery is the
supervised tasks' (``reid.tasks.retrieval_evaluation``). Logged per epoch: ``train/num_clusters``,
``train/num_outliers``; per step ``train/loss`` (= ``train/loss_cluster_nce``), ``train/lr``.

The pseudo labels and the memory are saved in every checkpoint (``checkpoint["cluster_contrast"]``), so a
run killed mid-epoch resumes on the same clusters and memory instead of re-clustering.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

import torch
import torch.distributed as dist
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from lightning.pytorch.utilities.types import OptimizerConfig
from torch import Tensor, nn

from reid.clustering import Clustering, cluster_centroids
from reid.data.records import DatasetInfo
from reid.evaluation import EvalConfig
from reid.losses.cluster_memory import ClusterMemory
from reid.models.heads import bnneck
from reid.models.pooling import GlobalAvgPool
from reid.models.weights import load_pretrained
from reid.optim import EpochSchedule, OptimizerFactory, set_epoch_lr
from reid.optim.param_groups import checked_base_lr
from reid.tasks.retrieval_evaluation import RetrievalEvaluation

Fusion = Literal["cls", "cls_parts_cat", "cls_parts_mean"]
STATE_KEY = "cluster_contrast"


class ClusterContrastNet(nn.Module):
    """``normalize(BN(feature))``: the official ``vision_transformer.py`` / ``resnet.py`` ``forward``.

    A ViT backbone (``forward_features -> [B, T, D]``, ``embed_dim``): ``feature`` ``"cls"`` the final
    [CLS] (TransReID-SSL); with PASS part tokens, the single-neck fusions of PASS-reID ``--feat-fusion``:
    ``"cls_parts_cat"`` = ``cat(cls, mean(parts))`` (2D), ``"cls_parts_mean"`` = ``(cls + mean(parts)) / 2``.

    A CNN backbone (``forward_features -> [B, C, H, W]``, ``num_features``: ``reid.models.resnet``, IBN-a,
    SNR): the feature is ``pool(map)``, as alibaba/cluster-contrast-reid ``models/resnet.py`` (last stride 1,
    pooling, BN, L2 norm, no classifier). ``pool`` defaults to average pooling (``--pooling-type avg``);
    that script's default, GeM, is ``conf/model/cluster_contrast_r50.yaml``'s.

    The BNNeck has a frozen zero bias. Keys: ``backbone.*``, ``pool.*`` (GeM's ``p``), ``neck.*`` (a
    source model's ``global_head.*`` is therefore not loaded).
    """

    backbone: Any  # a ViT (forward_features, embed_dim) or a CNN (forward_features, num_features)

    def __init__(self, backbone: nn.Module, feature: Fusion = "cls", pool: nn.Module | None = None) -> None:
        super().__init__()
        if feature not in ("cls", "cls_parts_cat", "cls_parts_mean"):
            raise ValueError(
                f"model.feature={feature!r}: expected 'cls', 'cls_parts_cat' or 'cls_parts_mean'"
            )
        self.tokens = hasattr(backbone, "embed_dim")
        if not self.tokens and not hasattr(backbone, "num_features"):
            raise TypeError(
                f"ClusterContrastNet: the backbone ({type(backbone).__name__}) needs forward_features and "
                "embed_dim (a ViT) or num_features (a CNN: reid.models.resnet)"
            )
        if self.tokens and pool is not None:
            raise ValueError("model.pool pools a CNN feature map; a ViT's feature is a token (model.feature)")
        num_parts = int(getattr(backbone, "num_parts", 0))
        if feature != "cls" and num_parts < 1:
            raise ValueError(f"model.feature={feature!r} needs part tokens (model.backbone.num_parts >= 1)")
        self.backbone, self.feature, self.num_parts = backbone, feature, num_parts
        self.embedding_dim: int
        if self.tokens:
            self.embedding_dim = int(self.backbone.embed_dim) * (2 if feature == "cls_parts_cat" else 1)
        else:
            self.pool = pool if pool is not None else GlobalAvgPool()
            self.embedding_dim = int(self.backbone.num_features)
        self.neck = bnneck(self.embedding_dim)

    def forward(self, images: Tensor) -> Tensor:
        out = self.backbone.forward_features(images)
        if not self.tokens:
            if out.ndim != 4:
                raise ValueError(
                    f"ClusterContrastNet: a CNN backbone's forward_features must return [B, C, H, W], "
                    f"got shape {tuple(out.shape)}"
                )
            return F.normalize(self.neck(self.pool(out)), dim=1)
        feat = out[:, 0]
        if self.feature != "cls":
            parts = out[:, 1 : 1 + self.num_parts].mean(dim=1)
            feat = torch.cat((feat, parts), 1) if self.feature == "cls_parts_cat" else (feat + parts) / 2
        return F.normalize(self.neck(feat), dim=1)


def _broadcast(tensor: Tensor) -> Tensor:
    """Rank 0's ``tensor`` on every rank (itself without DDP), so all ranks train on one clustering."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.broadcast(tensor, src=0)
    return tensor


class ClusterContrastTask(RetrievalEvaluation):
    """Args:
    data_info, evaluation: as for :class:`~reid.tasks.TransReIDTask` (``num_classes`` is unused).
    backbone: a ViT factory (a partial of ``reid.models.vit.vit_small``) or a CNN one
        (``reid.models.resnet.resnet50``, ``reid.models.snr.snr_resnet``), called with no arguments.
    clustering: a :class:`~reid.clustering.Clustering` (``conf/model/clustering``:
        :class:`~reid.clustering.JaccardDBSCAN`, :class:`~reid.clustering.KnnInfomap`).
    memory: the :class:`~reid.losses.cluster_memory.ClusterMemory` (temperature, momentum, update).
    optimizer: an optimiser factory; every trainable parameter in one group at its ``lr`` and
        ``weight_decay`` (official: SGD 3.5e-4, momentum 0.9, weight decay 5e-4).
    schedule: an epoch schedule (``reid.optim.epoch_schedules``; official: ``StepDecayLR``, x0.1 every 20
        epochs, stepped after each epoch), or None.
    feature: see :class:`ClusterContrastNet`.
    pool: a CNN's global pooling module (``reid.models.pooling``); None = average pooling.
    weights, weights_grid, weights_strict: as for :class:`~reid.tasks.TransReIDTask`.
    """

    def __init__(
        self,
        data_info: DatasetInfo,
        evaluation: EvalConfig,
        backbone: Callable[[], nn.Module],
        clustering: Clustering,
        memory: ClusterMemory,
        optimizer: OptimizerFactory,
        schedule: EpochSchedule | None = None,
        feature: Fusion = "cls",
        pool: nn.Module | None = None,
        weights: str | None = None,
        weights_grid: Sequence[int] | None = None,
        weights_strict: bool = True,
    ) -> None:
        super().__init__()
        self.data_info, self.evaluation = data_info, evaluation
        self.sie_at_test = False  # no side information: the evaluation embeds images alone
        self.net = ClusterContrastNet(backbone(), feature, pool)
        self.clustering = clustering
        self.memory = memory
        self.optimizer_factory = optimizer
        checked_base_lr(self.optimizer_factory)  # a bad model.optimizer.lr fails here, before data is read
        self.schedule = schedule
        self.pseudo_labels: Tensor | None = None  # [N] long, CPU: this epoch's labels (-1 = outlier)
        self.clustered_epoch = -1  # the epoch ``pseudo_labels`` and the memory were made for
        self.evaluators, self.evaluation_names = [], []
        if weights is not None:
            if not str(weights).strip():
                raise ValueError(f"model.weights={weights!r} names no file: set null or a checkpoint path")
            grid = list(weights_grid) if weights_grid is not None else None
            report = load_pretrained(self.net, weights, old_grid=grid, strict=weights_strict)
            (rank_zero_warn if report.partial else rank_zero_info)(report.summary())

    def forward(self, images: Tensor, camids: Tensor | None = None, viewids: Tensor | None = None) -> Tensor:
        """Retrieval embedding ``[B, D]`` (eval mode), flip-averaged with ``evaluation.flip``; no cameras."""
        embedding = self.net(images)
        if self.evaluation.flip:
            embedding = (embedding + self.net(torch.flip(images, dims=[3]))) / 2
        return embedding

    # ---- pseudo labels --------------------------------------------------------------------
    def _datamodule(self) -> Any:
        """The trainer's datamodule (attached at run time): ``reid.data.usl_datamodule.USLDataModule``."""
        return getattr(self.trainer, "datamodule", None)

    def _labels(self) -> Tensor:
        """This epoch's pseudo labels, set by :meth:`recluster` or a checkpoint before training uses them."""
        if self.pseudo_labels is None:
            raise RuntimeError(
                "ClusterContrastTask: no pseudo labels yet (recluster() runs at each epoch start)"
            )
        return self.pseudo_labels

    @torch.no_grad()
    def training_features(self) -> Tensor:
        """``[N, D]`` features of the unlabelled training images in dataset order (eval mode, CPU float32)."""
        datamodule = self._datamodule()
        if not callable(getattr(datamodule, "cluster_dataloader", None)):
            raise TypeError(
                "ClusterContrastTask: needs the unlabelled datamodule (data=usl_market1501, usl_msmt17, "
                f"usl_synthetic_tiny: reid.data.usl_datamodule), got {type(datamodule).__name__}"
            )
        loader = datamodule.cluster_dataloader()
        was_training = self.net.training
        self.net.eval()
        features = torch.zeros(len(loader.dataset), self.net.embedding_dim)
        with self.trainer.precision_plugin.forward_context():
            for batch in loader:
                features[batch["index"]] = self.net(batch["image"].to(self.device)).float().cpu()
        self.net.train(was_training)
        return features

    def recluster(self) -> None:
        """Pseudo labels and memory for the current epoch from the current model (module docstring)."""
        features = self.training_features()
        camids = torch.tensor([record.camid for record in self._datamodule().train_records])
        found = self.clustering(features, camids)
        labels = _broadcast(torch.from_numpy(found.labels).to(self.device)).cpu()
        if int(labels.max()) < 0:
            raise ValueError(
                f"no cluster among {labels.numel()} training images, all outliers: "
                f"{self.clustering.no_cluster_advice()}"
            )
        centroids = cluster_centroids(features, labels)
        self.memory.reset(centroids)
        self.memory.features = _broadcast(self.memory.features)
        self.pseudo_labels, self.clustered_epoch = labels, self.current_epoch

    def on_train_start(self) -> None:
        """A run resumed mid-epoch starts without ``on_train_epoch_start`` (Lightning skips it): the
        checkpoint's pseudo labels go to the sampler here, and the epoch's lr to the optimiser."""
        self._set_epoch_lr()
        if self.pseudo_labels is not None:
            self._datamodule().set_pseudo_labels(self.pseudo_labels.numpy())

    def on_train_epoch_start(self) -> None:
        self._set_epoch_lr()
        if self.clustered_epoch != self.current_epoch or self.pseudo_labels is None:
            self.recluster()
        self._datamodule().set_pseudo_labels(self._labels().numpy())
        outliers = int((self._labels() < 0).sum())
        self.log("train/num_clusters", float(self.memory.num_clusters), on_epoch=True, batch_size=1)
        self.log("train/num_outliers", float(outliers), on_epoch=True, batch_size=1)

    # ---- training -------------------------------------------------------------------------
    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        labels = self._labels().to(self.device)[batch["index"]]
        loss = self.memory(self.net(batch["image"]), labels)
        size = batch["image"].shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=size)
        self.log("train/loss_cluster_nce", loss, batch_size=size)
        self.log("train/lr", float(self.trainer.optimizers[0].param_groups[0]["lr"]), batch_size=size)
        return loss

    def configure_optimizers(self) -> OptimizerConfig:
        params = [p for p in self.net.parameters() if p.requires_grad]
        return {"optimizer": self.optimizer_factory([{"params": params, "lr_factor": 1.0}])}

    def _set_epoch_lr(self) -> None:
        if self.schedule is not None:
            base_lr = checked_base_lr(self.optimizer_factory)
            optimizer = self.trainer.optimizers[0]
            set_epoch_lr(optimizer, self.schedule, self.current_epoch, base_lr, self.trainer.max_epochs)

    # ---- checkpoints ----------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.pseudo_labels is not None:
            checkpoint[STATE_KEY] = {
                "epoch": self.clustered_epoch,
                "pseudo_labels": self.pseudo_labels.clone(),
                "memory": self.memory.features.detach().cpu().clone(),
            }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get(STATE_KEY)
        if state is None:
            return
        missing = {"epoch", "pseudo_labels", "memory"} - set(state)
        if missing:
            raise KeyError(
                f"checkpoint[{STATE_KEY!r}] lacks {sorted(missing)}: not a Cluster Contrast checkpoint"
            )
        self.clustered_epoch = int(state["epoch"])
        self.pseudo_labels = state["pseudo_labels"].long().cpu()
        self.memory.features = state["memory"].float().to(self.memory.features.device)
