"""A checkpoint's patch position grid is known (its record, model.weights_grid, or the only candidate of
its position count), never guessed: issue 13 item 3 (a 256x128 stride-12 checkpoint, 21 x 10 = 210
positions, loaded at 384x128 was resized from a 30 x 7 grid)."""

import pytest
import torch
from hydra.errors import InstantiationException
from omegaconf import OmegaConf
from safetensors import safe_open
from safetensors.torch import save_file

from reid.config_store import compose_option
from reid.data.records import DatasetInfo
from reid.evaluation import EvalConfig
from reid.models import ReIDNet, vit_tiny
from reid.models.cnn_reid_net import CNNReIDNet
from reid.models.patch_embed import OverlapPatchEmbed
from reid.models.position import candidate_grids, infer_old_grid, resize_pos_embed
from reid.models.resnet import resnet_tiny
from reid.models.weights import load_pretrained
from reid.tasks.from_config import build_task
from reid.tools.export_backbone import build_backbone, export_backbone, load_state

DIM = 8
# every grid the official configs produce at patch 16, written out by hand ((H - 16) // S + 1 per side)
OFFICIAL_GRIDS = {
    ((256, 128), 16): (16, 8), ((256, 128), 12): (21, 10), ((256, 128), 11): (22, 11),
    ((384, 128), 16): (24, 8), ((384, 128), 12): (31, 10), ((384, 128), 11): (34, 11),
    ((256, 256), 16): (16, 16), ((256, 256), 12): (21, 21), ((256, 256), 11): (22, 22),
    ((224, 224), 16): (14, 14),  # ImageNet ViT-B/16 (jx_vit_base_p16_224)
}  # fmt: skip
TARGETS = [key for key in OFFICIAL_GRIDS if key[0] != (224, 224)]


def _embed(img_size, stride, patch=16):
    return OverlapPatchEmbed(img_size, patch, stride, embed_dim=2)


def _vit(img_size, stride, seed=0):
    torch.manual_seed(seed)
    return vit_tiny(img_size=img_size, stride=stride, embed_dim=DIM, num_heads=2, depth=1)


def _timm_file(vit, path, record=False):
    """The ViT in timm's layout ([CLS] + patches in pos_embed); with our grid record or without."""
    state = {k: v.clone() for k, v in vit.state_dict().items() if k not in ("cls_pos", "pos_embed")}
    state["pos_embed"] = torch.cat([vit.cls_pos, vit.pos_embed], dim=1).detach().clone()
    if not record:
        del state["pos_grid"]
    torch.save(state, path)
    return path


@pytest.mark.parametrize("source", sorted(OFFICIAL_GRIDS))
@pytest.mark.parametrize("target", sorted(TARGETS))
def test_every_official_grid_is_recovered_for_every_official_target(source, target):
    grid = OFFICIAL_GRIDS[source]
    assert infer_old_grid(grid[0] * grid[1], _embed(*target)) == grid


def test_the_issue_case_210_positions_at_384x128_is_21x10_never_30x7(tmp_path):
    source = _vit((256, 128), 12)  # 21 x 10
    assert source.pos_grid.tolist() == [21, 10] and source.pos_embed.shape[1] == 210
    assert candidate_grids(210, (384, 128), 16, 12) == {(21, 10): "256x128 at stride 12"}
    for record in (False, True):
        net = ReIDNet(_vit((384, 128), 12, seed=1), num_classes=3)  # 31 x 10
        report = load_pretrained(net, _timm_file(source, tmp_path / f"r{record}.pth", record))
        expected = resize_pos_embed(source.pos_embed.detach(), (31, 10), (21, 10))
        torch.testing.assert_close(net.backbone.pos_embed.detach(), expected)  # the old loader used 30 x 7
        how = "recorded in the file" if record else "inferred"
        assert report.resized == [f"backbone.pos_embed 21x10 -> 31x10 (old grid {how})"]
        assert net.backbone.pos_grid.tolist() == [31, 10]  # the model keeps its own record


def test_imagenet_square_and_lup_grids_resize_from_the_right_grid(tmp_path):
    for (size, stride), target in [
        (((224, 224), 16), ((256, 128), 12)),
        (((256, 128), 16), ((384, 128), 16)),
    ]:
        source = _vit(size, stride)
        net = _vit(*target, seed=1)
        load_pretrained(net, _timm_file(source, tmp_path / "w.pth"))
        old = OFFICIAL_GRIDS[(size, stride)]
        expected = resize_pos_embed(source.pos_embed.detach(), OFFICIAL_GRIDS[target], old)
        torch.testing.assert_close(net.pos_embed.detach(), expected)


AMBIGUOUS = ((204, 102), 11)  # 18 x 8 = 144 = 12 x 12: the model's 2:1 aspect ratio, or a square grid


def test_an_ambiguous_count_is_an_error_listing_the_candidates_and_the_key(tmp_path):
    path = _timm_file(_vit(*AMBIGUOUS), tmp_path / "w.pth")
    with pytest.raises(ValueError) as error:
        load_pretrained(_vit((256, 128), 16, seed=1), path)
    message = str(error.value)
    assert "144 patch positions" in message and "w.pth" in message
    assert "12x12 (a square grid" in message and "18x8 (204x102 at stride 11" in message
    assert "model.weights_grid=[rows,cols]" in message
    with pytest.raises(ValueError, match=r"known grids holding 211 are: none\. Set model.weights_grid"):
        infer_old_grid(211, _embed((256, 128), 16))  # a prime count fits no known grid


