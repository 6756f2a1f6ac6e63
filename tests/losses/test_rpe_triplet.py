"""RPE-triplet loss: selection, relation values, batch-hard loss, gradients, naive vs stable form, errors.

No official implementation exists (the method is the users' own); the bias orientation follows timm's
BEiT (``timm/models/beit.py``: the bias [heads, N, N] is indexed by query row, key column and added to
the attention logits), so ``P_rel[a, b]`` is read as ``rel_pos_bias[..., a, b]`` with ``a`` the earlier
(more [CLS]-similar) patch. All model outputs here are hand-made tensors with the contract's shapes:
``cls_similarity`` [B, N_p], ``pos_embed`` [N_p, D], ``rel_pos_bias`` [L, heads, N_p, N_p].
"""

import math

import pytest
import torch

from reid.losses import IDTerm, Objective, ObjectiveInput, RPETripletTerm
from reid.losses.rpe_triplet import ordered_pairs, top_patches

# 4 patches, D = 2; L = 2 tables of 2 heads with bias[l, h, i, j] = 32 l + 16 h + 4 i + j (an
# asymmetric table, so reading [b, a] instead of [a, b] would change every value below).
POS = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [2.0, -1.0]])
BIAS = torch.arange(64.0).reshape(2, 2, 4, 4)
# image 0 ranks the patches 1 (0.9), 3 (0.7), 2 (0.5), 0; image 1 ranks 0, 3, 2, 1.
SIM = torch.tensor([[0.1, 0.9, 0.5, 0.7], [0.8, 0.2, 0.3, 0.6]])


def _inputs(sim, pos, bias=None, labels=None, step=0) -> ObjectiveInput:
    batch = sim.shape[0]
    aux = {"cls_similarity": sim, "pos_embed": pos} | ({} if bias is None else {"rel_pos_bias": bias})
    labels = torch.arange(batch) // 2 if labels is None else labels
    feats, logits = (torch.zeros(batch, 3),), (torch.zeros(batch, 2),)
    return ObjectiveInput(feats, logits, labels, (1.0,), aux=aux, step=step)


def test_selection_is_top_n_by_similarity_in_order_and_pairs_follow_that_order():
    order = top_patches(SIM, 3)
    assert order.tolist() == [[1, 3, 2], [0, 3, 2]]
    first, second = ordered_pairs(order)
    assert list(zip(first[0].tolist(), second[0].tolist())) == [(1, 3), (1, 2), (3, 2)]
    assert list(zip(first[1].tolist(), second[1].tolist())) == [(0, 3), (0, 2), (3, 2)]
    first, second = ordered_pairs(top_patches(SIM[:1], 4))
    assert list(zip(first[0].tolist(), second[0].tolist())) == [
        (1, 3),
        (1, 2),
        (1, 0),
        (3, 2),
        (3, 0),
        (2, 0),
    ]


# Image 0's pairs (1,3), (1,2), (3,2): P_abs terms P1.P3 = -1, P1.P2 = 1, P3.P2 = 1; bias entries
# 4a + b = 7, 6, 14, plus 32 l + 16 h.
@pytest.mark.parametrize(
    ("layers", "heads", "expected"),
    [
        ("last", "mean", [-1 + 32 + 8 + 7, 1 + 32 + 8 + 6, 1 + 32 + 8 + 14]),  # 46, 47, 55
        ([-1], "mean", [46, 47, 55]),
        ("mean", "mean", [-1 + 16 + 8 + 7, 1 + 16 + 8 + 6, 1 + 16 + 8 + 14]),  # 30, 31, 39
        ([0, 1], "mean", [30, 31, 39]),
        ([0], "mean", [-1 + 8 + 7, 1 + 8 + 6, 1 + 8 + 14]),  # 14, 15, 23
        # concat: pair-major, head-minor
        ("last", "concat", [-1 + 32 + 7, -1 + 48 + 7, 1 + 32 + 6, 1 + 48 + 6, 1 + 32 + 14, 1 + 48 + 14]),
        ([0], "concat", [-1 + 7, -1 + 16 + 7, 1 + 6, 1 + 16 + 6, 1 + 14, 1 + 16 + 14]),
    ],
)
def test_relation_values_match_a_hand_computation(layers, heads, expected):
    term = RPETripletTerm(num_patches=3, form="stable", layers=layers, heads=heads)
    relations = term.relations(_inputs(SIM, POS, BIAS))
    assert relations[0].tolist() == [float(v) for v in expected]


