"""The dual causality loss of SNR as an objective term.

Jin et al., "Style Normalization and Restitution for Generalizable Person Re-identification", CVPR 2020,
Sec. 3.2 (Eq. 5-6). For an SNR block (``reid.models.snr``) with pooled features ``f~`` of the normalised
map F~, ``f+`` of the enhanced F~+ = F~ + R+ and ``f-`` of the contaminated F~- = F~ + R-, and a triplet
(anchor a, positive p, negative n), with ``d`` a distance:

    L+ = softplus(d(f+_a, f+_p) - d(f~_a, f~_p)) + softplus(d(f~_a, f~_n) - d(f+_a, f+_n))
    L- = softplus(d(f~_a, f~_p) - d(f-_a, f-_p)) + softplus(d(f-_a, f-_n) - d(f~_a, f~_n))

Restituting R+ must pull positives closer and push negatives further than IN alone (clarification,
L+); adding R- must do the opposite (destruction, L-). Each is averaged over the anchors of the batch
and the term is ``sum_s w_s (L+_s + L-_s)`` over the SNR stages ``s`` (the paper's ``sum_b lambda_b
L_SNR^b``).

Choices (the authors' re-id code was never released, microsoft/SNR issue #9):

* Triplets: every image is an anchor; its hardest positive and hardest negative are mined batch-hard
  by identity on the network's final global feature ``inputs.feats[0]`` (detached; Euclidean, as the
  triplet term's default), so the stages are compared on the same triplets as the triplet loss
  (:func:`reid.losses.triplet.hard_example_indices`).
* ``d``: Euclidean distance of L2-normalised features (``normalize=True``, default). The stages differ
  in width (256 to 2048 channels in ResNet-50) and in scale, so raw distances would weight the
  softplus terms by each stage's magnitude (and push a large-scale stage into softplus' linear
  regime, a small-scale one to a flat ``log 2``); on the unit sphere every distance is in [0, 2]
  and ``stage_weights`` alone set each stage's share. ``normalize=False``: raw Euclidean distances.

A consequence of the equations with global average pooling (``reid.models.snr.SNRResNet``): the
pooled IN map is ``f~ = avgpool(IN(F)) = beta``, the IN shift, for every image, so every
``d(f~_a, f~_x)`` is 0 and the terms compare the f+ / f- distances with 0: L+ pulls f+ positives
together and pushes f+ negatives apart, L- pushes f- positives apart and pulls f- negatives together.

Stats (``self.stats``, logged as ``train/<term>/<stage>/plus`` and ``.../minus``): L+ and L- of each
stage, unweighted.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch.nn.functional as F
from torch import Tensor

from reid.distributed import gather_with_grad
from reid.losses.objective import LossTerm, ObjectiveInput
from reid.losses.triplet import global_batch, hard_example_indices, pairwise_euclidean

CONFIG_KEY = "model.loss.causality"
_STAGE_FEATURE = re.compile(r"snr\.(\w+)\.normalized")
_KINDS = ("normalized", "enhanced", "contaminated")  # f~, f+, f- (reid.models.snr.stage_feature_name)


def _stage_names(aux: Mapping[str, Tensor]) -> list[str]:
    """Stages the model gives SNR features for (``snr.<stage>.normalized`` entries), in model order."""
    return [m.group(1) for name in aux if (m := _STAGE_FEATURE.fullmatch(name))]


def _distance(x: Tensor, other: Tensor) -> Tensor:
    """``||x_i - x_{other_i}||`` for every anchor ``i``, [N]; squared clamped at 1e-12 before the square
    root (as :func:`~reid.losses.triplet.pairwise_euclidean`), so an anchor that is its own hardest
    positive (a single image of its identity) gets no NaN gradient."""
    return (x - x[other]).pow(2).sum(1).clamp(min=1e-12).sqrt()


def dual_causality(
    normed: Tensor, enhanced: Tensor, contaminated: Tensor, positive: Tensor, negative: Tensor
) -> tuple[Tensor, Tensor]:
    """(L+, L-) of one stage, each averaged over the anchors (Eq. 5-6, module docstring).

    ``normed`` (f~), ``enhanced`` (f+), ``contaminated`` (f-): [N, C]; ``positive`` / ``negative``: [N]
    batch indices of each anchor's positive and negative.
    """
    ap_normed, an_normed = _distance(normed, positive), _distance(normed, negative)
    ap_plus, an_plus = _distance(enhanced, positive), _distance(enhanced, negative)
    ap_minus, an_minus = _distance(contaminated, positive), _distance(contaminated, negative)
    plus = F.softplus(ap_plus - ap_normed) + F.softplus(an_normed - an_plus)
    minus = F.softplus(ap_normed - ap_minus) + F.softplus(an_minus - an_normed)
    return plus.mean(), minus.mean()


class CausalityTerm(LossTerm):
    """Dual causality loss ``sum_s w_s (L+_s + L-_s)`` over the SNR stages (module docstring).

    Reads ``inputs.aux["snr.<stage>.{normalized,enhanced,contaminated}"]`` ([B, C_s] each, from
    ``reid.models.snr.SNRResNet`` through ``CNNReIDNet``), ``inputs.feats[0]`` [B, D] for mining and
    ``inputs.labels`` [B]; returns a scalar.

    Args:
        weight: the term's weight in the objective.
        stage_weights: ``{stage: w_s}`` (e.g. ``{layer1: 0.1, layer4: 0.5}``): exactly the stages the
            model has SNR blocks after; ``None``: every stage it gives, ``w_s = 1``.
        normalize: L2-normalise the stage features before the distances (see module docstring).
    """

    def __init__(
        self,
        weight: float = 1.0,
        stage_weights: Mapping[str, float] | None = None,
        normalize: bool = True,
    ) -> None:
        super().__init__(weight)
        if stage_weights is not None and not isinstance(stage_weights, Mapping):
            raise TypeError(
                f"{CONFIG_KEY}.stage_weights: expected a mapping stage -> weight (e.g. {{layer1: 0.1}}) or "
                f"null, got {type(stage_weights).__name__} {stage_weights!r}"
            )
        self.stage_weights = (
            None if stage_weights is None else {str(k): float(v) for k, v in stage_weights.items()}
        )
        self.normalize = bool(normalize)

    def _weights(self, inputs: ObjectiveInput) -> dict[str, float]:
        given = _stage_names(inputs.aux)
        if not given:
            raise ValueError(
                f"{CONFIG_KEY}: the dual causality loss needs the SNR stage features "
                "snr.<stage>.{normalized,enhanced,contaminated}, but the model gives "
                f"{sorted(inputs.aux) or 'no auxiliary outputs'}; use an SNR backbone "
                "(reid.models.snr.snr_resnet, conf/model/snr_r50.yaml) or set model.loss.causality=null"
            )
        if self.stage_weights is None:
            return dict.fromkeys(given, 1.0)
        if set(self.stage_weights) != set(given):
            raise ValueError(
                f"{CONFIG_KEY}.stage_weights names the stages {sorted(self.stage_weights)}, but the model "
                f"has SNR blocks after {sorted(given)} (model.backbone.stages); give one weight per SNR stage"
            )
        return self.stage_weights

    def _features(self, inputs: ObjectiveInput, stage: str) -> tuple[Tensor, Tensor, Tensor]:
        feats = [gather_with_grad(inputs.require(f"snr.{stage}.{kind}", CONFIG_KEY)) for kind in _KINDS]
        if self.normalize:
            feats = [F.normalize(f, dim=1, eps=1e-12) for f in feats]
        return feats[0], feats[1], feats[2]

    def forward(self, inputs: ObjectiveInput) -> Tensor:
        weights = self._weights(inputs)
        mined, labels = global_batch(inputs.feats[0].detach(), inputs.labels)  # every rank's batch (DDP)
        hard = hard_example_indices(pairwise_euclidean(mined, mined), labels)
        total = mined.new_zeros(())
        self.stats = {}
        for stage, stage_weight in weights.items():
            plus, minus = dual_causality(*self._features(inputs, stage), hard.positive, hard.negative)
            self.stats[f"{stage}/plus"], self.stats[f"{stage}/minus"] = plus.detach(), minus.detach()
            total = total + stage_weight * (plus + minus)
        return total

    def extra_repr(self) -> str:
        return f"stage_weights={self.stage_weights}, normalize={self.normalize}"