def test_a_count_equal_to_the_models_needs_no_resize_even_when_ambiguous(tmp_path):
    source = _vit(*AMBIGUOUS)
    net = _vit(*AMBIGUOUS, seed=1)
    report = load_pretrained(net, _timm_file(source, tmp_path / "w.pth"))
    assert report.resized == [] and torch.equal(net.pos_embed, source.pos_embed)


def test_the_recorded_grid_and_the_explicit_key_settle_an_ambiguous_count(tmp_path):
    source = _vit(*AMBIGUOUS)
    expected = resize_pos_embed(source.pos_embed.detach(), (16, 8), (18, 8))
    recorded, plain = _timm_file(source, tmp_path / "rec.pth", True), _timm_file(source, tmp_path / "p.pth")
    for path, grid, how in ((recorded, None, "recorded"), (plain, [18, 8], "model.weights_grid")):
        net = _vit((256, 128), 16, seed=1)
        assert (
            load_pretrained(net, path, old_grid=grid)
            .resized[0]
            .startswith(f"pos_embed 18x8 -> 16x8 (old grid {how}")
        )
        torch.testing.assert_close(net.pos_embed.detach(), expected)
    load_pretrained(_vit((256, 128), 16), recorded, old_grid=[18, 8])  # the key may repeat the record
    with pytest.raises(ValueError, match=r"model.weights_grid=\[12, 12\] contradicts the grid 18x8"):
        load_pretrained(_vit((256, 128), 16), recorded, old_grid=[12, 12])


def test_a_wrong_explicit_grid_is_an_error_naming_the_key(tmp_path):
    path = _timm_file(_vit((256, 128), 12), tmp_path / "w.pth")  # 210 positions
    with pytest.raises(
        ValueError, match=r"model.weights_grid=\[16, 8\] holds 128 positions, but .*w.pth has 210"
    ):
        load_pretrained(_vit((384, 128), 12), path, old_grid=[16, 8])
    for bad in ([21], [21, 10.0], [-21, -10]):
        with pytest.raises(ValueError, match=r"model.weights_grid must be \[rows, cols\]"):
            load_pretrained(_vit((384, 128), 12), path, old_grid=bad)


def test_a_cnn_refuses_a_weights_grid(tmp_path):
    torch.save(resnet_tiny().state_dict(), tmp_path / "r.pth")
    with pytest.raises(ValueError, match="model.weights_grid is set, but the model has no position grid"):
        load_pretrained(CNNReIDNet(resnet_tiny(), num_classes=3), tmp_path / "r.pth", old_grid=[16, 8])


def test_state_dicts_record_the_grid_and_strict_loading_checks_it():
    vit = _vit((256, 128), 12)
    net = ReIDNet(vit, num_classes=3)
    assert net.state_dict()["backbone.pos_grid"].tolist() == [21, 10]
    assert net.state_dict()["backbone.pos_grid"].dtype == torch.long
    official = {k: v for k, v in vit.state_dict().items() if k != "pos_grid"}
    assert _vit((256, 128), 12, seed=1).load_state_dict(official, strict=True).missing_keys == []
    other = vit.state_dict() | {"pos_grid": torch.tensor([30, 7])}
    with pytest.raises(
        RuntimeError, match="pos_grid: the checkpoint's position grid is 30x7, this model's 21x10"
    ):
        _vit((256, 128), 12, seed=1).load_state_dict(other)


def test_exported_backbone_carries_the_grid(tmp_path):
    source = _vit(*AMBIGUOUS)
    ckpt = tmp_path / "ssl.ckpt"
    torch.save({"state_dict": {f"teacher.backbone.{k}": v for k, v in source.state_dict().items()}}, ckpt)
    out = tmp_path / "backbone.safetensors"
    export_backbone(ckpt, out)
    with safe_open(str(out), "pt") as handle:
        assert handle.metadata()["pos_grid"] == "18x8"
    assert load_state(out)["pos_grid"].tolist() == [18, 8]
    net = _vit((256, 128), 16, seed=1)
    assert "18x8 -> 16x8" in load_pretrained(net, out).resized[0]  # ambiguous without the record
    assert build_backbone(load_state(out), (204, 102)).patch_embed.stride == 11
    with pytest.raises(ValueError, match=r"a 18x8 grid \(pos_grid\): no stride <= 16 gives that grid"):
        build_backbone(load_state(out), (256, 128))
    save_file(
        {k: v for k, v in load_state(out).items() if k != "pos_grid"}, str(tmp_path / "old.safetensors")
    )
    with pytest.raises(ValueError, match="model.weights_grid"):  # an export made before the record
        load_pretrained(_vit((256, 128), 16), tmp_path / "old.safetensors")


def test_the_task_passes_model_weights_grid_to_the_loader(tmp_path):
    path = _timm_file(_vit(*AMBIGUOUS), tmp_path / "w.pth")
    cfg = OmegaConf.create({"data": {"image_size": [256, 128]}})
    cfg.model = compose_option("model", "vit_tiny")
    assert cfg.model.weights_grid is None  # the default: record, else an unambiguous inference
    cfg.model.backbone.update(depth=1, embed_dim=DIM, num_heads=2)
    cfg.model.weights, cfg.model.weights_grid = str(path), [18, 8]
    info = DatasetInfo(num_classes=3, num_cameras=2, num_views=1)
    task = build_task(cfg.model, info, EvalConfig())
    assert task.hparams["weights_grid"] == [18, 8]
    source = _vit(*AMBIGUOUS)
    expected = resize_pos_embed(source.pos_embed.detach(), (16, 8), (18, 8))
    torch.testing.assert_close(task.net.backbone.pos_embed.detach(), expected)
    cfg.model.weights_grid = None
    with pytest.raises((InstantiationException, ValueError), match="model.weights_grid"):
        build_task(cfg.model, info, EvalConfig())
