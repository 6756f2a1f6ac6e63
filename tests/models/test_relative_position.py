"""Relative position bias: index tables by hand, BEiT equivalence, zero init = the plain ViT, fused
attention, JPM's shuffled sequences, table resizing, checkpoints, and the ReID task with SIE/JPM/PASS."""

import math

import pytest
import torch
import torch.nn.functional as F
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import OmegaConf
from timm.models import beit

from reid.config_schema import with_settings_targets
from reid.config_store import compose_option
from reid.data.records import DatasetInfo
from reid.evaluation import EvalConfig
from reid.models import ReIDNet, vit_tiny
from reid.models.jpm import JigsawPatchModule, JPMConfig
from reid.models.position import resize_pos_embed
from reid.models.relative_position import (
    RelativePositionBias,
    RelPosBiasConfig,
    num_relative_entries,
    relative_position_index,
    resize_relative_table,
)
from reid.models.weights import load_pretrained
from reid.tasks.from_config import build_task
from reid.tools.export_backbone import architecture, build_backbone

DIM, HEADS, DEPTH = 24, 2, 2

PER_LAYER = RelPosBiasConfig(shared=False)
JPM_1 = JPMConfig(shift=1, groups=2, num_local=2)
JPM_2 = JPMConfig(shift=2, groups=2, num_local=2)


def _vit(img_size=(32, 32), seed=0, **kw):
    torch.manual_seed(seed)
    return vit_tiny(img_size=img_size, embed_dim=DIM, num_heads=HEADS, depth=DEPTH, **kw)


def _net(img_size=(48, 32), seed=0, jpm=None, **kw):
    backbone = _vit(img_size, seed=seed, **kw)
    torch.manual_seed(seed + 100)
    feature = "cls_parts" if kw.get("num_parts") else "cls"
    return ReIDNet(backbone, 5, jpm=jpm, feature=feature)


def _randomise_tables(model, seed=3):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("table"):
                param.copy_(torch.randn(param.shape, generator=g))


# ---- index tables -----------------------------------------------------------------------------------
def test_index_2x2_by_hand():
    """2 x 2 grid, patches (0,0) (0,1) (1,0) (1,1): R = 3 * 3 = 9 offsets, index (dy + 1) * 3 + (dx + 1);
    [CLS] -> patch 9, patch -> [CLS] 10, [CLS] -> [CLS] 11 (written out by hand)."""
    expected = torch.tensor(
        [
            [11, 9, 9, 9, 9],
            [10, 4, 3, 1, 0],
            [10, 5, 4, 2, 1],
            [10, 7, 6, 4, 3],
            [10, 8, 7, 5, 4],
        ]
    )
    assert torch.equal(relative_position_index((2, 2), num_prefix=1), expected)
    assert torch.equal(relative_position_index((2, 2), num_prefix=0), expected[1:, 1:])
    assert num_relative_entries((2, 2), 1) == 12


def test_index_3x4_spot_checks():
    """3 x 4 grid (REFERENCE.md: (y1 - y2 + H - 1)(2W - 1) + (x1 - x2 + W - 1), 2W - 1 = 7, R = 35)."""
    index = relative_position_index((3, 4), num_prefix=1)
    assert index.shape == (13, 13)

    def at(a, b):  # patch (y, x) -> token 1 + 4y + x
        return int(index[1 + 4 * a[0] + a[1], 1 + 4 * b[0] + b[1]])

    assert at((0, 0), (2, 3)) == 0  # dy = -2, dx = -3: the first entry
    assert at((2, 3), (0, 0)) == 34  # dy = 2, dx = 3: the last offset entry
    assert at((1, 2), (1, 2)) == 17  # zero offset: the centre 2 * 7 + 3
    assert at((0, 3), (2, 0)) == 6  # dy = -2, dx = 3
    assert at((2, 0), (0, 3)) == 28  # dy = 2, dx = -3
    assert at((1, 1), (0, 1)) == at((2, 3), (1, 3)) == 3 * 7 + 3  # same offset, same entry
    assert sorted(index[1:, 1:].unique().tolist()) == list(range(35))  # every offset occurs
    assert int(index[0, 5]) == 35 and int(index[5, 0]) == 36 and int(index[0, 0]) == 37