def test_without_the_bias_the_relation_is_the_absolute_term_only():
    term = RPETripletTerm(num_patches=3, form="stable", use_bias=False, heads="concat")
    # image 1's pairs (0,3), (0,2), (3,2): P0.P3 = 2, P0.P2 = 1, P3.P2 = 1
    assert term.relations(_inputs(SIM, POS)).tolist() == [[-1.0, 1.0, 1.0], [2.0, 1.0, 1.0]]
    assert "rel_bias_norm" not in term.stats


# 4 images (ids 0, 0, 1, 1), N = 2, absolute term only: patches (0,1), (0,2), (0,3), (2,3) of
# P = [[1,0],[0,1],[1,1],[3,2]] give the 1-d relations 0, 1, 3, 5.
SCALAR_POS = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [3.0, 2.0]])
SCALAR_SIM = torch.tensor([[0.9, 0.8, 0, 0], [0.9, 0, 0.8, 0], [0.9, 0, 0, 0.8], [0, 0, 0.9, 0.8]])


def test_loss_and_stats_equal_a_hand_computed_batch_hard_triplet():
    """Anchors 0..3: d_ap = 1, 1, 2, 2; d_an = min(3,5), min(2,4), min(3,2), min(5,4) = 3, 2, 2, 4."""
    inputs = _inputs(SCALAR_SIM, SCALAR_POS)
    soft = RPETripletTerm(num_patches=2, form="naive", use_bias=False)
    assert soft.relations(inputs).flatten().tolist() == [0.0, 1.0, 3.0, 5.0]
    expected = (2 * math.log1p(math.exp(-2)) + math.log1p(math.exp(-1)) + math.log(2)) / 4
    torch.testing.assert_close(soft(inputs), torch.tensor(expected))
    stats = {k: v.item() for k, v in soft.stats.items()}
    assert stats["d_ap"] == pytest.approx(1.5) and stats["d_an"] == pytest.approx(2.75)
    assert stats["gap"] == pytest.approx(1.25) and stats["relation_norm"] == pytest.approx(2.25)
    assert stats["pos_embed_norm"] == pytest.approx((1 + 1 + math.sqrt(2) + math.sqrt(13)) / 4)
    assert stats["weight"] == 1.0 and all(not v.requires_grad for v in soft.stats.values())
    # hinge m = 0.5: max(0, [-2, -1, 0, -2] + 0.5) = [0, 0, 0.5, 0]
    hinge = RPETripletTerm(num_patches=2, form="stable", normalize=False, margin=0.5, use_bias=False)
    torch.testing.assert_close(hinge(inputs), torch.tensor(0.125))


def _reference_loss(vectors, labels, margin):
    """Batch-hard triplet loss by explicit loops over anchors, positives and negatives."""
    losses = []
    for a in range(len(vectors)):
        d = [float((vectors[a] - vectors[j]).pow(2).sum().sqrt()) for j in range(len(vectors))]
        d_ap = max(d[j] for j in range(len(d)) if labels[j] == labels[a])
        d_an = min(d[j] for j in range(len(d)) if labels[j] != labels[a])
        losses.append(math.log1p(math.exp(d_ap - d_an)) if margin is None else max(0.0, d_ap - d_an + margin))
    return sum(losses) / len(losses)


@pytest.mark.parametrize(("normalize", "margin"), [(True, 0.1), (True, None), (False, 2.0), (False, None)])
def test_loss_equals_a_reference_loop_on_the_relation_vectors(normalize, margin):
    g = torch.Generator().manual_seed(0)
    pos, bias = torch.randn(6, 3, generator=g), torch.randn(2, 2, 6, 6, generator=g)
    sim, labels = torch.randn(6, 6, generator=g), torch.tensor([0, 0, 1, 1, 2, 2])
    term = RPETripletTerm(
        num_patches=4, form="stable", normalize=normalize, margin=margin, heads="concat", layers="mean"
    )
    inputs = _inputs(sim, pos, bias, labels)
    raw = term.relations(inputs)
    vectors = raw / raw.norm(dim=1, keepdim=True) if normalize else raw
    expected = _reference_loss(vectors, labels.tolist(), margin)
    assert term(inputs).item() == pytest.approx(expected, rel=1e-5, abs=1e-6)


