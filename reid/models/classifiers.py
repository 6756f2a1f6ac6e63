"""Identity classifiers of the BNNeck feature: the plain linear one and the margin-based (cosine) ones.

Every classifier is built as ``classifier(in_dim, num_classes)`` (a :data:`ClassifierFactory`: the class,
or a Hydra ``_partial_`` of it with ``scale`` / ``margin`` bound, ``conf/model/classifier/*.yaml``) and
called as ``classifier(features [B, D], labels [B] | None) -> logits [B, C]`` for cross-entropy
(``reid.losses.IDLoss``). TransReID lets the ID loss use one of them (``MODEL.ID_LOSS_TYPE: softmax |
arcface | cosface | amsoftmax | circle``; heshuting555/TransReID ``model/make_model.py``, the classes in
``loss/metric_learning.py``, where ``make_model`` passes ``SOLVER.COSINE_SCALE 30`` and
``SOLVER.COSINE_MARGIN 0.5`` to each); fast-reid's strong baselines use CircleSoftmax (JDAI-CV/fast-reid
``fastreid/layers/any_softmax.py``, ``configs/Base-SBS.yml``: scale 64, margin 0.35).

The margin classifiers compare the L2-normalised feature with L2-normalised class weights,
``cos theta_j = <f / |f|, W_j / |W_j|>``, and change the logits only where the label is known: the
margin needs the label, so it exists at training time only. Without labels they return the scaled
cosine ``s cos theta`` (the logits with no margin, fast-reid's ``pred_class_logits``); retrieval never
calls a classifier (it ranks the neck feature). The class weights are ``weight`` ``[C, D]`` in every
classifier, so a head's key stays ``...classifier.weight`` (official TransReID checkpoints load).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ClassifierFactory = Callable[[int, int], nn.Module]
"""``(in_dim, num_classes) -> module`` whose ``forward(features, labels=None)`` returns logits."""


def _check_sizes(name: str, in_dim: int, num_classes: int) -> None:
    if num_classes < 1:
        raise ValueError(f"{name}: num_classes must be >= 1, got {num_classes}")
    if in_dim < 1:
        raise ValueError(f"{name}: in_dim (the feature width) must be >= 1, got {in_dim}")


def _check_labels(name: str, features: Tensor, labels: Tensor) -> None:
    if labels.ndim != 1 or labels.shape[0] != features.shape[0]:
        raise ValueError(
            f"{name}: labels must be [B] for features [B, D], got labels {tuple(labels.shape)} and "
            f"features {tuple(features.shape)}"
        )


class LinearClassifier(nn.Linear):
    """Bias-free linear ID classifier ``logits = W f`` (BoT Sec. 3.6, TransReID Sec. 3.1), weights
    ``N(0, 0.001^2)`` (official ``weights_init_classifier``; drawn after ``nn.Linear``'s own init, as the
    official ``classifier.apply(...)`` does). ``labels`` are ignored. Key: ``weight`` ``[C, D]``."""

    def __init__(self, in_dim: int, num_classes: int) -> None:
        _check_sizes("LinearClassifier", in_dim, num_classes)
        super().__init__(in_dim, num_classes, bias=False)
        nn.init.normal_(self.weight, std=0.001)

    def forward(self, features: Tensor, labels: Tensor | None = None) -> Tensor:
        return F.linear(features, self.weight)


class _CosineClassifier(nn.Module):
    """Shared part of the margin classifiers: class weights ``[C, D]``, the scale ``s`` and the cosine
    ``cos theta = normalize(f) normalize(W)^T``. Subclasses give ``_margin_logits(cosine, target)``
    (``target``: the one-hot label mask) and ``_reset_weight``."""

    margin_range: tuple[float, float, bool] = (0.0, 1.0, False)  # low, high, high included

    def __init__(self, in_dim: int, num_classes: int, scale: float, margin: float) -> None:
        super().__init__()
        name = type(self).__name__
        _check_sizes(name, in_dim, num_classes)
        if not scale > 0:
            raise ValueError(f"{name}: scale (model.classifier.scale) must be > 0, got {scale}")
        low, high, closed = self.margin_range
        if not (low <= margin <= high if closed else low <= margin < high):
            interval = f"[{low:g}, {high:g}{']' if closed else ')'}"
            raise ValueError(f"{name}: margin (model.classifier.margin) must be in {interval}, got {margin}")
        self.in_dim, self.num_classes = in_dim, num_classes
        self.scale, self.margin = float(scale), float(margin)
        self.weight = nn.Parameter(torch.empty(num_classes, in_dim))
        self._reset_weight()

    def _reset_weight(self) -> None:
        """Initialise ``weight`` as the classifier's official code does."""
        raise NotImplementedError

    def _margin_logits(self, cosine: Tensor, target: Tensor) -> Tensor:
        """The logits ``[B, C]`` from ``cosine`` and the one-hot label mask ``target``."""
        raise NotImplementedError

    def cosine(self, features: Tensor) -> Tensor:
        """``cos theta`` ``[B, C]`` of each feature with each class weight."""
        return F.linear(F.normalize(features), F.normalize(self.weight))

    def forward(self, features: Tensor, labels: Tensor | None = None) -> Tensor:
        cosine = self.cosine(features)
        if labels is None:
            return self.scale * cosine
        _check_labels(type(self).__name__, features, labels)
        target = torch.zeros_like(cosine, dtype=torch.bool).scatter_(1, labels.view(-1, 1).long(), True)
        return self._margin_logits(cosine, target)

    def extra_repr(self) -> str:
        sizes = f"in_dim={self.in_dim}, num_classes={self.num_classes}"
        return f"{sizes}, scale={self.scale}, margin={self.margin}"


