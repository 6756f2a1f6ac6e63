"""The CNN re-identification network of BoT: backbone -> global pooling -> BNNeck.

BoT (Luo et al., "Bag of Tricks and a Strong Baseline for Deep Person Re-identification", CVPRW 2019;
TMM 2019; official ``modeling/baseline.py``): for an image ``x``

    f      = pool(ResNet(x))            [B, C]  (average pooling; GeM optional, ``pooling.py``)
    f_bn   = BN(f)                      (BNNeck, bias frozen at 0)
    logits = W f_bn                     (bias-free ID classifier; or a margin classifier, ``classifier``)

the triplet loss takes ``f``, the ID loss ``logits``; retrieval uses ``f_bn`` (official
``TEST.NECK_FEAT 'after'``) or ``f`` ("before"). One branch, so the loss weight is ``(1.0,)``.

Outputs and attributes match :class:`reid.models.reid_net.ReIDNet` (``ReIDModelOutput``,
``branch_weights``, ``embedding_dim``, ``no_weight_decay``), so ``TransReIDTask`` trains and evaluates
it unchanged; the task builds it from ``model.net`` (``conf/model/bot_r50.yaml``). Key names:
``backbone.*``, ``pool.*`` (GeM's ``p``), ``global_head.*``.

Auxiliary outputs (``ReIDModelOutput.aux``, training mode only): a backbone with
``forward_stages(images) -> (feature_map, aux)`` (``reid.models.snr.SNRResNet``: the pooled SNR stage
features ``snr.layer{k}.{normalized,enhanced,contaminated}`` [B, C_k]) passes its named tensors on for
loss terms; for any other backbone, and in eval mode, ``aux`` is empty and ``forward_features`` runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from torch import Tensor, nn

from reid.models.classifiers import ClassifierFactory
from reid.models.heads import BNNeckHead
from reid.models.jpm import JPMConfig
from reid.models.pooling import GlobalAvgPool
from reid.models.reid_net import NeckFeat, ReIDModelOutput


class CNNReIDNet(nn.Module):
    """Args:
    backbone: a module with ``forward_features(images) -> [B, C, H, W]`` and ``num_features = C``
        (``reid.models.resnet``).
    num_classes: training identities.
    pool: ``[B, C, H, W] -> [B, C]`` (default :class:`GlobalAvgPool`).
    neck_feat: ``"after"`` (BoT) | ``"before"`` the BNNeck for the retrieval feature.
    jpm, feature: only the ViT defaults (``None``, ``"cls"``) are accepted; the task passes the same
        arguments to every net, and JPM / PASS part tokens need a ViT.
    classifier: the ID classifier factory (``reid.models.classifiers``); ``None``: the linear one.
    """

    backbone: Any  # an nn.Module with forward_features, num_features, no_weight_decay (checked in __init__)

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int,
        pool: nn.Module | None = None,
        neck_feat: NeckFeat = "after",
        jpm: JPMConfig | None = None,
        feature: str = "cls",
        classifier: ClassifierFactory | None = None,
    ) -> None:
        super().__init__()
        if jpm:
            raise ValueError(
                "CNNReIDNet: JPM (model.jpm) shuffles ViT patch tokens and does not apply to a CNN "
                "backbone; set model.jpm=null"
            )
        if feature != "cls":
            raise ValueError(
                f"CNNReIDNet: feature={feature!r} needs a ViT with part tokens; use model.feature=cls"
            )
        if neck_feat not in ("before", "after"):
            raise ValueError(f"CNNReIDNet: neck_feat must be 'before' or 'after', got {neck_feat!r}")
        if not hasattr(backbone, "num_features") or not hasattr(backbone, "forward_features"):
            raise TypeError(
                f"CNNReIDNet: the backbone ({type(backbone).__name__}) needs forward_features and "
                "num_features (see reid.models.resnet)"
            )
        self.backbone = backbone
        self.pool = pool if pool is not None else GlobalAvgPool()
        self.neck_feat = neck_feat
        self.global_head = BNNeckHead(int(self.backbone.num_features), num_classes, classifier)

    @property
    def branch_weights(self) -> tuple[float, ...]:
        """One global branch: ``(1.0,)``."""
        return (1.0,)

    @property
    def embedding_dim(self) -> int:
        return int(self.backbone.num_features)

    def no_weight_decay(self) -> set[str]:
        return {f"backbone.{name}" for name in self.backbone.no_weight_decay()}

    def _pool(self, feature_map: Tensor) -> Tensor:
        if feature_map.ndim != 4:
            raise ValueError(
                f"CNNReIDNet: the backbone's forward_features must return [B, C, H, W], got shape "
                f"{tuple(feature_map.shape)}"
            )
        return self.pool(feature_map)

    def pooled_features(self, images: Tensor) -> Tensor:
        """The global feature ``f`` ``[B, C]`` (triplet input)."""
        return self._pool(self.backbone.forward_features(images))

    def forward(
        self,
        images: Tensor,
        camids: Tensor | None = None,
        viewids: Tensor | None = None,
        labels: Tensor | None = None,
    ) -> ReIDModelOutput:
        """``camids`` / ``viewids`` are accepted for the task's common call and unused (no SIE);
        ``labels`` [B] go to a margin classifier in training."""
        aux: Mapping[str, Tensor] = MappingProxyType({})
        if self.training and hasattr(self.backbone, "forward_stages"):
            feature_map, stage_aux = self.backbone.forward_stages(images)
            feat, aux = self._pool(feature_map), MappingProxyType(dict(stage_aux))
        else:
            feat = self.pooled_features(images)
        logits: tuple[Tensor, ...] = ()
        embedding = feat
        if self.training:
            head = self.global_head(feat, labels)
            logits = (head.logits,)
            if self.neck_feat == "after":
                embedding = head.neck_feat
        elif self.neck_feat == "after":  # no classifier at test time
            embedding = self.global_head.neck(feat)
        return ReIDModelOutput((feat,), logits, embedding, aux)
