"""The deployed retrieval feature of a trained task: what evaluation ranks, as one module.

    f(x) = n(task(x, c))          task: the neck feature, averaged with the mirrored image's when
                                  ``eval.flip`` (``TransReIDTask.forward``; ``ClusterContrastTask.forward``,
                                  whose feature ``normalize(BN(feature))`` is unit length before the flip)
                                  n: L2 normalisation ``f / max(||f||, 1e-12)`` when ``eval.normalize``,
                                  as the evaluator applies before distances (``reid.evaluation.pipeline``)

``c`` (camera ids, and view ids for a view SIE table) is optional: without it an SIE model embeds in
its camera-free mode, the mean of the SIE table over the missing side (``reid.models.sie``); a model
without SIE (Cluster Contrast included) ignores it. Feature extraction and the ONNX export both run this
module, so the two give the same numbers.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from reid.inference.trained_model import RetrievalTask


class FeatureExtractor(nn.Module):
    """``forward(images [B, 3, H, W], camids [B] | None, viewids [B] | None) -> features [B, D]``."""

    def __init__(self, task: RetrievalTask, normalize: bool) -> None:
        super().__init__()
        self.task = task
        self.normalize = bool(normalize)

    def forward(self, images: Tensor, camids: Tensor | None = None, viewids: Tensor | None = None) -> Tensor:
        features = self.task(images, camids, viewids)
        return F.normalize(features, dim=1) if self.normalize else features
