"""The SNR dual causality loss (reid.losses.causality) against hand-computed values (the tiny training
run that logs it: tests/models/test_snr.py).

Only the paper's Eq. 5-6 (Jin et al., CVPR 2020; ../shared/REFERENCE.md "SNR") can be checked: the
authors' re-id code was never released (microsoft/SNR issue #9; the microsoft/SNR repository holds
classification, segmentation and detection code only, read through the read_file tool).
"""

from __future__ import annotations

import math

import pytest
import torch

from reid.losses import CausalityTerm, ObjectiveInput
from reid.losses.causality import dual_causality


def sp(x: float) -> float:
    return math.log1p(math.exp(x))


LABELS = torch.tensor([0, 0, 1, 1])
# Mining feature (the network's global feature): positives 0<->1, 2<->3; hardest negatives
# d(0,2)=3 < d(0,3)=sqrt(18); d(1,2)=sqrt(10) < d(1,3)=sqrt(13); d(2,0)=3 < d(2,1)=sqrt(10);
# d(3,1)=sqrt(13) < d(3,0)=sqrt(18)  ->  negative = [2, 2, 0, 1].
GLOBAL = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 3.0], [3.0, 3.0]])
NORMED = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])  # f~
ENHANCED = torch.tensor([[0.0, 0.0], [0.5, 0.0], [0.0, 2.0], [0.5, 2.0]])  # f+
CONTAMINATED = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 0.5], [2.0, 0.5]])  # f-
# Distances of the pairs used (positive pairs {0,1} {2,3}; negative pairs {0,2} {1,2} {1,3}):
#   f~: 1, 1 | 1, sqrt(2), 1      f+: 0.5, 0.5 | 2, sqrt(4.25), 2      f-: 2, 2 | 0.5, sqrt(4.25), 0.5
# L+ per anchor = sp(d+ap - d~ap) + sp(d~an - d+an):
#   a0 (p1, n2): sp(-0.5) + sp(-1)   a1 (p0, n2): sp(-0.5) + sp(sqrt(2) - sqrt(4.25))
#   a2 (p3, n0): sp(-0.5) + sp(-1)   a3 (p2, n1): sp(-0.5) + sp(-1)
# L- per anchor = sp(d~ap - d-ap) + sp(d-an - d~an):
#   a0: sp(-1) + sp(-0.5)   a1: sp(-1) + sp(sqrt(4.25) - sqrt(2))   a2, a3: sp(-1) + sp(-0.5)
GAP = math.sqrt(2) - math.sqrt(4.25)  # -0.64734
L_PLUS = (4 * sp(-0.5) + 3 * sp(-1) + sp(GAP)) / 4  # (4 * 0.47408 + 3 * 0.31326 + 0.42097) / 4 = 0.81427
L_MINUS = (4 * sp(-1) + 3 * sp(-0.5) + sp(-GAP)) / 4  # (4 * 0.31326 + 3 * 0.47408 + 1.06831) / 4 = 0.93590


def _stage(normed=NORMED, enhanced=ENHANCED, contaminated=CONTAMINATED, stage="layer1") -> dict:
    return {
        f"snr.{stage}.normalized": normed,
        f"snr.{stage}.enhanced": enhanced,
        f"snr.{stage}.contaminated": contaminated,
    }


def _inputs(aux: dict, global_feat: torch.Tensor = GLOBAL) -> ObjectiveInput:
    return ObjectiveInput((global_feat,), (torch.zeros(4, 2),), LABELS, (1.0,), aux=aux)


def test_hand_computed_plus_and_minus_on_triplets_mined_from_the_global_feature():
    assert math.isclose(L_PLUS, 0.8142654, abs_tol=1e-6) and math.isclose(L_MINUS, 0.9358964, abs_tol=1e-6)
    term = CausalityTerm(normalize=False)
    loss = term(_inputs(_stage()))
    assert loss.item() == pytest.approx(L_PLUS + L_MINUS, abs=1e-5)
    assert term.stats["layer1/plus"].item() == pytest.approx(L_PLUS, abs=1e-5)
    assert term.stats["layer1/minus"].item() == pytest.approx(L_MINUS, abs=1e-5)
    # the same value straight from the stage function with the indices written out
    plus, minus = dual_causality(
        NORMED, ENHANCED, CONTAMINATED, torch.tensor([1, 0, 3, 2]), torch.tensor([2, 2, 0, 1])
    )
    assert (plus.item(), minus.item()) == (pytest.approx(L_PLUS, abs=1e-5), pytest.approx(L_MINUS, abs=1e-5))
    # mining on f~ instead would give anchor 1 the negative 3 (d~(1,3) = 1 < sqrt(2)): another value
    mined_on_normed = CausalityTerm(normalize=False)(_inputs(_stage(), global_feat=NORMED))
    assert abs(mined_on_normed.item() - (L_PLUS + L_MINUS)) > 1e-2


