"""Turn a pretraining checkpoint into a backbone checkpoint for fine-tuning.

    python -m reid.tools.export_backbone outputs/.../last.ckpt lup_pass_vit_small.safetensors

Writes the teacher's backbone (``--which student`` for the student) in our ViT key layout
(``patch_embed.proj.*``, ``cls_token``, ``part_tokens``, ``cls_pos``, ``part_pos``, ``pos_embed``,
``blocks.{i}.*``, ``norm.*``, ``rel_pos.{i}.table`` with relative position bias, and the ``pos_grid``
record of the position grid), as ``.safetensors`` (with the metadata ``num_parts``, ``embed_dim``,
``depth``, ``rel_pos_bias``, ``pos_grid``, ...) or ``.pth``; a fine-tuning experiment loads it with
``model.weights=<file>``, at any input size or stride: the recorded grid says how to resize the positions.
The same helpers load a backbone back from any of these files (used by the CFS tool).
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import Tensor

from reid.models.patch_embed import INPUT_NORM_FLAG
from reid.models.position import POS_GRID, grid_size
from reid.models.relative_position import RelPosBiasConfig
from reid.models.vit import VisionTransformer
from reid.models.weights_checks import check_finite
from reid.models.weights_file import read_checkpoint
from reid.training.checkpoint_io import AtomicCheckpointIO

PREFIXES = {"teacher": "teacher.backbone.", "student": "student.backbone."}


def load_state(path: str | Path) -> dict[str, Tensor]:
    """The tensor dict of a ``.safetensors``/``.npz`` file, or of a ``.ckpt``/``.pth`` (its ``state_dict``
    if any), read without running code; an unreadable file is diagnosed from its bytes (empty,
    truncated, a Git LFS pointer, a pickle of other objects: :mod:`reid.models.weights_file`)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"export_backbone: no checkpoint file at {path}")
    if path.suffix in (".safetensors", ".npz"):
        return read_checkpoint(path)
    obj = AtomicCheckpointIO().load_checkpoint(path)  # a run's checkpoint holds its config besides tensors
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise ValueError(f"checkpoint {path} holds a {type(obj).__name__}, expected a dict of tensors")
    return {k: v for k, v in obj.items() if isinstance(v, Tensor)}


def extract_backbone(state: Mapping[str, Tensor], which: str = "teacher") -> dict[str, Tensor]:
    """Backbone tensors of an SSL checkpoint with the ``<which>.backbone.`` prefix removed.

    A state that is already a backbone (has ``cls_token`` at top level) is returned as is.
    """
    if "cls_token" in state:
        return dict(state)
    if which not in PREFIXES:
        raise ValueError(f"export_backbone: which must be one of {sorted(PREFIXES)}, got {which!r}")
    prefix = PREFIXES[which]
    backbone = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    if not backbone:
        sample = sorted(state)[:5]
        raise ValueError(f"export_backbone: no '{prefix}*' keys in the checkpoint (keys start {sample})")
    return backbone


