"""Hand-off tools: backbone export and CFS keep-lists that load_luperson reads."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from reid.data.datasets.luperson import load_luperson
from reid.models.vit import vit_tiny
from reid.models.weights import load_pretrained
from reid.tools.cfs_filter import cfs_scores, top_n
from reid.tools.cfs_filter import main as cfs_main
from reid.tools.export_backbone import architecture, build_backbone, export_backbone, load_state
from tests.ssl_pretrain.tiny import tiny_task

TINY_VIT = {
    "img_size": (32, 16), "patch_size": 8, "stride": 8, "embed_dim": 32, "depth": 1, "num_heads": 2,
    "num_parts": 2,
}  # fmt: skip
"""The backbone of ``tiny_task(2)``."""


def save_task_checkpoint(task, path: Path) -> Path:
    torch.save({"state_dict": task.state_dict(), "epoch": 0}, path)
    return path


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_export_writes_the_teacher_backbone_in_our_layout(tmp_path: Path, suffix: str) -> None:
    task = tiny_task(2)
    with torch.no_grad():
        task.teacher["backbone"].cls_token.add_(1.0)  # teacher != student
    out = tmp_path / f"backbone{suffix}"
    export_backbone(save_task_checkpoint(task, tmp_path / "ssl.ckpt"), out)
    exported = load_state(out)
    expected = task.teacher["backbone"].state_dict()
    assert exported.keys() == expected.keys() and {"part_tokens", "part_pos", "cls_pos"} <= exported.keys()
    assert all(torch.equal(exported[k], expected[k]) for k in expected)


def test_exported_backbone_loads_with_the_fine_tuning_weight_loader(tmp_path: Path) -> None:
    task = tiny_task(2)
    out = tmp_path / "backbone.safetensors"
    export_backbone(save_task_checkpoint(task, tmp_path / "ssl.ckpt"), out)
    model = vit_tiny(**TINY_VIT)
    load_pretrained(model, out)
    for key, value in task.teacher["backbone"].state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key


def test_cfs_scores_are_cosines_and_top_n_keeps_the_best() -> None:
    source = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 2.0], [3.0, 0.0]])
    target = torch.tensor([[0.0, 1.0], [1.0, 1.0], [0.0, -1.0], [1.0, 1.0]])
    scores = cfs_scores(source, target)
    torch.testing.assert_close(scores, torch.tensor([0.0, 1.0, -1.0, 2**-0.5], dtype=torch.float64))
    assert top_n(scores, 2) == [1, 3]
    with pytest.raises(ValueError, match="--keep"):
        top_n(scores, 5)
    with pytest.raises(ValueError, match="same shape"):
        cfs_scores(source, target[:, :1])


def test_cfs_cli_writes_a_keep_list_that_load_luperson_reads(tmp_path: Path, image_paths) -> None:
    root = tmp_path / "images"
    source = export_backbone(
        save_task_checkpoint(tiny_task(0), tmp_path / "s.ckpt"), tmp_path / "s.safetensors"
    )
    target_task = tiny_task(0)
    with torch.no_grad():
        for p in target_task.teacher.parameters():
            p.add_(0.05 * torch.randn_like(p))
    export_backbone(save_task_checkpoint(target_task, tmp_path / "t.ckpt"), tmp_path / "t.safetensors")
    out = tmp_path / "keep.txt"
    cfs_main([
        "--source-ckpt", str(tmp_path / "s.safetensors"), "--target-ckpt", str(tmp_path / "t.safetensors"),
        "--images", str(root), "--keep", "10", "--out", str(out), "--img-size", "32", "16",
        "--batch-size", "8", "--num-workers", "0", "--device", "cpu",
    ])  # fmt: skip
    lines = out.read_text().splitlines()
    assert len(lines) == 10 and len(set(lines)) == 10 and all(not Path(p).is_absolute() for p in lines)
    kept = load_luperson(root, keep_list=out)
    assert [Path(r.path) for r in kept.train] == [root / p for p in lines]
    assert source  # the exported source proxy is non-empty


def test_input_norm_travels_with_the_exported_backbone(tmp_path: Path) -> None:
    task = tiny_task(2)
    task.student["backbone"] = vit_tiny(**TINY_VIT, input_norm=True)
    task.teacher["backbone"] = vit_tiny(**TINY_VIT, input_norm=True)
    ckpt = save_task_checkpoint(task, tmp_path / "ssl.ckpt")
    out = tmp_path / "backbone.safetensors"
    export_backbone(ckpt, out)
    assert architecture(load_state(out))["input_norm"] is True
    assert build_backbone(load_state(out), (32, 16)).patch_embed.input_norm  # what CFS builds
    for source in (out, ckpt):  # the export, or the pretraining checkpoint itself
        with pytest.raises(ValueError, match="input_norm=true"):
            load_pretrained(vit_tiny(**TINY_VIT), source)
