"""ID classifiers (reid/models/classifiers.py) against references written from the official formulas.

How we know the formulas: the references below transcribe, line by line (one-hot float masks, the same
order of operations, the input's device instead of the hard-coded ``device='cuda'``),
heshuting555/TransReID at commit dec55046fcdfadee14e2c28e2df89305d8f7557a, ``loss/metric_learning.py``
(``Arcface``, ``Cosface``, ``AMSoftmax``, ``CircleLoss``; ``make_model.py`` builds them with
``SOLVER.COSINE_SCALE 30`` / ``COSINE_MARGIN 0.5`` from ``config/defaults.py`` and calls
``classifier(feat, label)`` on the BNNeck feature in training only), and JDAI-CV/fast-reid at commit
c9bc3ceb2f7a6438b62fb515ea3df6d1e999e95d, ``fastreid/layers/any_softmax.py`` (``CircleSoftmax``) with the
cosine and ``N(0, 0.01^2)`` weight of ``fastreid/modeling/heads/embedding_head.py`` (``configs/Base-SBS.yml``:
scale 64, margin 0.35). Both were read with the fetch tool.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from torch import nn

from reid.config import CONFIG_DIR
from reid.models import ReIDNet, vit_tiny
from reid.models.classifiers import (
    AMSoftmax,
    ArcFace,
    Circle,
    CircleSoftmax,
    CosFace,
    LinearClassifier,
)
from reid.models.heads import BNNeckHead
from reid.models.jpm import JPMConfig
from reid.models.weights import load_pretrained
from reid.run import run
from tests.conftest import TINY_RUN
from tests.tasks.tiny_bot import bot_batch, tiny_bot_task

D, C, B = 16, 7, 12


# ---- references, from the official code ------------------------------------------------------------
def _one_hot(cosine: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    one_hot = torch.zeros(cosine.size(), device=cosine.device, dtype=cosine.dtype)
    return one_hot.scatter_(1, label.view(-1, 1).long(), 1)


def official_arcface(x, weight, label, s, m, easy_margin=False):
    cosine = F.linear(F.normalize(x), F.normalize(weight))
    sine = torch.sqrt(1.0 - torch.pow(cosine, 2))
    phi = cosine * math.cos(m) - sine * math.sin(m)
    if easy_margin:
        phi = torch.where(cosine > 0, phi, cosine)
    else:
        phi = torch.where(cosine > math.cos(math.pi - m), phi, cosine - math.sin(math.pi - m) * m)
    one_hot = _one_hot(cosine, label)
    return ((one_hot * phi) + ((1.0 - one_hot) * cosine)) * s


def official_cosface(x, weight, label, s, m):
    cosine = F.linear(F.normalize(x), F.normalize(weight))
    one_hot = _one_hot(cosine, label)
    return ((one_hot * (cosine - m)) + ((1.0 - one_hot) * cosine)) * s


def official_amsoftmax(x, w_dc, label, s, m):
    """``W`` is the official ``[in_features, out_features]`` parameter."""
    x_norm = torch.div(x, torch.norm(x, p=2, dim=1, keepdim=True).clamp(min=1e-12))
    w_norm = torch.div(w_dc, torch.norm(w_dc, p=2, dim=0, keepdim=True).clamp(min=1e-12))
    costh = torch.mm(x_norm, w_norm)
    delt_costh = torch.zeros(costh.size(), dtype=costh.dtype).scatter_(1, label.view(-1, 1), m)
    return s * (costh - delt_costh)


def official_circle(bn_feat, weight, targets, s, m):
    sim_mat = F.linear(F.normalize(bn_feat), F.normalize(weight))
    alpha_p = torch.clamp_min(-sim_mat.detach() + 1 + m, min=0.0)
    alpha_n = torch.clamp_min(sim_mat.detach() + m, min=0.0)
    s_p = s * alpha_p * (sim_mat - (1 - m))
    s_n = s * alpha_n * (sim_mat - m)
    one_hot = F.one_hot(targets, num_classes=weight.shape[0])
    return one_hot * s_p + (1.0 - one_hot) * s_n


def fastreid_circle_softmax(neck_feat, weight, targets, s, m):
    logits = F.linear(F.normalize(neck_feat), F.normalize(weight)).clone()
    alpha_p = torch.clamp_min(-logits.detach() + 1 + m, min=0.0)
    alpha_n = torch.clamp_min(logits.detach() + m, min=0.0)
    index = torch.where(targets != -1)[0]
    m_hot = torch.zeros(index.size()[0], logits.size()[1], dtype=logits.dtype)
    m_hot.scatter_(1, targets[index, None], 1)
    logits_p = alpha_p * (logits - (1 - m))
    logits_n = alpha_n * (logits - m)
    logits[index] = logits_p[index] * m_hot + logits_n[index] * (1 - m_hot)
    return logits.mul_(s)


def _inputs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, D, generator=g, dtype=torch.float64), torch.randint(0, C, (B,), generator=g)


@pytest.fixture(autouse=True)
def _seeded() -> None:
    """Every test builds its heads from the same draws (their weights come from torch's global RNG): the
    value tests need rows on both sides of their branches, which a random initialisation may not give."""
    torch.manual_seed(0)


def _double(module: nn.Module) -> nn.Module:
    return module.double()


# ---- values -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("scale, margin", [(30.0, 0.5), (30.0, 0.3), (64.0, 1.2)])
def test_arcface_equals_the_official_formula_on_both_sides_of_th(scale, margin):
    """Rows 0-3 point against their target's weight (theta_y > pi - m: the ``cos - mm`` fallback)."""
    head = _double(ArcFace(D, C, scale=scale, margin=margin))
    x, y = _inputs()
    x[:4] = -head.weight[y[:4]].detach() + 0.01 * x[:4]
    cos_y = head.cosine(x).gather(1, y[:, None])
    assert (cos_y < math.cos(math.pi - margin)).sum() >= 4 and (cos_y > 0).any()
    expected = official_arcface(x, head.weight, y, scale, margin)
    torch.testing.assert_close(head(x, y), expected, rtol=1e-6, atol=1e-6)


def test_arcface_easy_margin_equals_the_official_formula():
    head = _double(ArcFace(D, C, scale=30.0, margin=0.5, easy_margin=True))
    x, y = _inputs(1)
    assert (head.cosine(x).gather(1, y[:, None]) < 0).any()  # the branch that keeps cos theta
    expected = official_arcface(x, head.weight, y, 30.0, 0.5, easy_margin=True)
    torch.testing.assert_close(head(x, y), expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("margin", [0.0, 0.35, 0.5])
def test_cosface_equals_the_official_formula(margin):
    head = _double(CosFace(D, C, scale=30.0, margin=margin))
    x, y = _inputs()
    expected = official_cosface(x, head.weight, y, 30.0, margin)
    torch.testing.assert_close(head(x, y), expected, rtol=1e-6, atol=1e-6)


def test_amsoftmax_equals_the_official_formula_on_its_transposed_parameter():
    head = _double(AMSoftmax(D, C, scale=30.0, margin=0.5))
    x, y = _inputs()
    w_dc = head.weight.t()  # the official [in_features, out_features] W
    torch.testing.assert_close(head(x, y), official_amsoftmax(x, w_dc, y, 30.0, 0.5), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("scale, margin", [(30.0, 0.5), (256.0, 0.25), (64.0, 0.0)])
def test_circle_equals_the_official_transreid_formula(scale, margin):
    head = _double(Circle(D, C, scale=scale, margin=margin))
    x, y = _inputs()
    expected = official_circle(x, head.weight, y, scale, margin)
    torch.testing.assert_close(head(x, y), expected, rtol=1e-6, atol=1e-6)


def test_circle_softmax_equals_fast_reids_formula_and_transreids():
    """The two Circle implementations give the same logits (fast-reid scales after combining: rounding)."""
    head = _double(CircleSoftmax(D, C))
    assert (head.scale, head.margin) == (64.0, 0.35)
    x, y = _inputs()
    ours = head(x, y)
    for reference in (fastreid_circle_softmax, official_circle):
        expected = reference(x, head.weight, y, 64.0, 0.35)
        torch.testing.assert_close(ours, expected, rtol=1e-6, atol=1e-6, msg=reference.__name__)


@pytest.mark.parametrize(
    "build, reference",
    [
        (ArcFace, lambda x, w, y: official_arcface(x, w, y, 30.0, 0.5)),
        (CosFace, lambda x, w, y: official_cosface(x, w, y, 30.0, 0.5)),
        (AMSoftmax, lambda x, w, y: official_amsoftmax(x, w.t(), y, 30.0, 0.5)),
        (Circle, lambda x, w, y: official_circle(x, w, y, 30.0, 0.5)),
    ],
)
def test_cross_entropy_gradients_equal_the_official_ones(build, reference):
    """Same gradients too: Circle's ``alpha`` weights are detached, as in the official code."""
    head = _double(build(D, C, scale=30.0, margin=0.5))
    x, y = _inputs(2)
    x.requires_grad_(True)
    ours = torch.autograd.grad(F.cross_entropy(head(x, y), y), (x, head.weight))
    official = torch.autograd.grad(F.cross_entropy(reference(x, head.weight, y), y), (x, head.weight))
    for got, expected in zip(ours, official, strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-8)


def test_official_class_defaults():
    """metric_learning.py's own defaults (make_model overrides them with 30 / 0.5: conf/model/classifier)."""
    assert (ArcFace(D, C).scale, ArcFace(D, C).margin, ArcFace(D, C).easy_margin) == (30.0, 0.3, False)
    assert (CosFace(D, C).scale, CosFace(D, C).margin) == (30.0, 0.3)
    assert (AMSoftmax(D, C).scale, AMSoftmax(D, C).margin) == (30.0, 0.3)
    assert (Circle(D, C).scale, Circle(D, C).margin) == (256.0, 0.25)


@pytest.mark.parametrize(
    "build, official_init",
    [
        (ArcFace, lambda: nn.init.xavier_uniform_(torch.empty(C, D))),
        (CosFace, lambda: nn.init.xavier_uniform_(torch.empty(C, D))),
        (AMSoftmax, lambda: nn.init.xavier_normal_(torch.empty(D, C), gain=1).t()),
        (Circle, lambda: nn.init.kaiming_uniform_(torch.empty(C, D), a=math.sqrt(5))),
        (CircleSoftmax, lambda: nn.init.normal_(torch.empty(C, D), std=0.01)),
    ],
)
def test_weights_start_as_the_official_initialisation(build, official_init):
    torch.manual_seed(3)
    expected = official_init()
    torch.manual_seed(3)
    assert torch.equal(build(D, C).weight.detach(), expected)


def test_linear_classifier_is_bit_identical_to_the_former_head():
    """Same draws for the same seed as ``nn.Linear(bias=False)`` + ``normal_(std=0.001)`` (the former
    ``heads.id_classifier``, official ``weights_init_classifier``), the same logits, labels ignored."""
    torch.manual_seed(5)
    former = nn.Linear(D, C, bias=False)
    nn.init.normal_(former.weight, std=0.001)
    torch.manual_seed(5)
    linear = LinearClassifier(D, C)
    assert torch.equal(linear.weight, former.weight) and linear.bias is None
    x, y = torch.randn(B, D), torch.randint(0, C, (B,))
    assert torch.equal(linear(x, y), former(x)) and torch.equal(linear(x), former(x))
    assert list(linear.state_dict()) == ["weight"]


@pytest.mark.parametrize("build", [ArcFace, CosFace, AMSoftmax])
def test_an_additive_margin_changes_only_the_target_logit(build):
    head = _double(build(D, C, scale=30.0, margin=0.5))
    x, y = _inputs()
    changed = head(x, y) != head(x)
    target = F.one_hot(y, C).bool()
    assert torch.equal(changed, target)
    assert (head(x, y)[target] < head(x)[target]).all()  # the margin lowers the target logit


def test_circle_reweights_every_logit():
    head = _double(Circle(D, C, scale=30.0, margin=0.25))
    x, y = _inputs()
    assert (head(x, y) != head(x)).all()


@pytest.mark.parametrize("build", [ArcFace, CosFace, AMSoftmax, Circle, CircleSoftmax])
def test_without_labels_the_logits_are_the_scaled_cosine(build):
    head = _double(build(D, C))
    x, _ = _inputs()
    expected = head.scale * F.normalize(x) @ F.normalize(head.weight).t()
    torch.testing.assert_close(head(x), expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("build", [LinearClassifier, ArcFace, CosFace, AMSoftmax, Circle, CircleSoftmax])
def test_gradients_reach_features_and_weights(build):
    torch.manual_seed(0)
    head = build(D, C)
    x = torch.randn(B, D, requires_grad=True)
    y = torch.randint(0, C, (B,))
    F.cross_entropy(head(x, y), y).backward()
    for name, grad in (("features", x.grad), ("weight", head.weight.grad)):
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0, name


def test_training_lowers_the_margin_loss():
    """A few SGD steps on separable data drive the ArcFace cross-entropy down."""
    torch.manual_seed(0)
    centres = torch.randn(C, D)
    x = centres.repeat_interleave(4, 0) + 0.1 * torch.randn(4 * C, D)
    y = torch.arange(C).repeat_interleave(4)
    head = ArcFace(D, C, scale=30.0, margin=0.5)
    optimizer = torch.optim.SGD(head.parameters(), lr=0.5)
    losses = []
    for _ in range(30):
        loss = F.cross_entropy(head(x, y), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


# ---- bad input ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "build, kwargs, key",
    [
        (ArcFace, {"scale": 0.0}, "scale"),
        (CosFace, {"scale": -1.0}, "scale"),
        (ArcFace, {"margin": -0.1}, "margin"),
        (ArcFace, {"margin": math.pi / 2}, "margin"),
        (CosFace, {"margin": 1.0}, "margin"),
        (AMSoftmax, {"margin": 1.5}, "margin"),
        (Circle, {"margin": 0.6}, "margin"),
        (CircleSoftmax, {"margin": -0.05}, "margin"),
    ],
)
def test_bad_scale_or_margin_names_the_key(build, kwargs, key):
    with pytest.raises(ValueError, match=rf"{build.__name__}: {key} \(model\.classifier\.{key}\) must be"):
        build(D, C, **kwargs)


def test_bad_sizes_and_labels_are_refused():
    with pytest.raises(ValueError, match="num_classes must be >= 1"):
        LinearClassifier(D, 0)
    with pytest.raises(ValueError, match="in_dim"):
        ArcFace(0, C)
    with pytest.raises(ValueError, match=r"labels must be \[B\]"):
        ArcFace(D, C)(torch.randn(B, D), torch.zeros(B - 1, dtype=torch.long))


# ---- in the networks and the task -------------------------------------------------------------------------
def _vit(seed: int = 0):
    torch.manual_seed(seed)
    return vit_tiny(img_size=(32, 32), embed_dim=24, num_heads=2, depth=2)


def test_every_head_of_a_jpm_net_gets_the_classifier_with_the_labels():
    jpm = JPMConfig(shift=1, groups=2, num_local=2)
    net = ReIDNet(_vit(), C, jpm=jpm, classifier=lambda d, c: ArcFace(d, c, scale=30.0, margin=0.5)).train()
    heads = [net.global_head, *net.local_heads]
    assert all(isinstance(head.classifier, ArcFace) for head in heads)
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    out = net(x, labels=y)
    F.cross_entropy(torch.cat(out.logits), y.repeat(3)).backward()
    no_grad = [n for n, p in net.named_parameters() if p.requires_grad and p.grad is None]
    assert not no_grad, f"parameters without gradient: {no_grad}"
    with torch.no_grad():  # the logits are each head's classifier on its neck feature, with the labels
        neck = [head.neck(f) for head, f in zip(heads, out.feats, strict=True)]
    for logits, head, f in zip(out.logits, heads, neck, strict=True):
        torch.testing.assert_close(logits, head.classifier(f, y), rtol=1e-5, atol=1e-5)
    assert net.eval()(x).logits == ()  # no classifier at evaluation


def test_the_pass_cls_parts_head_gets_the_classifier_on_its_2d_feature():
    torch.manual_seed(0)
    backbone = vit_tiny(img_size=(32, 32), embed_dim=24, num_heads=2, depth=2, num_parts=3)
    net = ReIDNet(backbone, C, feature="cls_parts", classifier=CosFace).train()
    head = net.global_head.classifier
    assert isinstance(head, CosFace) and head.weight.shape == (C, 48)
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    with torch.no_grad():
        labelled, plain = net(x, labels=y).logits[0], net(x).logits[0]
    assert torch.equal(labelled != plain, F.one_hot(y, C).bool())  # the labels reached the margin


def test_state_dict_keys_and_shapes_do_not_depend_on_the_classifier():
    jpm = JPMConfig(shift=1, groups=2, num_local=2)
    linear = ReIDNet(_vit(), C, jpm=jpm).state_dict()
    for build in (ArcFace, CosFace, AMSoftmax, Circle, CircleSoftmax):
        margin = ReIDNet(_vit(), C, jpm=jpm, classifier=build).state_dict()
        assert {k: v.shape for k, v in margin.items()} == {k: v.shape for k, v in linear.items()}
    assert [k for k in linear if "classifier" in k] == [
        "global_head.classifier.weight",
        "local_heads.0.classifier.weight",
        "local_heads.1.classifier.weight",
    ]
    assert isinstance(BNNeckHead(D, C).classifier, LinearClassifier)


def _official_build_transformer(net: ReIDNet) -> dict[str, torch.Tensor]:
    """Our net without JPM in the official ``build_transformer`` names (``base.*``, ``bottleneck.*``,
    ``classifier.weight``; ``base.pos_embed`` with the [CLS] position first)."""
    state = {k: v.detach().clone() for k, v in net.state_dict().items()}
    out = {
        "base." + k.removeprefix("backbone."): v
        for k, v in state.items()
        if k.startswith("backbone.") and k not in ("backbone.cls_pos", "backbone.pos_embed")
    }
    out["base.pos_embed"] = torch.cat([state["backbone.cls_pos"], state["backbone.pos_embed"]], dim=1)
    out.update({k.removeprefix("global_head."): v for k, v in state.items() if k.startswith("global_head.")})
    return out


@pytest.mark.parametrize("build", [None, ArcFace, Circle])
def test_an_official_transreid_checkpoint_loads_with_any_classifier(tmp_path, build):
    """An official Arcface / CircleLoss checkpoint holds ``classifier.weight`` [C, D], as a softmax one."""
    source = ReIDNet(_vit(), C, classifier=build)
    torch.save(_official_build_transformer(source), tmp_path / "transformer_120.pth")
    target = ReIDNet(_vit(seed=1), C, classifier=build)
    report = load_pretrained(target, tmp_path / "transformer_120.pth")
    assert report.layout == "transreid" and report.missing == [] and report.unexpected == []
    torch.testing.assert_close(target.state_dict(), source.state_dict())


def test_bot_task_builds_the_configured_classifier_and_trains_it_with_the_labels():
    config = {"_target_": "reid.models.classifiers.CosFace", "_partial_": True, "scale": 16.0, "margin": 0.35}
    task = tiny_bot_task(classifier=config).train()
    head = task.net.global_head.classifier
    assert isinstance(head, CosFace) and (head.scale, head.margin) == (16.0, 0.35)
    assert task.hparams["classifier"]["_target_"].endswith("CosFace")
    seen = []
    head.register_forward_pre_hook(lambda module, args: seen.append(args[1]))
    batch = bot_batch()
    task.training_step(batch, 0).backward()
    assert len(seen) == 1 and torch.equal(seen[0], batch["pid"])
    assert head.weight.grad is not None and head.weight.grad.abs().sum() > 0
    # the task completes the classifier per head: a config that builds it whole has no sizes to build with
    whole = {key: value for key, value in config.items() if key != "_partial_"}
    with pytest.raises(InstantiationException, match=r"(?s)missing 2 required .*full_key: classifier"):
        tiny_bot_task(classifier=whole)


def test_a_bad_classifier_value_fails_at_construction_naming_the_key():
    config = {"_target_": "reid.models.classifiers.ArcFace", "_partial_": True, "scale": 0.0}
    with pytest.raises((ValueError, InstantiationException), match=r"model\.classifier\.scale"):
        tiny_bot_task(classifier=config)


CLASSIFIER_OPTIONS = {
    "linear": LinearClassifier,
    "arcface": ArcFace,
    "cosface": CosFace,
    "amsoftmax": AMSoftmax,
    "circle": Circle,
    "circle_softmax": CircleSoftmax,
}


def test_every_classifier_option_is_listed_here():
    options = {path.stem for path in (CONFIG_DIR / "model" / "classifier").glob("*.yaml")}
    assert options == set(CLASSIFIER_OPTIONS)


@pytest.mark.parametrize("option", sorted(CLASSIFIER_OPTIONS))
@pytest.mark.parametrize("model", ["transreid", "snr_r50"])
def test_a_classifier_option_composes_over_a_model_and_builds(compose_config, model, option):
    """``model=<model> model/classifier=<option>``: the option's file lands in ``model.classifier``
    (the rest of the model config unchanged) and builds the classifier of a head."""
    plain = compose_config(f"model={model}").model
    cfg = compose_config(f"model={model}", f"model/classifier={option}").model
    assert plain.classifier is None
    rest = {k for k in plain if k != "classifier"}
    assert {k: cfg[k] for k in rest} == {k: plain[k] for k in rest} and set(cfg) == set(plain)
    head = instantiate(cfg.classifier, _partial_=True)(D, C)
    assert type(head) is CLASSIFIER_OPTIONS[option]
    transreid_types = ("arcface", "cosface", "amsoftmax", "circle")  # SOLVER.COSINE_SCALE / _MARGIN
    if option in transreid_types:
        assert (head.scale, head.margin) == (30.0, 0.5)


@pytest.mark.parametrize(
    "overrides, classifier",
    [
        (["model/classifier=arcface"], ArcFace),
        (["model=bot_tiny", "model.schedule.warmup_epochs=0", "model/classifier=circle"], Circle),
    ],
    ids=["vit_tiny-arcface", "bot_tiny-circle"],
)
def test_a_tiny_run_with_a_margin_classifier_trains_and_evaluates(compose_config, overrides, classifier):
    cfg = compose_config(*TINY_RUN, "trainer.max_epochs=1", *overrides)
    summary = run(cfg)
    out = Path(cfg.paths.output_dir)
    assert 0.0 < json.loads((out / "results.json").read_text())["test"]["mAP"] <= 100.0
    checkpoint = torch.load(summary["tested_weights"]["checkpoint"], map_location="cpu", weights_only=True)
    target = checkpoint["hyper_parameters"]["classifier"]["_target_"]
    assert target == f"reid.models.classifiers.{classifier.__name__}"
    assert "net.global_head.classifier.weight" in checkpoint["state_dict"]
    metrics = (out / "csv" / "metrics.csv").read_text().splitlines()
    assert "train/loss_id" in metrics[0].split(",")
