"""Center loss (Wen et al., "A Discriminative Feature Learning Approach for Deep Face Recognition",
ECCV 2016, Eq. 2) as BoT trains it (Luo et al., "A Strong Baseline and Batch Normalization Neck for Deep
Person Re-identification", TMM 2019, Sec. III-F; official michuanhaohao/reid-strong-baseline
``layers/center_loss.py``, ``layers/__init__.py`` ``make_loss_with_center``, ``solver/build.py``
``make_optimizer_with_center``, ``engine/trainer.py`` ``create_supervised_trainer_with_center``).

Each identity ``j`` has a learned centre ``c_j`` (``randn(num_classes, feat_dim)``); the loss pulls a
feature towards the centre of its class. The papers write ``L_C = 1/2 sum_i ||f_i - c_{y_i}||^2``; the
official code, which the published numbers come from, computes over a batch of ``B``

    D_ij = ||f_i||^2 + ||c_j||^2 - 2 f_i . c_j                 (squared distances, [B, num_classes])
    L_C  = (1/B) sum_ij clamp(D_ij * [y_i = j], 1e-12, 1e12)

on the global feature before the BNNeck (the triplet input), with weight ``CENTER_LOSS_WEIGHT`` 0.0005
in ``L = L_ID + L_Tri + 0.0005 L_C``. The clamp turns each of the ``B (num_classes - 1)`` masked zeros
into 1e-12, adding the constant ``(num_classes - 1) * 1e-12`` (7.5e-10 for Market's 751 ids) with no
gradient: it changes neither the training nor a logged value at float32 resolution, and is kept so the
value is the official one.

The centres are not trained by the model's optimiser: ``SGD(lr=CENTER_LR 0.5)`` (no momentum, no weight
decay, no schedule) steps them after the gradients of the weighted total are multiplied by
``1 / CENTER_LOSS_WEIGHT``, so they move by ``-0.5 * dL_C/dc`` whatever the loss weight
(:class:`CenterTerm`, :mod:`reid.losses.term_optimizers`).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from reid.losses.objective import LossTerm, ObjectiveInput
from reid.optim import OptimizerFactory


class CenterLoss(nn.Module):
    """``L_C = (1/B) sum_ij clamp(D_ij [y_i = j], 1e-12, 1e12)`` (module docstring), tensors in, scalar out.

    Args:
        num_classes: identities (rows of ``centers``).
        feat_dim: feature width (columns of ``centers``).

    ``forward(feats [B, feat_dim], labels [B]) -> []``. Computed in (at least) float32 with autocast off:
    the expanded distance cancels ``||f||^2 + ||c||^2`` against ``2 f.c`` (thousands, for 2048-d ResNet
    features), which half precision cannot resolve. The lower clamp also floors the round-off negatives
    of that cancellation at 1e-12.
    """

    def __init__(self, num_classes: int, feat_dim: int) -> None:
        super().__init__()
        if num_classes < 1 or feat_dim < 1:
            raise ValueError(
                f"CenterLoss: need num_classes >= 1 and feat_dim >= 1, got {num_classes}, {feat_dim}"
            )
        self.num_classes, self.feat_dim = int(num_classes), int(feat_dim)
        self.centers = nn.Parameter(torch.randn(self.num_classes, self.feat_dim))

    def forward(self, feats: Tensor, labels: Tensor) -> Tensor:
        if feats.ndim != 2 or feats.shape[1] != self.feat_dim or labels.shape != feats.shape[:1]:
            raise ValueError(
                f"CenterLoss: expected features [B, {self.feat_dim}] and labels [B], got "
                f"{tuple(feats.shape)} and {tuple(labels.shape)}"
            )
        dtype = torch.promote_types(torch.promote_types(feats.dtype, self.centers.dtype), torch.float32)
        with torch.autocast(feats.device.type, enabled=False):
            feats, centers = feats.to(dtype), self.centers.to(dtype)
            norms = feats.pow(2).sum(dim=1, keepdim=True) + centers.pow(2).sum(dim=1)[None]
            distances = torch.addmm(norms, feats, centers.t(), beta=1.0, alpha=-2.0)
            classes = torch.arange(self.num_classes, device=labels.device)
            mask = (labels[:, None] == classes[None]).float()
            return (distances * mask).clamp(min=1e-12, max=1e12).sum() / feats.shape[0]


class CenterTerm(LossTerm):
    """The center loss on the global feature ``feats[0]`` before the BNNeck, as an objective term.

    Args:
        num_classes, feat_dim: filled by the task from the data and the net (``model_dims``: the config
            gives the term as a partial, see :meth:`~reid.losses.objective.Objective.bind_model`): the
            training identities and the net's
            ``embedding_dim``, the global feature's width for single-branch nets (BoT's ``CNNReIDNet``, a
            ViT without JPM; a JPM net is refused at the first step). A value set in the config must agree.
        weight: ``CENTER_LOSS_WEIGHT`` (0.0005).
        optimizer: ``_partial_`` optimiser of the centres (BoT: ``torch.optim.SGD`` with ``lr``
            ``CENTER_LR`` 0.5); ``None`` trains them in a group of the task's optimiser instead.
        unweighted_grad: step the centres on ``dL_C/dc`` (the official ``param.grad *= 1 /
            CENTER_LOSS_WEIGHT``) rather than on ``weight * dL_C/dc``; only with ``optimizer``.
    """

    model_dims = ("num_classes", "feat_dim")

    def __init__(
        self,
        num_classes: int,
        feat_dim: int,
        weight: float = 0.0005,
        optimizer: OptimizerFactory | None = None,
        unweighted_grad: bool = True,
    ) -> None:
        super().__init__(weight, optimizer=optimizer)
        if unweighted_grad and optimizer is not None and self.weight <= 0:
            raise ValueError(
                f"CenterTerm: unweighted_grad divides the centres' gradients by the weight, got weight="
                f"{weight}; use a positive weight or unweighted_grad=false"
            )
        self.loss = CenterLoss(num_classes, feat_dim)
        self.unweighted_grad = bool(unweighted_grad)

    def own_grad_scale(self) -> float:
        return 1.0 / self.weight if self.unweighted_grad else 1.0

    def forward(self, inputs: ObjectiveInput) -> Tensor:
        feats = inputs.feats[0]
        if feats.ndim != 2 or feats.shape[1] != self.loss.feat_dim:
            raise ValueError(
                f"CenterTerm: the global feature is {tuple(feats.shape)} but the centres are "
                f"{self.loss.feat_dim}-d: feat_dim is the net's embedding_dim, the global feature's width "
                "only for single-branch nets (BoT's CNNReIDNet, a ViT without JPM); set model.jpm=null or "
                "model.loss.center=null"
            )
        return self.loss(feats, inputs.labels)
