"""Checkpoints in each anchor layout (built here from our own tiny models) load back exactly."""

import argparse
import pickle

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from reid.models import ReIDNet, vit_tiny
from reid.models.jpm import JPMConfig
from reid.models.position import resize_pos_embed
from reid.models.sie import CameraEmbedConfig
from reid.models.weights import detect_layout, load_pretrained

DIM, HEADS, DEPTH = 24, 2, 2


def _vit(img_size=(32, 32), **kw):
    torch.manual_seed(kw.pop("seed", 0))
    return vit_tiny(img_size=img_size, embed_dim=DIM, num_heads=HEADS, depth=DEPTH, **kw)


def _net(img_size=(32, 32), num_classes=5, jpm=None, seed=0, **kw):
    backbone = _vit(img_size, seed=seed, **kw)
    torch.manual_seed(seed + 100)
    return ReIDNet(
        backbone, num_classes, jpm=jpm, **({"feature": "cls_parts"} if kw.get("num_parts") else {})
    )


def _timm_state(vit) -> dict[str, torch.Tensor]:
    """timm / official ViT names: pos_embed = [CLS position, patches], classifier head present."""
    state = {k: v.clone() for k, v in vit.state_dict().items() if k not in ("cls_pos", "pos_embed")}
    state["pos_embed"] = torch.cat([vit.cls_pos, vit.pos_embed], dim=1).detach().clone()
    state["head.weight"] = torch.randn(1000, DIM)
    state["head.bias"] = torch.zeros(1000)
    return state


def _assert_backbone_equal(loaded, source, skip=()):
    source_state = source.state_dict()
    for key, value in loaded.state_dict().items():
        if key not in skip:
            torch.testing.assert_close(value, source_state[key], msg=key)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_timm_checkpoint_same_grid(tmp_path, suffix):
    source = _vit()
    path = tmp_path / f"vit{suffix}"
    state = _timm_state(source)
    torch.save(state, path) if suffix == ".pth" else save_file(state, str(path))
    net = _net(seed=1)
    report = load_pretrained(net, path)
    assert report.layout == "timm" and report.unexpected == [] and report.resized == []
    _assert_backbone_equal(net.backbone, source)
    assert all(k.startswith("global_head.") for k in report.missing)


def test_timm_checkpoint_is_resized_to_the_new_grid(tmp_path):
    source = _vit(img_size=(32, 32))  # 2 x 2 grid
    torch.save(_timm_state(source), tmp_path / "vit.pth")
    net = _net(img_size=(48, 32), seed=1)  # 3 x 2 grid
    report = load_pretrained(net, tmp_path / "vit.pth")
    expected = resize_pos_embed(source.pos_embed.detach(), (3, 2), (2, 2))
    torch.testing.assert_close(net.backbone.pos_embed.detach(), expected)
    torch.testing.assert_close(net.backbone.cls_pos.detach(), source.cls_pos.detach())
    assert report.resized and "2x2 -> 3x2" in report.resized[0]


def _to_npz(vit) -> dict[str, np.ndarray]:
    """Inverse of the Flax -> PyTorch mapping, written independently of the loader."""
    s = {k: v.detach() for k, v in vit.state_dict().items()}
    hd = DIM // HEADS
    out = {
        "embedding/kernel": s["patch_embed.proj.weight"].permute(2, 3, 1, 0),
        "embedding/bias": s["patch_embed.proj.bias"],
        "cls": s["cls_token"],
        "Transformer/posembed_input/pos_embedding": torch.cat([s["cls_pos"], s["pos_embed"]], dim=1),
        "Transformer/encoder_norm/scale": s["norm.weight"],
        "Transformer/encoder_norm/bias": s["norm.bias"],
        "head/kernel": torch.zeros(DIM, 10),
    }
    for i in range(DEPTH):
        b, pre = f"blocks.{i}.", f"Transformer/encoderblock_{i}/"
        mha = pre + "MultiHeadDotProductAttention_1/"
        q, k, v = s[b + "attn.qkv.weight"].chunk(3)
        qb, kb, vb = s[b + "attn.qkv.bias"].chunk(3)
        for name, w, bias in (("query", q, qb), ("key", k, kb), ("value", v, vb)):
            out[f"{mha}{name}/kernel"] = w.t().reshape(DIM, HEADS, hd)
            out[f"{mha}{name}/bias"] = bias.reshape(HEADS, hd)
        out[mha + "out/kernel"] = s[b + "attn.proj.weight"].t().reshape(HEADS, hd, DIM)
        out[mha + "out/bias"] = s[b + "attn.proj.bias"]
        for ln, norm in (("LayerNorm_0", "norm1"), ("LayerNorm_2", "norm2")):
            out[f"{pre}{ln}/scale"] = s[f"{b}{norm}.weight"]
            out[f"{pre}{ln}/bias"] = s[f"{b}{norm}.bias"]
        for j in range(2):
            out[f"{pre}MlpBlock_3/Dense_{j}/kernel"] = s[f"{b}mlp.fc{j + 1}.weight"].t()
            out[f"{pre}MlpBlock_3/Dense_{j}/bias"] = s[f"{b}mlp.fc{j + 1}.bias"]
    return {k: v.contiguous().numpy() for k, v in out.items()}