@pytest.mark.parametrize("grid", [(2, 2), (3, 4), (21, 10)])
def test_one_prefix_token_is_beits_index(grid):
    """P = 1 gives BEiT's three extra entries exactly: timm's ``beit.gen_relative_position_index`` (a port
    of microsoft/unilm beit ``RelativePositionBias``) is compared entry by entry, and timm's BEiT attention
    ``_get_rel_pos_bias`` with our table gives our bias."""
    assert torch.equal(relative_position_index(grid, 1), beit.gen_relative_position_index(grid))
    ours = RelativePositionBias(grid, num_heads=3, num_prefix=1)
    _randomise_tables(ours)
    attn = beit.Attention(dim=12, num_heads=3, window_size=grid)
    with torch.no_grad():
        attn.relative_position_bias_table.copy_(ours.table)
    torch.testing.assert_close(ours(), attn._get_rel_pos_bias()[0], rtol=0, atol=0)


def test_pass_part_tokens_get_their_own_entries():
    """P = 4 ([CLS] + 3 PASS part tokens) on a 2 x 2 grid: R = 9; prefix i -> patch 9 + i, patch -> prefix j
    13 + j, prefix i -> prefix j 17 + 4i + j; 9 + 8 + 16 = 33 entries."""
    index = relative_position_index((2, 2), num_prefix=4)
    assert num_relative_entries((2, 2), 4) == 33 and index.shape == (8, 8)
    assert index[:4, 4:].tolist() == [[9] * 4, [10] * 4, [11] * 4, [12] * 4]
    assert index[4:, :4].tolist() == [[13, 14, 15, 16]] * 4
    assert index[:4, :4].tolist() == [[17, 18, 19, 20], [21, 22, 23, 24], [25, 26, 27, 28], [29, 30, 31, 32]]
    assert torch.equal(index[4:, 4:], relative_position_index((2, 2), 0))
    assert index.unique().numel() == 33  # every entry is read


def test_bias_of_positions_indexes_the_full_bias():
    table = RelativePositionBias((3, 2), num_heads=2, num_prefix=1)
    _randomise_tables(table)
    full = table()
    assert full.shape == (2, 7, 7)
    positions = torch.tensor([0, 5, 2, 6])
    torch.testing.assert_close(table(positions), full[:, positions][:, :, positions], rtol=0, atol=0)
    batched = torch.stack([positions, torch.tensor([0, 1, 4, 3])])
    out = table(batched)
    assert out.shape == (2, 2, 4, 4)
    torch.testing.assert_close(out[1], full[:, [0, 1, 4, 3]][:, :, [0, 1, 4, 3]], rtol=0, atol=0)
    torch.testing.assert_close(table.patch_bias(), full[:, 1:, 1:], rtol=0, atol=0)
    with pytest.raises(ValueError, match="int64"):
        table(positions.float())


def test_the_config_mapping_becomes_the_settings_dataclass_and_bad_values_are_named():
    """``model.backbone.rel_pos_bias={shared: true}`` reaches the ViT as a RelPosBiasConfig: the backbone's
    partial node is given the dataclass ``_target_`` its factory's class annotates (issue 32: no coercion in
    the model); a mapping passed by hand, an unknown key or a non-boolean is refused naming the key."""
    node = {"_target_": "reid.models.vit.vit_tiny", "_partial_": True, "rel_pos_bias": {"shared": True}}
    typed = with_settings_targets(node)
    target = "reid.models.relative_position.RelPosBiasConfig"
    assert typed["rel_pos_bias"] == {"_target_": target, "shared": True}
    assert instantiate(typed)(depth=1).rel_pos_config == RelPosBiasConfig(shared=True)
    assert with_settings_targets({**node, "rel_pos_bias": None})["rel_pos_bias"] is None
    with pytest.raises(InstantiationException, match="unexpected keyword argument 'share'"):
        instantiate(with_settings_targets({**node, "rel_pos_bias": {"share": True}}))(depth=1)
    with pytest.raises(TypeError, match=r"rel_pos_bias\.shared: expected true or false"):
        RelPosBiasConfig(shared="yes")
    with pytest.raises(TypeError, match=r"rel_pos_bias: expected a reid\.models\.relative_position\."):
        vit_tiny(rel_pos_bias={"shared": True})