def test_gradients_reach_the_position_tables_but_not_the_similarity():
    """The top-N selection is discrete (indices from ``topk``), so ``cls_similarity`` gets no gradient;
    the loss trains ``pos_embed`` and only the gathered entries of the chosen bias tables."""
    sim = SIM.clone().requires_grad_()
    pos, bias = POS.clone().requires_grad_(), (BIAS / 64).requires_grad_()
    RPETripletTerm(num_patches=3, form="naive")(_inputs(sim, pos, bias, torch.tensor([0, 1]))).backward()
    assert sim.grad is None
    assert pos.grad.abs().sum() > 0 and bias.grad[1].abs().sum() > 0
    assert torch.equal(bias.grad[0], torch.zeros_like(bias.grad[0]))  # layers="last"
    used = torch.zeros(4, 4, dtype=torch.bool)
    used[[1, 1, 3, 0, 0, 3], [3, 2, 2, 3, 2, 2]] = True  # the pairs of both images
    assert torch.equal(bias.grad[1][:, ~used], torch.zeros(2, int((~used).sum())))


def test_form_sets_the_defaults_and_each_key_can_be_switched_on_its_own():
    naive, stable, soft = RPETripletTerm(form="naive"), RPETripletTerm(form="stable"), RPETripletTerm()
    assert (naive.selection, naive.normalize, naive.margin, naive.warmup_steps) == ("top", False, None, 0)
    assert (stable.selection, stable.normalize, stable.margin, stable.warmup_steps) == (
        "top",
        True,
        0.1,
        1000,
    )
    assert (soft.form, soft.selection, soft.normalize, soft.margin, soft.warmup_steps) == (
        "soft",
        "soft",
        True,
        0.1,
        0,
    )
    soft_stable = RPETripletTerm(form="stable", margin=None)
    assert (soft_stable.normalize, soft_stable.margin, soft_stable.warmup_steps) == (True, None, 1000)
    assert RPETripletTerm(form="soft", warmup_steps=500).warmup_steps == 500


def test_naive_is_the_reported_form_whatever_the_other_keys_say(caplog):
    """A sweep over form=naive,stable,soft with a margin and a warm-up set for the others runs the naive
    jobs as reported: soft margin, raw relations, no warm-up (one logged line says so)."""
    with caplog.at_level("INFO", logger="reid"):
        naive = RPETripletTerm(form="naive", normalize=True, margin=0.3, warmup_steps=1000)
    assert (naive.selection, naive.normalize, naive.margin, naive.warmup_steps) == ("top", False, None, 0)
    assert "form=naive keeps its own" in caplog.text


# ids 0, 0, 1, 1: each identity picks the same patches, the two identities different ones
SEPARATED_SIM = torch.tensor([[0.9, 0.8, 0.7, 0], [0.9, 0.8, 0.7, 0], [0, 0.7, 0.8, 0.9], [0, 0.7, 0.8, 0.9]])


def test_stable_relations_are_unit_norm_and_blind_to_the_tables_scale():
    """Scaling P_abs by s and P_rel by s^2 scales every raw relation by s^2. The stable loss does not
    move; on a separated batch (d_an > d_ap) the naive soft-margin loss keeps falling as s grows and has
    no finite minimiser: the cheap way down is to grow the tables."""
    g = torch.Generator().manual_seed(1)
    pos, bias = torch.randn(6, 3, generator=g), torch.randn(1, 2, 6, 6, generator=g)
    sim, labels = torch.randn(6, 6, generator=g), torch.tensor([0, 0, 1, 1, 2, 2])
    stable, naive = RPETripletTerm(num_patches=4, form="stable"), RPETripletTerm(num_patches=4, form="naive")
    bounded = stable.bound(stable.relations(_inputs(sim, pos, bias, labels)))
    torch.testing.assert_close(bounded.norm(dim=1), torch.ones(6))
    raw = naive.relations(_inputs(sim, pos, bias, labels))
    assert torch.equal(naive.bound(raw), raw)
    small, large = _inputs(sim, pos, bias, labels), _inputs(sim, 3 * pos, 9 * bias, labels)
    torch.testing.assert_close(stable(large), stable(small))
    assert stable.stats["d_an"] <= 2.0
    bias = BIAS / 64
    losses = [naive(_inputs(SEPARATED_SIM, s * POS, s * s * bias)).item() for s in (1, 2, 4)]
    assert losses[0] > losses[1] > losses[2] > 0