def test_jax_npz_checkpoint(tmp_path):
    source = _vit()
    np.savez(tmp_path / "ViT-B_16.npz", **_to_npz(source))
    target = _vit(seed=1)
    report = load_pretrained(target, tmp_path / "ViT-B_16.npz")
    assert report.layout == "npz" and report.missing == [] and report.unexpected == []
    _assert_backbone_equal(target, source)
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(target.eval()(x), source.eval()(x))


def test_dino_teacher_with_ics_stem_and_jpm_copy(tmp_path):
    source = _vit(stem="ics")
    backbone = {
        f"backbone.{k.replace('patch_embed.stem.', 'patch_embed.conv.')}": v
        for k, v in _timm_state(source).items()
    }
    teacher = {
        **backbone,
        "head.mlp.0.weight": torch.randn(8, DIM),
        "head.last_layer.weight_g": torch.ones(8, 1),
    }
    student = {f"module.{k}": torch.zeros_like(v) for k, v in teacher.items()}
    torch.save({"teacher": teacher, "student": student, "epoch": 3}, tmp_path / "lup.pth")
    net = _net(seed=1, stem="ics", jpm=JPMConfig(shift=1, groups=2, num_local=2))
    report = load_pretrained(net, tmp_path / "lup.pth")
    assert report.layout == "dino" and report.unexpected == []
    _assert_backbone_equal(net.backbone, source)
    # the JPM branch is re-copied from the loaded last block (official: copies made after loading)
    torch.testing.assert_close(net.jpm.block.state_dict(), source.blocks[-1].state_dict())
    torch.testing.assert_close(net.jpm.norm.state_dict(), source.norm.state_dict())


def test_pass_checkpoint_part_tokens(tmp_path):
    source = _vit(img_size=(32, 16), num_parts=3)
    s = {k: v.detach().clone() for k, v in source.state_dict().items()}
    pass_state = {k: v for k, v in s.items() if k not in ("part_tokens", "part_pos")}
    for i in range(3):
        pass_state[f"part_token{i + 1}"] = s["part_tokens"][:, i : i + 1]
        pass_state[f"part{i + 1}_pos"] = s["part_pos"][:, i : i + 1]
    torch.save({"teacher": {f"backbone.{k}": v for k, v in pass_state.items()}}, tmp_path / "pass.pth")
    net = _net(img_size=(32, 16), seed=1, num_parts=3)
    report = load_pretrained(net, tmp_path / "pass.pth")
    assert report.layout == "pass" and report.unexpected == [] and report.resized == []
    _assert_backbone_equal(net.backbone, source)


def _official_transreid(net: ReIDNet, prefix: str = "") -> dict[str, torch.Tensor]:
    """Our JPM ReIDNet written with build_transformer_local's names."""
    s = {k: v.detach().clone() for k, v in net.state_dict().items()}
    last = DEPTH - 1
    out = {}
    for key, value in s.items():
        if key.startswith("backbone.") and key not in ("backbone.cls_pos", "backbone.pos_embed"):
            inner = key.removeprefix("backbone.")
            if inner.startswith(f"blocks.{last}."):
                out["b1.0." + inner.removeprefix(f"blocks.{last}.")] = value
                value = torch.randn_like(value) if value.is_floating_point() else value  # unused base copy
            elif inner.startswith("norm."):
                out["b1.1." + inner.removeprefix("norm.")] = value
                value = torch.randn_like(value)
            out["base." + inner] = value
        elif key.startswith("jpm.block."):
            out["b2.0." + key.removeprefix("jpm.block.")] = value
        elif key.startswith("jpm.norm."):
            out["b2.1." + key.removeprefix("jpm.norm.")] = value
        elif key.startswith("global_head."):
            out[key.removeprefix("global_head.")] = value
        elif key.startswith("local_heads."):
            _, j, rest = key.split(".", 2)
            kind, tail = rest.split(".", 1)
            out[f"{kind}_{int(j) + 1}.{tail}"] = value
    out["base.pos_embed"] = torch.cat([s["backbone.cls_pos"], s["backbone.pos_embed"]], dim=1)
    out["base.fc.weight"] = torch.randn(1000, DIM)
    return {prefix + k: v for k, v in out.items()}