def test_stage_weights_sum_the_stages():
    # layer4: every feature doubled, so every distance doubles:
    #   L+ = (4 sp(-1) + 3 sp(-2) + sp(2 GAP)) / 4,  L- = (4 sp(-2) + 3 sp(-1) + sp(-2 GAP)) / 4
    plus4 = (4 * sp(-1) + 3 * sp(-2) + sp(2 * GAP)) / 4  # 0.46900
    minus4 = (4 * sp(-2) + 3 * sp(-1) + sp(-2 * GAP)) / 4  # 0.74608
    aux = _stage() | _stage(2 * NORMED, 2 * ENHANCED, 2 * CONTAMINATED, stage="layer4")
    term = CausalityTerm(stage_weights={"layer1": 0.1, "layer4": 0.5}, normalize=False)
    expected = 0.1 * (L_PLUS + L_MINUS) + 0.5 * (plus4 + minus4)  # 0.78255
    assert term(_inputs(aux)).item() == pytest.approx(expected, abs=1e-5)
    assert term.stats["layer4/plus"].item() == pytest.approx(plus4, abs=1e-5)
    unweighted = CausalityTerm(normalize=False)(_inputs(aux))  # null: every stage, weight 1
    assert unweighted.item() == pytest.approx(L_PLUS + L_MINUS + plus4 + minus4, abs=1e-5)
    with pytest.raises(ValueError, match=r"stage_weights names the stages \['layer1', 'layer2'\].*layer4"):
        CausalityTerm(stage_weights={"layer1": 0.1, "layer2": 0.1})(_inputs(aux))
    with pytest.raises(TypeError, match="model.loss.causality.stage_weights"):
        CausalityTerm(stage_weights=[0.1, 0.5])


def test_normalize_compares_directions_only():
    """``normalize=True``: the value does not change when each image's feature is rescaled, and equals
    the raw-distance value on unit-norm inputs; without it a rescaling changes the value."""
    gen = torch.Generator().manual_seed(0)
    normed, enhanced, contaminated = (torch.randn(4, 3, generator=gen) for _ in range(3))
    scale = torch.tensor([[0.5], [2.0], [3.0], [0.1]])
    base = CausalityTerm(normalize=True)(_inputs(_stage(normed, enhanced, contaminated)))
    scaled = CausalityTerm(normalize=True)(
        _inputs(_stage(scale * normed, scale * enhanced, 2 * contaminated))
    )
    torch.testing.assert_close(scaled, base)
    units = [torch.nn.functional.normalize(f, dim=1) for f in (normed, enhanced, contaminated)]
    torch.testing.assert_close(CausalityTerm(normalize=False)(_inputs(_stage(*units))), base)
    raw = CausalityTerm(normalize=False)
    assert (
        abs(
            raw(_inputs(_stage(scale * normed, enhanced, contaminated)))
            - raw(_inputs(_stage(normed, enhanced, contaminated)))
        )
        > 1e-3
    )


def test_gradient_reaches_the_stage_features_not_the_mining_feature():
    feats = [f.clone().requires_grad_(True) for f in (NORMED, ENHANCED, CONTAMINATED)]
    global_feat = GLOBAL.clone().requires_grad_(True)
    for normalize in (False, True):
        for f in feats:
            f.grad = None
        CausalityTerm(normalize=normalize)(_inputs(_stage(*feats), global_feat)).backward()
        for f in feats:
            assert f.grad is not None and torch.isfinite(f.grad).all() and f.grad.abs().sum() > 0
    assert global_feat.grad is None  # the triplets are mined on a detached feature


def test_a_model_without_snr_features_is_an_error_naming_the_key():
    with pytest.raises(ValueError, match=r"model\.loss\.causality.*no auxiliary outputs.*snr_r50"):
        CausalityTerm()(_inputs({}))
    with pytest.raises(ValueError, match=r"model\.loss\.causality.*'snr\.layer1\.enhanced'"):
        CausalityTerm()(_inputs({"snr.layer1.normalized": NORMED, "snr.layer1.contaminated": NORMED}))