def test_hinge_gives_exactly_zero_loss_and_gradient_once_negatives_are_far_enough():
    pos, bias = POS.clone().requires_grad_(), (BIAS / 64).requires_grad_()
    term = RPETripletTerm(num_patches=3, form="stable")
    loss = term(_inputs(SEPARATED_SIM, pos, bias))
    assert term.stats["gap"] >= 0.1 and term.stats["d_ap"] < 1e-5
    loss.backward()
    assert loss.item() == 0.0
    assert torch.equal(pos.grad, torch.zeros_like(pos)) and torch.equal(bias.grad, torch.zeros_like(bias))
    # the soft margin still pushes on the same batch
    soft = RPETripletTerm(num_patches=3, form="stable", margin=None)(_inputs(SEPARATED_SIM, pos, bias))
    assert soft.item() > 0 and torch.autograd.grad(soft, pos)[0].abs().sum() > 0


def test_warm_up_ramps_the_weight_linearly_and_the_objective_uses_it():
    term = RPETripletTerm(weight=0.4, num_patches=3, form="stable", warmup_steps=100)
    assert [term.weight_at(s) for s in (0, 25, 50, 100, 5000)] == [0.0, 0.1, 0.2, 0.4, 0.4]
    assert RPETripletTerm(weight=0.4, form="naive").weight_at(0) == 0.4
    objective = Objective(id=IDTerm(), rpe_triplet=term)
    inputs = _inputs(SIM, POS, BIAS / 64, torch.tensor([0, 1]), step=25)
    out = objective(inputs)
    unweighted = RPETripletTerm(num_patches=3, form="stable")(inputs)
    assert torch.equal(out.terms["rpe_triplet"], unweighted)
    assert torch.equal(out.total, out.terms["id"] + 0.1 * unweighted)
    assert out.stats["rpe_triplet/weight"].item() == pytest.approx(0.1)


def _train(form: str, steps: int = 200) -> list[float]:
    """Adam on free pos_embed / bias tensors, fixed random selections; mean pos_embed row norm per step."""
    g = torch.Generator().manual_seed(0)
    pos = (0.02 * torch.randn(12, 8, generator=g)).requires_grad_()
    bias = torch.zeros(2, 2, 12, 12, requires_grad=True)
    sim = torch.randn(8, 12, generator=g)
    warmup = 50 if form == "stable" else "form"  # the naive form has none
    objective = Objective(rpe_triplet=RPETripletTerm(num_patches=4, form=form, warmup_steps=warmup))
    optimizer = torch.optim.Adam([pos, bias], lr=0.01)
    norms = []
    for step in range(steps):
        out = objective(_inputs(sim, pos, bias, step=step))
        optimizer.zero_grad()
        out.total.backward()
        optimizer.step()
        norms.append(out.stats["rpe_triplet/pos_embed_norm"].item())
    return norms