def architecture(state: Mapping[str, Tensor]) -> dict[str, Any]:
    """ViT constructor arguments readable from a backbone state (heads: the relative tables' width, else
    64 dims each); ``rel_pos_bias`` is ``{"shared": ...}`` when the state has relative tables, else None."""
    if "patch_embed.proj.weight" not in state:
        raise ValueError("backbone state has no patch_embed.proj.weight; is it a reid ViT backbone?")
    embed_dim = int(state["patch_embed.proj.weight"].shape[0])
    depth = 1 + max(int(m.group(1)) for k in state if (m := re.match(r"blocks\.(\d+)\.", k)))
    num_parts = int(state["part_tokens"].shape[1]) if "part_tokens" in state else 0
    stem = "ics" if any(k.startswith("patch_embed.stem.") for k in state) else "patch"
    kernel = int(state["patch_embed.proj.weight"].shape[-1])
    tables = [k for k in state if re.fullmatch(r"rel_pos\.\d+\.table", k)]
    heads = int(state["rel_pos.0.table"].shape[1]) if "rel_pos.0.table" in state else max(1, embed_dim // 64)
    return {
        "embed_dim": embed_dim, "depth": depth, "num_heads": heads, "num_parts": num_parts,
        "rel_pos_bias": {"shared": len(tables) == 1 and depth > 1} if tables else None,
        "stem": stem, "patch_size": 2 * kernel if stem == "ics" else kernel,
        **({"stem_dim": int(state["patch_embed.proj.weight"].shape[1])} if stem == "ics" else {}),
        "input_norm": f"patch_embed.{INPUT_NORM_FLAG}" in state,
    }  # fmt: skip


def infer_stride(state: Mapping[str, Tensor], img_size: Sequence[int], patch_size: int) -> int:
    """The patch stride whose grid at ``img_size`` is the recorded ``pos_grid`` (a state without the
    record: the stride whose grid has as many positions as ``pos_embed``)."""
    count = int(state["pos_embed"].shape[1])
    recorded = tuple(int(v) for v in state[POS_GRID].tolist()) if POS_GRID in state else None
    for stride in range(patch_size, 0, -1):
        rows, cols = grid_size((int(img_size[0]), int(img_size[1])), patch_size, stride)
        if (rows, cols) == recorded or (recorded is None and rows * cols == count):
            return stride
    what = f"a {recorded[0]}x{recorded[1]} grid ({POS_GRID})" if recorded else f"{count} positions"
    raise ValueError(
        f"backbone pos_embed holds {what}: no stride <= {patch_size} gives that grid at {tuple(img_size)}"
    )


def build_backbone(
    state: Mapping[str, Tensor], img_size: Sequence[int], stride: int | None = None
) -> VisionTransformer:
    """A ViT shaped like ``state`` with its weights loaded (strict); ``stride`` inferred when None."""
    arch = architecture(state)
    stride = stride or infer_stride(state, img_size, int(arch["patch_size"]))
    tables = arch.pop("rel_pos_bias")  # the record's plain form: {"shared": ...} or None
    rel_pos_bias = RelPosBiasConfig(**tables) if tables is not None else None
    size = (int(img_size[0]), int(img_size[1]))
    model = VisionTransformer(img_size=size, stride=stride, rel_pos_bias=rel_pos_bias, **arch)
    model.load_state_dict(state, strict=True)
    return model


def export_backbone(ckpt: str | Path, out: str | Path, which: str = "teacher") -> dict[str, Tensor]:
    """Write the backbone of ``ckpt`` to ``out`` (.safetensors or .pth); returns the exported state."""
    out = Path(out)
    backbone = {
        k: v.detach().contiguous().clone() for k, v in extract_backbone(load_state(ckpt), which).items()
    }
    check_finite(backbone, f"export_backbone: {ckpt}")
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".safetensors":
        meta = {k: str(v) for k, v in architecture(backbone).items()} | {"source": str(ckpt), "which": which}
        if POS_GRID in backbone:
            meta[POS_GRID] = "x".join(str(int(v)) for v in backbone[POS_GRID].tolist())
        save_file(backbone, str(out), metadata=meta)
    elif out.suffix in (".pth", ".pt"):
        torch.save(backbone, out)
    else:
        raise ValueError(f"export_backbone: output {out} must end in .safetensors, .pth or .pt")
    return backbone


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m reid.tools.export_backbone", description=__doc__.split("\n")[0]
    )
    parser.add_argument("ckpt", help="pretraining checkpoint (.ckpt) of reid.tasks.ssl_pretrain")
    parser.add_argument("out", help="output file: .safetensors or .pth")
    parser.add_argument("--which", choices=sorted(PREFIXES), default="teacher", help="network to export")
    args = parser.parse_args(argv)
    state = export_backbone(args.ckpt, args.out, args.which)
    print(f"wrote {len(state)} tensors ({architecture(state)}) to {args.out}")


if __name__ == "__main__":
    from reid.tools.cli import run_tool

    run_tool(main, "python -m reid.tools.export_backbone")
