"""Identity (classification) loss on the BNNeck logits.

Cross-entropy with optional label smoothing (Szegedy et al., CVPR 2016), the "ID loss" of
TransReID Sec. 3.1 and BoT (Luo et al., 2019). With smoothing epsilon and K classes the target
distribution is ``q = (1 - epsilon) * onehot(y) + epsilon / K`` and::

    L = - mean_i sum_k q_ik log softmax(z_i)_k

``epsilon = 0`` (TransReID's setting, ``IF_LABELSMOOTH: off``) is plain cross-entropy.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class IDLoss(nn.Module):
    """Cross-entropy with label smoothing ``label_smoothing`` in [0, 1).

    Shapes: ``logits`` [N,K], ``labels`` [N] (long, in 0..K-1) -> scalar.
    """

    def __init__(self, label_smoothing: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"IDLoss: label_smoothing must be in [0, 1), got {label_smoothing}")
        self.label_smoothing = label_smoothing

    def forward(self, logits: Tensor, labels: Tensor) -> Tensor:
        if logits.dim() != 2:
            raise ValueError(f"IDLoss: expected logits [N,K], got shape {tuple(logits.shape)}")
        return F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing)

    def extra_repr(self) -> str:
        return f"label_smoothing={self.label_smoothing}"
