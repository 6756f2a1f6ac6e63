"""Re-identification heads: the BNNeck and its PASS class+parts variant.

BNNeck (Luo et al., "Bag of Tricks and a Strong Baseline for Deep Person ReID", CVPRW 2019, Sec. 3.6;
used unchanged by TransReID Sec. 3.1): for a feature ``f`` (the triplet-loss input)

    f_bn   = BatchNorm1d(f)          (bias frozen at 0: a pure scaling, so f_bn stays centred)
    logits = W f_bn                  (bias-free linear classifier, W ~ N(0, 0.001^2))

The ID loss takes ``logits``; retrieval uses ``f`` ("before") or ``f_bn`` ("after"). ``classifier``
(a ``reid.models.classifiers`` factory, default the linear one) swaps ``W f_bn`` for a margin classifier
(ArcFace, CosFace, AM-Softmax, Circle), which takes the training labels; its key is ``classifier.weight``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from reid.models.classifiers import ClassifierFactory, LinearClassifier


class NeckOutput(NamedTuple):
    neck_feat: Tensor  # [B, D] after the BNNeck
    logits: Tensor  # [B, num_classes]


def bnneck(dim: int) -> nn.BatchNorm1d:
    """BatchNorm1d with a frozen zero bias (official ``bottleneck``; ``weights_init_kaiming`` gives 1 / 0)."""
    norm = nn.BatchNorm1d(dim)
    nn.init.ones_(norm.weight)
    nn.init.zeros_(norm.bias)
    norm.bias.requires_grad_(False)
    return norm


class BNNeckHead(nn.Module):
    """``f [B, D] -> (BN(f), classifier(BN(f), labels))``. Keys: ``bottleneck.*``, ``classifier.weight``."""

    def __init__(self, in_dim: int, num_classes: int, classifier: ClassifierFactory | None = None) -> None:
        super().__init__()
        self.bottleneck = bnneck(in_dim)
        self.classifier = (LinearClassifier if classifier is None else classifier)(in_dim, num_classes)

    def neck(self, feat: Tensor) -> Tensor:
        return self.bottleneck(feat)

    def forward(self, feat: Tensor, labels: Tensor | None = None) -> NeckOutput:
        neck_feat = self.bottleneck(feat)
        return NeckOutput(neck_feat, self.classifier(neck_feat, labels))


class ClsPartsNeckHead(nn.Module):
    """PASS fine-tuning head ("multi-neck", the official default), for the feature ``cat(cls, mean(parts))``.

    Each token gets its own BNNeck, then ``f_bn = cat(BN_0(cls), (1/L) sum_i BN_i(part_i))`` and
    ``logits = W f_bn`` with ``W`` of size ``num_classes x 2D`` (or the ``classifier`` given). Input: the
    [CLS] token ``[B, D]`` and the part tokens ``[B, L, D]``. Keys: ``bottleneck.*``,
    ``part_bottlenecks.{i}.*``, ``classifier.weight``.
    """

    def __init__(
        self, dim: int, num_parts: int, num_classes: int, classifier: ClassifierFactory | None = None
    ) -> None:
        super().__init__()
        if num_parts < 1:
            raise ValueError(f"ClsPartsNeckHead: needs at least one part token, got num_parts={num_parts}")
        self.bottleneck = bnneck(dim)
        self.part_bottlenecks = nn.ModuleList(bnneck(dim) for _ in range(num_parts))
        self.classifier = (LinearClassifier if classifier is None else classifier)(2 * dim, num_classes)

    def neck(self, cls: Tensor, parts: Tensor) -> Tensor:
        if parts.shape[1] != len(self.part_bottlenecks):
            raise ValueError(
                f"ClsPartsNeckHead: expected {len(self.part_bottlenecks)} part tokens, got {parts.shape[1]}"
            )
        parts_bn = torch.stack([norm(parts[:, i]) for i, norm in enumerate(self.part_bottlenecks)], dim=1)
        return torch.cat((self.bottleneck(cls), parts_bn.mean(dim=1)), dim=1)

    def forward(self, cls: Tensor, parts: Tensor, labels: Tensor | None = None) -> NeckOutput:
        neck_feat = self.neck(cls, parts)
        return NeckOutput(neck_feat, self.classifier(neck_feat, labels))
