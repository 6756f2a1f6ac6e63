"""The open objective: named, weighted terms; bit-identical to the fixed ID + triplet objective."""

import pytest
import torch
from torch import nn

from reid.losses import IDLoss, TripletLoss
from reid.losses.objective import IDTerm, LossTerm, Objective, ObjectiveInput, TripletTerm
from reid.losses.term_optimizers import TermOptimizers


def _inputs(branches: int, seed: int = 0, **extra) -> ObjectiveInput:
    g = torch.Generator().manual_seed(seed)
    feats = tuple(torch.randn(8, 6, generator=g) for _ in range(branches))
    logits = tuple(torch.randn(8, 4, generator=g) for _ in range(branches))
    weights = (1.0,) if branches == 1 else (0.5, *([0.5 / (branches - 1)] * (branches - 1)))
    return ObjectiveInput(feats, logits, torch.tensor([0, 0, 1, 1, 2, 2, 3, 3]), weights, **extra)


def _fixed_objective(inputs: ObjectiveInput, id_loss, tri_loss, id_weight: float, tri_weight: float):
    """The objective as it was before it was opened (reid_objective.py, session 4), line for line."""
    id_term = sum(w * id_loss(z, inputs.labels) for w, z in zip(inputs.branch_weights, inputs.logits))
    tri_term = sum(w * tri_loss(f, inputs.labels) for w, f in zip(inputs.branch_weights, inputs.feats))
    return id_weight * id_term + tri_weight * tri_term, id_term, tri_term


@pytest.mark.parametrize("branches", [1, 5])
@pytest.mark.parametrize(("margin", "smoothing", "tri_weight"), [(None, 0.0, 1.0), (0.3, 0.1, 2.0)])
def test_id_plus_triplet_is_bit_identical_to_the_fixed_objective(branches, margin, smoothing, tri_weight):
    inputs = _inputs(branches)
    objective = Objective(id=IDTerm(1.0, smoothing), tri=TripletTerm(tri_weight, margin))
    out = objective(inputs)
    total, id_term, tri_term = _fixed_objective(
        inputs, IDLoss(smoothing), TripletLoss(margin), 1.0, tri_weight
    )
    assert torch.equal(out.total, total)
    assert torch.equal(out.terms["id"], id_term) and torch.equal(out.terms["tri"], tri_term)
    assert list(out.terms) == ["id", "tri"]


def test_jpm_branch_weights_follow_the_official_formula():
    inputs = _inputs(5)
    out = Objective(id=IDTerm(), tri=TripletTerm(margin=0.3))(inputs)
    ce, tri = IDLoss(), TripletLoss(margin=0.3)
    id_ref = (
        0.5 * ce(inputs.logits[0], inputs.labels)
        + 0.5 * sum(ce(z, inputs.labels) for z in inputs.logits[1:]) / 4
    )
    torch.testing.assert_close(out.terms["id"], id_ref)
    tri_ref = (
        0.5 * tri(inputs.feats[0], inputs.labels)
        + 0.5 * sum(tri(f, inputs.labels) for f in inputs.feats[1:]) / 4
    )
    torch.testing.assert_close(out.terms["tri"], tri_ref)


class _Centres(LossTerm):
    """A toy term with parameters: mean squared distance of each feature to its class centre."""

    def __init__(self, weight: float = 1.0) -> None:
        super().__init__(weight)
        self.centres = nn.Parameter(torch.zeros(4, 6))

    def param_group_options(self):
        return {"lr": 0.5, "weight_decay": 0.0}

    def forward(self, inputs):
        return (inputs.feats[0] - self.centres[inputs.labels]).pow(2).sum(1).mean()


def test_a_term_with_parameters_is_trained_in_its_own_group():
    objective = Objective(id=IDTerm(), centre=_Centres(weight=0.25))
    inputs = _inputs(1)
    out = objective(inputs)
    torch.testing.assert_close(out.total, out.terms["id"] + 0.25 * out.terms["centre"])
    groups = objective.param_groups(base_lr=0.01)
    assert [g["name"] for g in groups] == ["loss.centre"] and groups[0]["lr"] == 0.5
    optimizer = torch.optim.SGD(groups, lr=0.01)
    out.total.backward()
    before = objective.terms["centre"].centres.detach().clone()
    optimizer.step()
    expected = before - 0.5 * objective.terms["centre"].centres.grad
    assert torch.equal(objective.terms["centre"].centres.detach(), expected)
    assert not torch.equal(expected, before)