class ArcFace(_CosineClassifier):
    """Additive angular margin (ArcFace, Deng et al., CVPR 2019, Eq. 3): the target class's angle grows
    by ``m``,

        z_y = s cos(theta_y + m)   if cos theta_y > cos(pi - m)   else   s (cos theta_y - m sin m)
        z_j = s cos theta_j        (j != y)

    as TransReID's ``Arcface`` computes it (``loss/metric_learning.py``): ``cos(theta + m) = cos theta cos m
    - sin theta sin m`` with ``sin theta = sqrt(1 - cos^2 theta)``, and past ``theta = pi - m`` (``th``),
    where ``cos(theta + m)`` would rise again, the CosFace-like fallback ``cos theta - mm`` with ``mm =
    sin(pi - m) m``. ``easy_margin=True`` (official option, off in TransReID): the margin only where
    ``cos theta_y > 0``. Two differences, neither changing a finite value: ``1 - cos^2`` is clamped at 0
    before the square root (the official NaN when rounding makes ``|cos| > 1``), and the one-hot mask is
    built on the input's device (the official code hard-codes ``device='cuda'``). The official ``ls_eps``
    (label smoothing inside the margin mask) is 0 in TransReID and not offered; smoothing belongs to the
    ID loss (``model.loss.id.label_smoothing``). Official defaults: the class ``s=30, m=0.30``, what
    ``make_model`` passes ``s=30, m=0.5``. Weight init: Xavier uniform. Margin in ``[0, pi/2)``.

    fast-reid's ``ArcSoftmax`` differs: ``cos(acos(cos theta) + m)`` with no ``th`` fallback.
    """

    margin_range = (0.0, math.pi / 2, False)

    def __init__(
        self,
        in_dim: int,
        num_classes: int,
        scale: float = 30.0,
        margin: float = 0.30,
        easy_margin: bool = False,
    ) -> None:
        super().__init__(in_dim, num_classes, scale, margin)
        self.easy_margin = bool(easy_margin)
        self.cos_m, self.sin_m = math.cos(margin), math.sin(margin)
        self.th = math.cos(math.pi - margin)
        self.mm = math.sin(math.pi - margin) * margin

    def _reset_weight(self) -> None:
        nn.init.xavier_uniform_(self.weight)

    def _margin_logits(self, cosine: Tensor, target: Tensor) -> Tensor:
        sine = (1.0 - torch.pow(cosine, 2)).clamp_min(0.0).sqrt()
        phi = cosine * self.cos_m - sine * self.sin_m
        if self.easy_margin:
            phi = torch.where(cosine > 0, phi, cosine)
        else:
            phi = torch.where(cosine > self.th, phi, cosine - self.mm)
        return torch.where(target, phi, cosine) * self.scale


class CosFace(_CosineClassifier):
    """Large margin cosine loss (CosFace, Wang et al., CVPR 2018, Eq. 4): the target cosine drops by
    ``m``,

        z_y = s (cos theta_y - m),     z_j = s cos theta_j   (j != y)

    as TransReID's ``Cosface`` (and fast-reid's ``CosSoftmax``) computes it. Official defaults: the class
    ``s=30, m=0.30``, ``make_model`` ``s=30, m=0.5``. Weight init: Xavier uniform. Margin in ``[0, 1)``
    (a part of the cosine's range [-1, 1]; the papers use 0.35 - 0.5).
    """

    def __init__(self, in_dim: int, num_classes: int, scale: float = 30.0, margin: float = 0.30) -> None:
        super().__init__(in_dim, num_classes, scale, margin)

    def _reset_weight(self) -> None:
        nn.init.xavier_uniform_(self.weight)

    def _margin_logits(self, cosine: Tensor, target: Tensor) -> Tensor:
        return torch.where(target, cosine - self.margin, cosine) * self.scale