@pytest.mark.parametrize("prefix", ["", "module."])
def test_official_transreid_checkpoint_round_trip(tmp_path, prefix):
    jpm = JPMConfig(shift=1, groups=2, num_local=2)
    camera = CameraEmbedConfig(num_cameras=3, num_views=1)
    source = _net(jpm=jpm, camera_embed=camera)
    torch.save(_official_transreid(source, prefix), tmp_path / "transformer_120.pth")
    target = _net(jpm=jpm, camera_embed=camera, seed=1)
    report = load_pretrained(target, tmp_path / "transformer_120.pth")
    assert report.layout == "transreid" and report.missing == [] and report.unexpected == []
    torch.testing.assert_close(target.state_dict(), source.state_dict())
    x, cams = torch.randn(2, 3, 32, 32), torch.tensor([0, 2])
    torch.testing.assert_close(target.eval()(x, cams).embedding, source.eval()(x, cams).embedding)


def test_own_lightning_state_dict(tmp_path):
    source = _net()
    torch.save({"state_dict": {f"net.{k}": v for k, v in source.state_dict().items()}}, tmp_path / "own.pt")
    target = _net(seed=1)
    assert load_pretrained(target, tmp_path / "own.pt").layout == "reid"
    torch.testing.assert_close(target.state_dict(), source.state_dict())


def test_shape_mismatches_name_tensor_shapes_and_cause(tmp_path):
    source = _net(num_classes=5, camera_embed=CameraEmbedConfig(num_cameras=3))
    torch.save(_official_transreid(source), tmp_path / "market.pth")
    target = _net(num_classes=7, camera_embed=CameraEmbedConfig(num_cameras=4), seed=1)
    with pytest.raises(ValueError) as error:
        load_pretrained(target, tmp_path / "market.pth")
    message = str(error.value)
    assert "backbone.sie_embed: checkpoint (3, 1, 24) vs model (4, 1, 24)" in message
    assert "camera" in message
    assert "classifier" not in message  # other identities re-initialise the classifier (next test)


@pytest.mark.parametrize("wrap", ["lightning", "plain"])
def test_own_supervised_checkpoint_fine_tunes_on_other_identities(tmp_path, wrap):
    """Backbone and BNNeck kept, the ID classifier (5 -> 7 classes) left at the model's initialisation and
    said in the summary, as the official TransReID ``load_param`` skips ``classifier`` on a new dataset."""
    source = _net(num_classes=5)
    state = source.state_dict()
    torch.save({"state_dict": {f"net.{k}": v for k, v in state.items()}} if wrap == "lightning" else state,
               tmp_path / "market.ckpt")  # fmt: skip
    target = _net(num_classes=7, seed=1)
    initial = target.global_head.classifier.weight.detach().clone()
    report = load_pretrained(target, tmp_path / "market.ckpt")
    assert report.layout == "reid" and not report.partial
    _assert_backbone_equal(target.backbone, source.backbone)
    torch.testing.assert_close(target.global_head.bottleneck.weight, source.global_head.bottleneck.weight)
    torch.testing.assert_close(target.global_head.classifier.weight.detach(), initial)
    assert (
        "re-initialised global_head.classifier.weight: checkpoint has 5 classes, model 7" in report.summary()
    )
    assert "global_head.classifier.weight" not in report.missing


def test_pickled_objects_are_refused_naming_the_global(tmp_path):
    torch.save(
        {"model": {"cls_token": torch.zeros(1)}, "args": pickle.loads(pickle.dumps(object()))},
        tmp_path / "x.pth",
    )
    with pytest.raises(
        ValueError, match=r"x\.pth cannot be read: .*asks for the global builtins\.object"
    ) as error:
        load_pretrained(_vit(), tmp_path / "x.pth")
    assert "weights_only=False" not in str(error.value) and error.value.__cause__ is None
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_pretrained(_vit(), tmp_path / "missing.pth")