def test_naive_tables_grow_without_bound_while_stable_ones_stop():
    """The mechanism the study shows at scale: with only the position tables trainable, the naive soft
    margin keeps growing them (> 10x their start, still growing); the stable form stops once the hinge
    is met (norm constant over the last half) a few times above its near-zero start."""
    naive, stable = _train("naive"), _train("stable")
    assert naive[-1] > 10 * naive[0] and naive[-1] > naive[100] * 1.05
    assert stable[-1] < 5 * stable[0]
    assert stable[-1] == pytest.approx(stable[100], rel=1e-3)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_patches": 1}, r"rpe_triplet\.num_patches: expected an integer >= 2"),
        (
            {"form": "robust"},
            r"rpe_triplet\.form: expected one of \['naive', 'soft', 'stable'\], got 'robust'",
        ),
        ({"temperature": 0}, r"rpe_triplet\.temperature: expected a number > 0"),
        ({"heads": "sum"}, r"rpe_triplet\.heads: expected one of \['mean', 'concat'\], got 'sum'"),
        ({"layers": "first"}, r"rpe_triplet\.layers: expected 'last', 'mean' or a list"),
        ({"layers": []}, r"rpe_triplet\.layers: expected .* non-empty list of integer layer indices"),
        ({"layers": 3}, r"rpe_triplet\.layers: expected .* non-empty list"),
        ({"normalize": "yes"}, r"rpe_triplet\.normalize: expected true, false or 'form', got 'yes'"),
        ({"margin": -0.1}, r"rpe_triplet\.margin: expected null \(soft margin\), a number >= 0"),
        ({"margin": "hinge"}, r"rpe_triplet\.margin: expected null"),
        ({"warmup_steps": -5}, r"rpe_triplet\.warmup_steps: expected an integer >= 0"),
    ],
)
def test_bad_config_values_are_refused_naming_the_key(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RPETripletTerm(**kwargs)


def test_bad_model_outputs_are_refused_naming_the_key_and_the_fix():
    with pytest.raises(ValueError, match=r"rpe_triplet\.num_patches: expected at most the 4 patches.*got 5"):
        RPETripletTerm(num_patches=5, form="stable")(_inputs(SIM, POS, BIAS))
    with pytest.raises(ValueError, match=r"rpe_triplet\.layers: indices \[2, -3\] out of range .* 2 bias"):
        RPETripletTerm(num_patches=3, layers=[0, 2, -3])(_inputs(SIM, POS, BIAS))
    with pytest.raises(
        ValueError, match=r"'rel_pos_bias'.*enable it with model\.backbone\.rel_pos_bias.*use_bias=false"
    ):
        RPETripletTerm(num_patches=3)(_inputs(SIM, POS))
    with pytest.raises(ValueError, match=r"'rpe_triplet' needs the model output 'cls_similarity'"):
        RPETripletTerm(num_patches=3, use_bias=False)(
            ObjectiveInput((torch.zeros(2, 3),), (torch.zeros(2, 2),), torch.tensor([0, 1]), (1.0,))
        )
    with pytest.raises(ValueError, match=r"aux\['pos_embed'\] has 3 rows but .* scores 4 patches"):
        RPETripletTerm(num_patches=3, use_bias=False)(_inputs(SIM, POS[:3]))
    assert RPETripletTerm(num_patches=3, use_bias=False)(_inputs(SIM, POS, labels=torch.tensor([0, 1]))) >= 0


# ---- the soft form and the diagnostics ----------------------------------------------------------------
def test_soft_relations_match_a_hand_computation():
    """r_i[b] = sum_a softmax(s_i / t)_a G[a, b], G = P~ P~^T + (P_rel - mean P_rel), both tables centred."""
    term = RPETripletTerm(temperature=0.5, layers="last", heads="mean")
    raw = term.relations(_inputs(SIM, POS, BIAS))
    w = torch.softmax(SIM / 0.5, dim=1)
    centred = POS - POS.mean(0)
    rel = BIAS[-1].mean(0) - BIAS[-1].mean()
    expected = torch.stack(
        [sum(w[i, a] * (centred[a] @ centred.t() + rel[a]) for a in range(4)) for i in range(2)]
    )
    torch.testing.assert_close(raw, expected)
    concat = RPETripletTerm(temperature=0.5, heads="concat").relations(_inputs(SIM, POS, BIAS))
    per_head = BIAS[-1] - BIAS[-1].mean()
    head1 = sum(w[0, a] * (centred[a] @ centred.t() + per_head[1, a]) for a in range(4))
    torch.testing.assert_close(concat[0].reshape(4, 2)[:, 1], head1)  # position-major, head-minor


def test_the_soft_form_reaches_the_features_through_the_similarity():
    """Unlike the top-N forms, the loss has a gradient on the [CLS]-patch similarity, i.e. on the network."""
    g = torch.Generator().manual_seed(3)
    sim = torch.randn(6, 8, generator=g).requires_grad_()
    pos, bias = torch.randn(8, 4, generator=g).requires_grad_(), torch.randn(1, 2, 8, 8, generator=g)
    RPETripletTerm(temperature=0.2)(_inputs(sim, pos, bias, torch.tensor([0, 0, 1, 1, 2, 2]))).backward()
    assert sim.grad.abs().sum() > 0 and pos.grad.abs().sum() > 0


def test_the_soft_form_ignores_what_every_position_shares():
    """Adding one vector to every row of P_abs (the common component of a collapsed table) or a constant to
    the bias changes no soft relation: the tables are centred."""
    g = torch.Generator().manual_seed(4)
    sim, pos, bias = (
        torch.randn(4, 6, generator=g),
        torch.randn(6, 3, generator=g),
        torch.randn(1, 2, 6, 6, generator=g),
    )
    term = RPETripletTerm()
    base = term.relations(_inputs(sim, pos, bias))
    shifted = term.relations(_inputs(sim, pos + torch.tensor([5.0, -2.0, 1.0]), bias + 3.0))
    torch.testing.assert_close(shifted, base)


def test_auc_and_collapse_against_hand_computed_cases():
    from reid.losses.rpe_triplet import identity_auc, mean_cross_cosine, mean_share

    labels = torch.tensor([0, 0, 1, 1])
    separated = torch.tensor([[0.0], [0.1], [5.0], [5.1]])
    assert identity_auc(separated, labels).item() == pytest.approx(1.0)
    # across the clusters: positives at 5, 5; negatives 0.1, 5.1, 4.9, 0.1 -> one negative in four is farther
    assert identity_auc(separated, torch.tensor([0, 1, 0, 1])).item() == pytest.approx(0.25)
    alike = torch.zeros(4, 2)  # every distance ties: half
    assert identity_auc(alike, labels).item() == pytest.approx(0.5)
    # positives {1 (0-1), 1 (2-3)} vs negatives {2, 3, 1, 2}: P(pos < neg) = (2*3 + 2*0.5) / 8
    line = torch.tensor([[0.0], [1.0], [2.0], [3.0]])
    assert identity_auc(line, torch.tensor([0, 0, 1, 1])).item() == pytest.approx(7 / 8)
    assert mean_cross_cosine(torch.tensor([[1.0, 0.0], [2.0, 0.0], [3.0, 0.0]])).item() == pytest.approx(1.0)
    assert mean_cross_cosine(torch.tensor([[1.0, 0.0], [0.0, 1.0]])).item() == pytest.approx(0.0)
    table = torch.tensor([[1.0, 1.0], [1.0, -1.0]])  # mean row (1, 0): energy 2 of 4
    assert mean_share(table, dim=0).item() == pytest.approx(0.5)
    assert mean_share(torch.full((2, 3), 2.0), dim=None).item() == pytest.approx(1.0)


def test_the_loss_reports_identity_information_and_collapse():
    term = RPETripletTerm(num_patches=3, form="stable")
    term(_inputs(SEPARATED_SIM, POS, BIAS / 64))
    assert term.stats["auc"].item() == pytest.approx(1.0)  # each identity picks its own patches
    assert {"collapse", "pos_embed_mean_share", "rel_bias_mean_share"} <= set(term.stats)


def _sgd_steps(form: str, lr_times_weight: float, steps: int = 600) -> list[float]:
    """Plain SGD (lr 0.01, no momentum, no decay) at weight ``lr_times_weight / lr`` on free tables, 4
    identities x 2 images whose attended patches carry no identity (the CPU study's regime: the gap is
    negative on average); the mean pos_embed row norm per step."""
    g = torch.Generator().manual_seed(0)
    pos = (0.02 * torch.randn(12, 8, generator=g)).requires_grad_()
    bias = torch.zeros(2, 2, 12, 12, requires_grad=True)
    sim = torch.randn(4, 12, generator=g).repeat_interleave(2, 0) + 3.0 * torch.randn(8, 12, generator=g)
    term = RPETripletTerm(weight=lr_times_weight / 0.01, num_patches=4, form=form)
    optimizer = torch.optim.SGD([pos, bias], lr=0.01)
    norms = []
    for step in range(steps):
        out = Objective(rpe_triplet=term)(_inputs(sim, pos, bias, labels=torch.arange(8) // 2, step=step))
        optimizer.zero_grad()
        out.total.backward()
        optimizer.step()
        norms.append(out.stats["rpe_triplet/pos_embed_norm"].item())
    return norms


def test_the_naive_form_blows_up_above_a_step_size_threshold_and_the_soft_form_does_not():
    """The divergence the SGD study reproduces, on free tables: the naive loss is homogeneous of degree 2
    in the tables (its gradient is proportional to them), so an SGD step multiplies them by a factor set
    by lr x weight; below a threshold they level off (lr x weight 2: ~25x their start by step 300, then
    +7% in 300 steps), above it they grow geometrically (32: past 1e6x or not finite). The soft form's
    normalised hinge stops once met: at 32 its table jumps and then stays finite and constant."""
    settled, exploded, soft = _sgd_steps("naive", 2.0), _sgd_steps("naive", 32.0), _sgd_steps("soft", 32.0)
    assert max(settled) < 100 * settled[0] and settled[-1] < 1.1 * settled[300]
    assert not math.isfinite(max(exploded)) or max(exploded) > 1e6 * exploded[0]
    assert all(map(math.isfinite, soft)) and soft[-1] == pytest.approx(soft[300], rel=1e-3)
    assert max(soft) < 1e4 * soft[0]