class AMSoftmax(CosFace):
    """Additive margin softmax (AM-Softmax, Wang et al., IEEE SPL 2018, Eq. 5): the same logits as
    :class:`CosFace`,

        z_y = s (cos theta_y - m),     z_j = s cos theta_j   (j != y)

    TransReID's ``AMSoftmax`` differs from its ``Cosface`` only in the parameter: ``W`` ``[D, C]``
    (key ``classifier.W``), normalised over D, initialised Xavier normal. Here the weight is drawn as that
    ``[D, C]`` tensor (the same numbers for the same seed) and stored transposed as ``weight`` ``[C, D]``,
    the key of every other classifier; an official AMSoftmax checkpoint's ``classifier.W`` needs ``.t()``.
    Official defaults: the class ``s=30, m=0.30``, ``make_model`` ``s=30, m=0.5``. Margin in ``[0, 1)``.
    """

    def _reset_weight(self) -> None:
        official = torch.empty(self.in_dim, self.num_classes)
        nn.init.xavier_normal_(official, gain=1)
        with torch.no_grad():
            self.weight.copy_(official.t())


class Circle(_CosineClassifier):
    """Circle loss as a classifier (Sun et al., CVPR 2020, Eq. 6 / Sec. 3.2, class-level labels): each
    similarity gets its own weight and margin,

        alpha_p = [1 + m - cos theta_y]_+,   alpha_n = [cos theta_j + m]_+   (detached: no gradient)
        z_y = s alpha_p (cos theta_y - (1 - m)),     z_j = s alpha_n (cos theta_j - m)   (j != y)

    so cross-entropy of ``z`` is ``log(1 + sum_j exp(z_j - z_y))``, the paper's unified loss with one
    positive. As TransReID's ``CircleLoss`` (``loss/metric_learning.py``) computes it; unlike the additive
    margins, *every* logit changes with the label (``alpha_n``, ``Delta_n = m`` apply to all non-targets).
    Official defaults: the class ``s=256, m=0.25``, ``make_model`` ``s=30, m=0.5``. Weight init:
    Kaiming uniform with ``a = sqrt(5)`` (``nn.Linear``'s). Margin in ``[0, 0.5]``: at 0.5 the optima
    ``Delta_p = 1 - m`` and ``Delta_n = m`` meet, past it a negative's target exceeds a positive's.
    """

    margin_range = (0.0, 0.5, True)

    def __init__(self, in_dim: int, num_classes: int, scale: float = 256.0, margin: float = 0.25) -> None:
        super().__init__(in_dim, num_classes, scale, margin)

    def _reset_weight(self) -> None:
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))

    def _margin_logits(self, cosine: Tensor, target: Tensor) -> Tensor:
        alpha_p = torch.clamp_min(-cosine.detach() + 1 + self.margin, min=0.0)
        alpha_n = torch.clamp_min(cosine.detach() + self.margin, min=0.0)
        positive = self.scale * alpha_p * (cosine - (1 - self.margin))
        negative = self.scale * alpha_n * (cosine - self.margin)
        return torch.where(target, positive, negative)


class CircleSoftmax(Circle):
    """fast-reid's ``CircleSoftmax`` (``fastreid/layers/any_softmax.py`` with the weight of
    ``fastreid/modeling/heads/embedding_head.py``): the logits of :class:`Circle`, the same equation
    (it scales by ``s`` after combining, a rounding-level difference). What differs is the
    initialisation, ``W ~ N(0, 0.01^2)`` (``EmbeddingHead.reset_parameters``), and the defaults of
    ``configs/Base-SBS.yml``, ``s=64, m=0.35``. (fast-reid's label ``-1`` rows, for model-parallel
    classes on other ranks, never occur here: every label is a training identity.)
    """

    def __init__(self, in_dim: int, num_classes: int, scale: float = 64.0, margin: float = 0.35) -> None:
        super().__init__(in_dim, num_classes, scale, margin)

    def _reset_weight(self) -> None:
        nn.init.normal_(self.weight, std=0.01)