def test_official_dino_checkpoint_with_argparse_args_loads(tmp_path):
    """facebookresearch/dino main_dino.py saves {"student", "teacher", "optimizer", "epoch", "args",
    "dino_loss"} with ``args`` an argparse.Namespace: read weights-only with exactly that class allowed."""
    source = _vit()
    teacher = {f"backbone.{k}": v for k, v in _timm_state(source).items() if not k.startswith("head.")}
    args = argparse.Namespace(arch="vit_small", patch_size=16, out_dim=65536, lr=0.0005, output_dir=".")
    torch.save({"teacher": teacher, "epoch": 100, "args": args, "dino_loss": {"center": torch.zeros(1, 8)}},
               tmp_path / "checkpoint.pth")  # fmt: skip
    target = _net(seed=1)
    assert load_pretrained(target, tmp_path / "checkpoint.pth").layout == "dino"
    _assert_backbone_equal(target.backbone, source)


def test_partial_load_only_when_not_strict(tmp_path):
    source = _vit()
    state = {k: v for k, v in _timm_state(source).items() if not k.startswith("blocks.1.")}
    torch.save(state, tmp_path / "half.pth")
    total = len([k for k in _vit().state_dict() if not k.endswith("pos_grid")])
    with pytest.raises(
        ValueError, match=rf"half\.pth \(layout timm\) fills {total - 12} of {total} backbone"
    ):
        load_pretrained(_net(seed=1), tmp_path / "half.pth")
    net = _net(seed=1)
    report = load_pretrained(net, tmp_path / "half.pth", strict=False)
    assert report.partial and (report.backbone_matched, report.backbone_total) == (total - 12, total)
    assert "PARTIAL" in report.summary() and "model.weights_strict=false" in report.summary()
    torch.testing.assert_close(net.backbone.blocks[0].state_dict(), source.blocks[0].state_dict())


@pytest.mark.parametrize("layout", ["timm", "reid"])
def test_vit_checkpoint_into_jpm_model_copies_its_last_block(tmp_path, layout):
    """The JPM branch starts as the loaded last block + norm, as the official build_transformer_local copies
    ``base.blocks[-1]`` / ``base.norm`` after ``load_param`` (an ImageNet ViT or our non-JPM checkpoint)."""
    source = _net()  # no JPM
    state = _timm_state(source.backbone) if layout == "timm" else source.state_dict()
    torch.save(state, tmp_path / "vit.pth")
    target = _net(seed=1, jpm=JPMConfig(shift=1, groups=2, num_local=2))
    assert load_pretrained(target, tmp_path / "vit.pth").layout == layout
    torch.testing.assert_close(target.jpm.block.state_dict(), source.backbone.blocks[-1].state_dict())
    torch.testing.assert_close(target.jpm.norm.state_dict(), source.backbone.norm.state_dict())


def test_width_mismatch_names_both_widths(tmp_path):
    torch.save(_vit().state_dict(), tmp_path / "vit24.pth")
    torch.manual_seed(0)
    wider = vit_tiny(img_size=(32, 32), embed_dim=32, num_heads=HEADS, depth=DEPTH)
    with pytest.raises(ValueError, match="embedding width differs: checkpoint 24, model 32"):
        load_pretrained(wider, tmp_path / "vit24.pth")


def test_layout_detection():  # grid inference: tests/models/test_position_grids.py
    assert detect_layout({"Transformer/encoder_norm/scale": torch.zeros(1)}) == "npz"
    assert detect_layout({"base.cls_token": torch.zeros(1)}) == "transreid"
    assert detect_layout({"backbone.cls_token": torch.zeros(1)}) == "dino"
    assert detect_layout({"backbone.part_token1": torch.zeros(1)}) == "pass"
    assert detect_layout({"cls_token": torch.zeros(1)}) == "timm"


@pytest.mark.parametrize("saved_norm", [True, False])
def test_input_norm_must_match_between_weights_and_model(tmp_path, saved_norm):
    source = _vit(stem="ics", input_norm=saved_norm)
    save_file(dict(source.state_dict()), tmp_path / "backbone.safetensors")
    matching = _net(stem="ics", input_norm=saved_norm, seed=1)
    load_pretrained(matching, tmp_path / "backbone.safetensors")
    _assert_backbone_equal(matching.backbone, source)
    with pytest.raises(ValueError, match=f"set model.backbone.input_norm={str(saved_norm).lower()}") as error:
        load_pretrained(
            _net(stem="ics", input_norm=not saved_norm, seed=1), tmp_path / "backbone.safetensors"
        )
    assert "backbone.safetensors" in str(error.value)