# ---- the ViT with a bias ------------------------------------------------------------------------------
@pytest.mark.parametrize("shared", [False, True])
def test_zero_tables_compute_the_plain_vit(shared):
    """Zero-initialised tables: same parameters as the plain ViT (the tables draw no random numbers) and the
    same outputs in eval and train mode. Not bit-identical: SDPA with a (zero) mask takes another code
    path than without one, which differs by float rounding (~1e-7)."""
    plain, rpe = _net(), _net(rel_pos_bias=RelPosBiasConfig(shared=shared))
    rpe_state = rpe.state_dict()
    for key, value in plain.state_dict().items():
        assert torch.equal(value, rpe_state[key]), key
    tables = sorted(k for k in rpe_state if k not in plain.state_dict())
    expected = [f"backbone.rel_pos.{i}.table" for i in range(1 if shared else DEPTH)]
    assert tables == expected and all(float(rpe_state[k].abs().max()) == 0 for k in tables)
    images = torch.randn(3, 3, 48, 32)
    for mode in (False, True):
        plain.train(mode), rpe.train(mode)
        a, b = plain(images), rpe(images)
        torch.testing.assert_close(b.embedding, a.embedding, rtol=1e-5, atol=1e-6)
        for x, y in zip(a.logits, b.logits, strict=True):
            torch.testing.assert_close(y, x, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shared", [False, True])
def test_gradients_reach_every_table(shared):
    net = _net(rel_pos_bias=RelPosBiasConfig(shared=shared), jpm=JPM_2).train()
    out = net(torch.randn(4, 3, 48, 32))
    sum(f.pow(2).sum() for f in out.feats).backward()
    tables = [(n, p) for n, p in net.named_parameters() if n.endswith("table")]
    assert len(tables) == (1 if shared else DEPTH + 1)  # per-layer: the JPM branch has its own copy
    for name, param in tables:
        assert param.grad is not None and float(param.grad.abs().sum()) > 0, name
    heads = ("global_head.", "local_heads.")  # not in this loss
    no_grad = [n for n, p in net.named_parameters() if p.grad is None and not n.startswith(heads)]
    assert not no_grad, no_grad


def test_no_weight_decay_lists_the_tables():
    net = _net(rel_pos_bias=PER_LAYER, jpm=JPM_2)
    names = net.no_weight_decay()
    assert {"backbone.rel_pos.0.table", "backbone.rel_pos.1.table", "jpm.rel_pos.table"} <= names
    assert not any("rel_pos" in n for n in _net().no_weight_decay())


class _SpySDPA:
    """Records the arguments ``F.scaled_dot_product_attention`` is called with, then calls it."""

    def __init__(self, monkeypatch):
        self.calls = []
        self.original = F.scaled_dot_product_attention
        monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", self)

    def __call__(self, q, k, v, attn_mask=None, **kw):
        self.calls.append((q, attn_mask))
        return self.original(q, k, v, attn_mask=attn_mask, **kw)


@pytest.mark.parametrize("shared", [False, True])
def test_fused_attention_receives_the_bias_as_mask(monkeypatch, shared):
    vit = _vit(rel_pos_bias=RelPosBiasConfig(shared=shared)).eval()
    _randomise_tables(vit)
    spy = _SpySDPA(monkeypatch)
    with torch.no_grad():
        vit(torch.randn(2, 3, 32, 32))
    assert len(spy.calls) == DEPTH  # every block went through the fused kernel
    for i, (_, mask) in enumerate(spy.calls):
        expected = vit.rel_pos[0 if shared else i]()
        torch.testing.assert_close(mask, expected, rtol=0, atol=0)
    if not shared:
        assert not torch.equal(spy.calls[0][1], spy.calls[1][1])
    plain_spy = _SpySDPA(monkeypatch)
    with torch.no_grad():
        _vit().eval()(torch.randn(2, 3, 32, 32))
    assert [mask for _, mask in plain_spy.calls] == [None] * DEPTH  # no bias: no mask, as before


def test_bf16_autocast_casts_the_mask(monkeypatch):
    """Under autocast the mask has the queries' dtype (CUDA's SDPA refuses a float32 mask for bf16 q)."""
    net = _net(rel_pos_bias=PER_LAYER, jpm=JPM_2).train()
    spy = _SpySDPA(monkeypatch)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = net(torch.randn(2, 3, 48, 32))
    assert len(spy.calls) == DEPTH + 1  # backbone blocks and the JPM branch
    for q, mask in spy.calls:
        assert q.dtype == torch.bfloat16 and mask.dtype == torch.bfloat16
    assert torch.isfinite(out.embedding).all()


# ---- JPM --------------------------------------------------------------------------------------------
def _branch_by_hand(jpm, tokens, positions, full_bias):
    """One local branch: [CLS] + the tokens at ``positions`` through the block with the full bias matrix
    indexed by those positions by hand."""
    sequence = tokens[:, positions]
    mask = full_bias[:, positions][:, :, positions]
    return jpm.norm(jpm.block(sequence, attn_mask=mask))[:, 0]


@pytest.mark.parametrize("num_parts", [0, 3])
def test_jpm_local_bias_follows_original_positions(num_parts):
    """3 x 2 grid, 6 patches; shift 2 rotates by 1: [1, 2, 3, 4, 5, 0]; 2 groups read column-wise:
    [1, 4, 2, 5, 3, 0]; chunks [1, 4, 2] and [5, 3, 0]. With P prefix tokens the positions in the natural
    order are [0, P + 1, P + 4, P + 2] and [0, P + 5, P + 3, P + 0]."""
    p = 1 + num_parts
    backbone = _vit((48, 32), rel_pos_bias=RelPosBiasConfig(shared=False), num_parts=num_parts).eval()
    _randomise_tables(backbone)
    rel_pos = backbone.rel_pos_of(-1)
    jpm = JigsawPatchModule(backbone.blocks[-1], backbone.norm, JPMConfig(2, 2, 2), rel_pos).eval()
    hand = torch.tensor([[0, p + 1, p + 4, p + 2], [0, p + 5, p + 3, p + 0]])
    assert torch.equal(jpm.local_positions(6, p), hand)
    tokens = torch.randn(3, p + 6, DIM)
    full = rel_pos()
    feats = jpm(tokens, p)
    for j in range(2):
        expected = _branch_by_hand(jpm, tokens, hand[j], full)
        torch.testing.assert_close(feats[j], expected, rtol=1e-5, atol=1e-5)
    # the bias matters: the same branch without it gives another feature
    assert not torch.allclose(feats[0], jpm.norm(jpm.block(tokens[:, hand[0]]))[:, 0], atol=1e-3)


def test_jpm_table_copy_per_layer_and_shared_table():
    jpm_cfg = JPMConfig(shift=2, groups=2, num_local=2)
    per_layer = _net(rel_pos_bias=RelPosBiasConfig(shared=False), jpm=jpm_cfg)
    _randomise_tables(per_layer.backbone)
    assert not torch.equal(per_layer.jpm.rel_pos.table, per_layer.backbone.rel_pos[-1].table)
    per_layer.reset_local_branch()  # copied like the block weights
    assert torch.equal(per_layer.jpm.rel_pos.table, per_layer.backbone.rel_pos[-1].table)
    assert per_layer.jpm.rel_pos.table is not per_layer.backbone.rel_pos[-1].table

    shared = _net(rel_pos_bias=RelPosBiasConfig(shared=True), jpm=jpm_cfg).eval()
    assert shared.jpm.rel_pos is None and not any(k.startswith("jpm.rel_pos") for k in shared.state_dict())
    _randomise_tables(shared)
    images = torch.randn(2, 3, 48, 32)
    with torch.no_grad():
        tokens = shared.backbone.forward_tokens(images, depth=-1)
        local = shared(images).feats[1:]
        full = shared.backbone.attn_bias(-1)
        hand = shared.jpm.local_positions(6, 1)
        for j in range(2):  # the JPM branch reads the backbone's shared table
            expected = _branch_by_hand(shared.jpm, tokens, hand[j], full)
            torch.testing.assert_close(local[j], expected, rtol=1e-5, atol=1e-5)


# ---- resizing ---------------------------------------------------------------------------------------
def test_table_resize_keeps_a_smooth_function_and_prefix_entries():
    """A table that is a smooth function of the offset (in table-image coordinates (i + 0.5) / size,
    which ``align_corners=False`` preserves), one function per head, resizes to nearly the same function
    (max error 0.030 at the border; bilinear or ``align_corners=True`` give 0.052, nearest 0.24); the
    prefix entries are copied exactly."""
    old, new, p = (6, 5), (9, 7), 2

    def smooth(grid, phase):
        rows, cols = 2 * grid[0] - 1, 2 * grid[1] - 1
        u = (torch.arange(rows) + 0.5) / rows
        v = (torch.arange(cols) + 0.5) / cols
        return (torch.cos(math.pi * u[:, None] + phase) * torch.sin(math.pi * v[None, :])).flatten()

    extra = torch.randn(2 * p + p * p, 2)
    table = torch.cat([torch.stack([smooth(old, 0.0), smooth(old, 1.0)], dim=1), extra])
    resized = resize_relative_table(table, old, new, p)
    assert resized.shape == (num_relative_entries(new, p), 2)
    offsets = (2 * new[0] - 1) * (2 * new[1] - 1)
    for head, phase in enumerate((0.0, 1.0)):
        error = (resized[:offsets, head] - smooth(new, phase)).abs().max()
        assert error < 0.04, (head, float(error))
    assert torch.equal(resized[offsets:], extra)
    assert torch.equal(resize_relative_table(table, old, old, p), table)
    with pytest.raises(ValueError, match="rows"):
        resize_relative_table(table[:-1], old, new, p)


def test_dino_local_crop_input_runs_on_a_resized_table(monkeypatch):
    """A 32 x 16 crop of a 64 x 32 model: 2 x 1 patches instead of 4 x 2; the bias is the table resized to
    the crop's grid, indexed for that grid; gradients still reach the tables."""
    vit = _vit((64, 32), rel_pos_bias=RelPosBiasConfig(shared=False), num_parts=3)
    _randomise_tables(vit)
    spy = _SpySDPA(monkeypatch)
    out = vit.forward_features(torch.randn(2, 3, 32, 16))
    assert out.shape == (2, 4 + 2, DIM)
    table = resize_relative_table(vit.rel_pos[0].table, (4, 2), (2, 1), 4)
    expected = table[relative_position_index((2, 1), 4)].permute(2, 0, 1)
    torch.testing.assert_close(spy.calls[0][1], expected, rtol=0, atol=0)
    out.sum().backward()
    assert all(float(t.table.grad.abs().sum()) > 0 for t in vit.rel_pos)


# ---- aux outputs ------------------------------------------------------------------------------------
def test_training_aux_outputs():
    net = _net(rel_pos_bias=RelPosBiasConfig(shared=False)).train()
    _randomise_tables(net)
    images = torch.randn(3, 3, 48, 32)
    aux = net(images).aux
    assert set(aux) == {"cls_similarity", "pos_embed", "rel_pos_bias"}
    tokens, grid = net.backbone.forward_tokens_on_grid(images, depth=-1)
    final = net.backbone.norm(net.backbone.forward_block(-1, tokens, grid))
    cos = F.normalize(final[:, 1:], dim=-1) @ F.normalize(final[:, 0], dim=-1)[:, :, None]
    torch.testing.assert_close(aux["cls_similarity"], cos[..., 0], rtol=1e-5, atol=1e-5)
    assert aux["cls_similarity"].requires_grad
    torch.testing.assert_close(aux["pos_embed"], net.backbone.pos_embed[0], rtol=0, atol=0)
    assert aux["rel_pos_bias"].shape == (DEPTH, HEADS, 6, 6)
    torch.testing.assert_close(aux["rel_pos_bias"][1], net.backbone.rel_pos[1]()[:, 1:, 1:], rtol=0, atol=0)
    aux["rel_pos_bias"].sum().backward()
    assert all(t.table.grad is not None for t in net.backbone.rel_pos)

    small = net(torch.randn(2, 3, 32, 32)).aux  # another grid: 2 x 2
    resized = resize_pos_embed(net.backbone.pos_embed, (2, 2), (3, 2))[0]
    torch.testing.assert_close(small["pos_embed"], resized)
    assert small["cls_similarity"].shape == (2, 4) and small["rel_pos_bias"].shape == (DEPTH, HEADS, 4, 4)
    shared = _net(rel_pos_bias=RelPosBiasConfig(shared=True)).train()
    assert shared(images).aux["rel_pos_bias"].shape == (1, HEADS, 6, 6)
    assert set(_net().train()(images).aux) == {"cls_similarity", "pos_embed"}
    assert len(net.eval()(images).aux) == 0


# ---- checkpoints ------------------------------------------------------------------------------------
def _timm_state(vit):
    state = {k: v.clone() for k, v in vit.state_dict().items() if k not in ("cls_pos", "pos_embed")}
    state["pos_embed"] = torch.cat([vit.cls_pos, vit.pos_embed], dim=1).detach().clone()
    return state


def _pass_state(vit):
    """PASS teacher layout: part_token{i} / part{i}_pos, patch-only pos_embed, under backbone."""
    s = {k: v.detach().clone() for k, v in vit.state_dict().items()}
    out = {k: v for k, v in s.items() if k not in ("part_tokens", "part_pos")}
    for i in range(vit.num_parts):
        out[f"part_token{i + 1}"] = s["part_tokens"][:, i : i + 1]
        out[f"part{i + 1}_pos"] = s["part_pos"][:, i : i + 1]
    return {"teacher": {f"backbone.{k}": v for k, v in out.items()}}


@pytest.mark.parametrize("layout", ["timm", "pass", "reid"])
def test_checkpoint_without_tables_loads_as_the_plain_model(tmp_path, layout):
    """ImageNet (timm layout), PASS (4 prefix tokens) or one of our older exports (reid layout, no tables):
    the tables stay zero, are reported as missing, and the model computes what the plain model loaded
    from the same file computes."""
    jpm = JPMConfig(shift=2, groups=2, num_local=2)
    kw = {"num_parts": 3} if layout == "pass" else {}
    source = _net(seed=7, jpm=jpm, **kw)
    states = {"timm": lambda: _timm_state(source.backbone), "pass": lambda: _pass_state(source.backbone)}
    torch.save(states.get(layout, source.state_dict)(), tmp_path / "ckpt.pth")
    plain = _net(seed=1, jpm=jpm, **kw)
    rpe = _net(seed=2, rel_pos_bias=RelPosBiasConfig(shared=False), jpm=jpm, **kw)
    load_pretrained(plain, tmp_path / "ckpt.pth")
    report = load_pretrained(rpe, tmp_path / "ckpt.pth")
    assert report.layout == layout
    tables = ["backbone.rel_pos.0.table", "backbone.rel_pos.1.table", "jpm.rel_pos.table"]
    assert set(tables) <= set(report.missing) and report.resized == []
    assert all(float(rpe.state_dict()[k].abs().max()) == 0 for k in tables)
    if layout != "reid":  # the heads are not in the file: make them equal to compare the outputs
        rpe.global_head.load_state_dict(plain.global_head.state_dict())
        rpe.local_heads.load_state_dict(plain.local_heads.state_dict())
    images = torch.randn(2, 3, 48, 32)
    for mode in (False, True):
        a, b = plain.train(mode)(images), rpe.train(mode)(images)
        torch.testing.assert_close(b.embedding, a.embedding, rtol=1e-5, atol=1e-6)


def test_own_checkpoint_tables_are_resized_to_the_new_grid(tmp_path):
    source = _net(
        (32, 32),
        seed=3,
        rel_pos_bias=RelPosBiasConfig(shared=False),
        jpm=JPMConfig(shift=1, groups=2, num_local=2),
    )
    _randomise_tables(source)
    torch.save(source.state_dict(), tmp_path / "own.pth")  # records pos_grid 2 x 2
    target = _net((48, 32), rel_pos_bias=PER_LAYER, jpm=JPM_1)
    report = load_pretrained(target, tmp_path / "own.pth")
    for key in ("backbone.rel_pos.0.table", "backbone.rel_pos.1.table", "jpm.rel_pos.table"):
        assert any(line.startswith(f"{key} 2x2 -> 3x2") for line in report.resized), report.resized
        expected = resize_relative_table(source.state_dict()[key], (2, 2), (3, 2), 1)
        torch.testing.assert_close(target.state_dict()[key], expected, rtol=0, atol=0)


def test_table_shape_mismatch_other_than_grid_is_refused(tmp_path):
    source = _vit(rel_pos_bias=RelPosBiasConfig(shared=False))  # 2 heads
    torch.save(source.state_dict(), tmp_path / "two_heads.pth")
    torch.manual_seed(0)
    three_heads = vit_tiny(
        img_size=(32, 32), embed_dim=DIM, num_heads=3, depth=DEPTH, rel_pos_bias=RelPosBiasConfig()
    )
    with pytest.raises(ValueError, match=r"rel_pos\.0\.table: checkpoint \(12, 2\) vs model \(12, 3\)"):
        load_pretrained(three_heads, tmp_path / "two_heads.pth")


@pytest.mark.parametrize(("config", "tables"), [(None, 0), ({"shared": False}, DEPTH), ({"shared": True}, 1)])
def test_exported_architecture_records_the_bias(config, tables):
    vit = _vit(rel_pos_bias=RelPosBiasConfig(**config) if config is not None else None)
    arch = architecture(vit.state_dict())  # records the plain form
    assert arch["rel_pos_bias"] == config and arch["num_heads"] == (HEADS if tables else 1)
    if tables:
        rebuilt = build_backbone(vit.state_dict(), (32, 32), stride=16)  # strict load
        assert len(rebuilt.rel_pos) == tables


# ---- the task ---------------------------------------------------------------------------------------
def _task(**model):
    cfg = OmegaConf.create({"data": {"image_size": [48, 32]}})
    cfg.model = compose_option("model", "vit_tiny")
    assert cfg.model.backbone.rel_pos_bias is None  # off by default
    cfg.model.backbone.update({"depth": 2, "embed_dim": DIM, "num_heads": HEADS})
    for key, value in {"schedule": None, **model}.items():
        OmegaConf.update(cfg, f"model.{key}", value, force_add=True)
    torch.manual_seed(0)
    info = DatasetInfo(num_classes=4, num_cameras=2, num_views=1)
    return build_task(cfg.model, info, EvalConfig())


@pytest.mark.parametrize(
    "model",
    [
        {"sie": {"camera": True, "coefficient": 3.0}, "jpm": {"shift": 2, "groups": 2, "num_local": 2}},
        {"backbone.num_parts": 3, "feature": "cls_parts"},
    ],
    ids=["sie_jpm", "pass"],
)
@pytest.mark.parametrize("shared", [False, True])
def test_task_builds_and_trains_one_step(model, shared):
    task = _task(**{"backbone.rel_pos_bias": {"shared": shared}, **model})
    task.log = lambda *args, **kwargs: None
    g = torch.Generator().manual_seed(1)
    batch = {
        "image": torch.randn(8, 3, 48, 32, generator=g),
        "pid": torch.arange(4).repeat_interleave(2),
        "camid": torch.arange(8) % 2,
        "viewid": torch.zeros(8, dtype=torch.long),
        "index": torch.arange(8),
    }
    optimizer = task.configure_optimizers()["optimizer"]
    loss = task.training_step(batch, 0)
    loss.backward()
    no_grad = [n for n, p in task.named_parameters() if p.requires_grad and p.grad is None]
    assert not no_grad, no_grad
    tables = [p for n, p in task.net.named_parameters() if n.endswith("rel_pos.0.table")]
    exempt = {
        id(p) for group in optimizer.param_groups if group["weight_decay"] == 0.0 for p in group["params"]
    }
    assert tables and all(id(t) in exempt for t in tables)
    optimizer.step()
    assert all(float(t.detach().abs().sum()) > 0 for t in tables)  # the tables moved from zero