def test_null_terms_are_dropped_and_an_empty_objective_is_refused():
    assert list(Objective(id=IDTerm(), tri=None).terms) == ["id"]
    assert Objective(id=IDTerm()).param_groups(0.1) == []
    with pytest.raises(ValueError, match="no loss term"):
        Objective(id=None)
    with pytest.raises(TypeError, match=r"model\.loss\.tri: expected a loss term"):
        Objective(tri=TripletLoss())


def test_inputs_check_branch_counts_and_name_missing_aux_outputs():
    inputs = _inputs(2)
    with pytest.raises(ValueError, match="per branch"):
        ObjectiveInput(inputs.feats, inputs.logits[:1], inputs.labels, inputs.branch_weights)
    with pytest.raises(ValueError, match="'rpe'.*'patch_index'.*no auxiliary outputs"):
        inputs.require("patch_index", term="rpe")
    with_aux = _inputs(1, aux={"patch_index": torch.zeros(8, 3)})
    assert with_aux.require("patch_index", term="rpe").shape == (8, 3)


class _Reporting(LossTerm):
    """A term that reports diagnostics and reads the step."""

    def forward(self, inputs):
        value = inputs.feats[0].pow(2).mean()
        self.stats = {"norm": inputs.feats[0].norm(dim=1).mean(), "step": torch.tensor(float(inputs.step))}
        return value


def test_term_stats_are_reported_detached_under_the_term_name_and_stay_out_of_the_total():
    feats = (torch.randn(8, 6, requires_grad=True),)
    inputs = ObjectiveInput(feats, (torch.randn(8, 4),), torch.arange(8) // 2, (1.0,), step=7)
    out = Objective(rep=_Reporting(weight=2.0))(inputs)
    assert set(out.stats) == {"rep/norm", "rep/step"}
    assert out.stats["rep/step"].item() == 7.0 and not out.stats["rep/norm"].requires_grad
    torch.testing.assert_close(out.total, 2.0 * feats[0].pow(2).mean())
    assert dict(Objective(id=IDTerm())(_inputs(1)).stats) == {}


class _Ramped(_Reporting):
    """A term whose weight ramps: ``weight_at(step) = weight * step / 10``."""

    def weight_at(self, step: int) -> float:
        return self.weight * step / 10


def test_the_total_uses_weight_at_the_step_and_the_default_is_the_constant_weight():
    assert [IDTerm(weight=0.7).weight_at(s) for s in (0, 1, 10**6)] == [0.7, 0.7, 0.7]
    feats = (torch.randn(8, 6),)
    inputs = ObjectiveInput(feats, (torch.randn(8, 4),), torch.arange(8) // 2, (1.0,), step=3)
    out = Objective(id=IDTerm(weight=0.5), ramp=_Ramped(weight=2.0))(inputs)
    torch.testing.assert_close(out.total, 0.5 * out.terms["id"] + 0.6 * out.terms["ramp"])
    torch.testing.assert_close(out.terms["ramp"], feats[0].pow(2).mean())


class _OwnCentres(_Centres):
    """The toy term with an optimiser of its own that steps on twice its gradient."""

    def __init__(self) -> None:
        super().__init__(weight=0.25)
        self.optimizer_factory = lambda params: torch.optim.SGD(params, lr=0.5)

    def own_grad_scale(self) -> float:
        return 2.0


def test_a_term_with_its_own_optimizer_is_left_out_of_the_groups_and_stepped_by_it():
    objective = Objective(id=IDTerm(), centre=_OwnCentres())
    assert objective.param_groups(base_lr=0.01) == []
    term = objective.terms["centre"]
    steppers = TermOptimizers(objective)
    steppers.build()
    assert list(steppers.optimizers) == ["centre"]
    assert steppers.optimizers["centre"].param_groups[0]["params"] == [term.centres]
    objective(_inputs(1)).total.backward()
    grad = term.centres.grad.clone()
    steppers.step()
    torch.testing.assert_close(term.centres.detach(), -0.5 * 2.0 * grad)
    assert term.centres.grad is None  # cleared: the task's zero_grad does not reach it
    with pytest.raises(ValueError, match=r"loss terms \['other'\].*\['centre'\]"):
        steppers.load_state_dict({"other": {}})
