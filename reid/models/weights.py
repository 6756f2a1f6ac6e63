"""Loading external checkpoints into our ViT / ResNet / ReIDNet / CNNReIDNet key names.

One filter function per checkpoint layout maps its keys and tensors into our names
(``reid/models/vit.py``: ``cls_token``, ``cls_pos``, ``part_tokens``, ``part_pos``, patch-only
``pos_embed``, ``sie_embed``, ``blocks.*``, ``norm.*``; ``reid/models/reid_net.py``:
``backbone.*``, ``jpm.{block,norm}.*``, ``global_head.*``, ``local_heads.{j}.*``; ``reid/models/resnet.py``:
torchvision's ``conv1.*``, ``bn1.*``, ``layer{1..4}.{i}.*``; ``reid/models/cnn_reid_net.py``: ``backbone.*``,
``pool.*``, ``global_head.*``):

============ =====================================================================================
layout       source
============ =====================================================================================
timm         ImageNet ViTs saved by timm (``jx_vit_base_p16_224-80ecf9dd.pth``, safetensors);
             ``pos_embed`` holds [CLS] + patches; ``head.*`` dropped
npz          Google JAX/Flax ``ViT-B_16.npz`` (``Transformer/encoderblock_{i}/...``)
dino         DINO / TransReID-SSL LUPerson checkpoints: ``{"teacher": {"backbone.<key>": ...}}``
             (``patch_embed.conv`` = the ICS stem, ours ``patch_embed.stem``)
pass         PASS checkpoints (a dino layout with ``part_token{i}``, ``cls_pos``, ``part{i}_pos`` and a
             patch-only ``pos_embed``)
transreid    TransReID's own trained models: ``base.*``, ``b1``/``b2`` (last block + norm of the
             global / JPM branch), ``bottleneck[_j]``, ``classifier[_j]``
torchvision  ImageNet ResNets saved by torchvision (``resnet50-0676ba61.pth``, ``resnet50-19c8e357.pth``)
             or timm (same names): ``conv1.weight``, ``layer1.0.conv1.weight``, ..., ``fc.*``; ``fc.*``
             fits no key of ours and is reported as unexpected (ignored)
reid         our own ReIDNet / CNNReIDNet state dicts (``net.`` prefix of a Lightning module optional)
============ =====================================================================================

A patch position grid of another size is resized bilinearly (input size or stride changed), and our
relative position tables (``rel_pos.{i}.table``, ``jpm.rel_pos.table``) bicubically to the same grid; a
checkpoint without tables leaves the model's zero tables (reported as missing), so the model computes
what the plain ViT loaded from it computes. The
checkpoint's grid is, in order: the ``pos_grid`` record our ViTs save; ``old_grid`` (config
``model.weights_grid``, like TransReID-SSL's ``PRETRAIN_HW_RATIO``); the model's own grid when the
counts are equal; the single candidate of :func:`reid.models.position.candidate_grids`. Several or no
candidates are an error listing them and the key to set; a guess is never made.
Any other shape mismatch is refused with the tensor name, both shapes and the likely cause, except the
ID classifier of a whole-network layout (``reid``, ``transreid``) trained on other identities: fine-tuning
our own supervised checkpoint on another dataset keeps the backbone and re-initialises the classifier
(listed in the report). A load that fills less than the backbone is an error naming the file, the layout,
how many backbone tensors matched and the likely fix; ``strict=False`` (``model.weights_strict=false``)
allows a partial load on purpose. Tensors a checkpoint legitimately lacks do not count: relative
position tables (zero-init, see above), the SIE table (added at fine-tuning), SNR blocks
(``reid.models.snr``, new at re-id training) and bookkeeping buffers.
Files are read without unpickling code (:mod:`reid.models.weights_file`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from reid.models.position import POS_GRID, checkpoint_grid, resize_pos_embed
from reid.models.relative_position import num_relative_entries, resize_relative_table
from reid.models.weights_checks import (
    REL_TABLE,
    WHOLE_NET_LAYOUTS,
    LoadReport,
    backbone_keys,
    backbone_of,
    check_filled,
    check_finite,
    check_input_norm,
    check_shapes,
    drop_foreign_classifiers,
)
from reid.models.weights_file import read_checkpoint

__all__ = [
    "FILTERS",
    "LAYOUTS",
    "LoadReport",
    "backbone_keys",
    "detect_layout",
    "load_pretrained",
    "read_checkpoint",
]
StateDict = dict[str, Tensor]
LAYOUTS = ("timm", "npz", "dino", "pass", "transreid", "torchvision", "reid")


# ---- reading (files: reid.models.weights_file) -----------------------------------------------
def _unwrap(raw: Any) -> tuple[dict[str, Tensor], bool]:
    """Descend into teacher / state_dict / model entries; returns (flat tensors, came from a teacher)."""
    if not isinstance(raw, Mapping):
        raise TypeError(f"holds a {type(raw).__name__}, expected a dict of tensors")
    from_teacher = False
    current: Mapping[str, Any] = raw
    for key in ("teacher", "state_dict", "model"):
        inner = current.get(key)
        if isinstance(inner, Mapping):
            from_teacher = from_teacher or key == "teacher"
            current = inner
    tensors = {}
    for key, value in current.items():
        if isinstance(value, Tensor):
            tensors[key.removeprefix("module.")] = value
    return tensors, from_teacher


def detect_layout(state: Mapping[str, Tensor], from_teacher: bool = False) -> str:
    """Guess the layout of an unwrapped state dict (see the module table)."""
    keys = list(state)
    if any(k.startswith("Transformer/") for k in keys):
        return "npz"
    if any(k.startswith("base.") for k in keys):
        return "transreid"
    if any(k.startswith(("global_head.", "net.global_head.")) for k in keys):
        return "reid"
    if from_teacher or any(k.startswith("backbone.") for k in keys):
        has_parts = any(re.search(r"(^|\.)part_token\d+$", k) for k in keys)
        return "pass" if has_parts else "dino"
    if "part_token1" in state:
        return "pass"
    if any(k.startswith("layer1.") for k in keys):
        return "torchvision"
    return "timm"


# ---- one filter per layout ----------------------------------------------------------------------
_DROPPED_VIT_PREFIXES = ("head.", "fc.", "fc_norm.", "pre_logits.", "dist_token", "head_dist.")


def filter_timm(state: Mapping[str, Tensor]) -> StateDict:
    """timm / official-TransReID ViT names -> ours: split ``pos_embed`` into ``cls_pos`` + patches."""
    out: StateDict = {}
    for key, value in state.items():
        if key.startswith(_DROPPED_VIT_PREFIXES):
            continue
        out[key.replace("patch_embed.conv.", "patch_embed.stem.")] = value
    if "pos_embed" in out and "cls_pos" not in out:
        full = out.pop("pos_embed")
        out["cls_pos"], out["pos_embed"] = full[:, :1], full[:, 1:]
    return out


def _jax_to_torch(array: Tensor) -> Tensor:
    """Flax kernel layout -> PyTorch (timm's ``_n2p``): HWIO -> OIHW, [in, out] -> [out, in]."""
    if array.ndim == 4:
        return array.permute(3, 2, 0, 1)
    if array.ndim == 3:
        return array.permute(2, 0, 1)
    if array.ndim == 2:
        return array.t()
    return array


def _npz_block(state: Mapping[str, Tensor], i: int) -> StateDict:
    pre = f"Transformer/encoderblock_{i}/"
    mha = pre + "MultiHeadDotProductAttention_1/"
    qkv = ("query", "key", "value")
    return {
        f"blocks.{i}.norm1.weight": state[pre + "LayerNorm_0/scale"],
        f"blocks.{i}.norm1.bias": state[pre + "LayerNorm_0/bias"],
        f"blocks.{i}.attn.qkv.weight": torch.cat([state[f"{mha}{n}/kernel"].flatten(1).t() for n in qkv]),
        f"blocks.{i}.attn.qkv.bias": torch.cat([state[f"{mha}{n}/bias"].reshape(-1) for n in qkv]),
        f"blocks.{i}.attn.proj.weight": _jax_to_torch(state[mha + "out/kernel"]).flatten(1),
        f"blocks.{i}.attn.proj.bias": state[mha + "out/bias"],
        f"blocks.{i}.norm2.weight": state[pre + "LayerNorm_2/scale"],
        f"blocks.{i}.norm2.bias": state[pre + "LayerNorm_2/bias"],
        f"blocks.{i}.mlp.fc1.weight": _jax_to_torch(state[pre + "MlpBlock_3/Dense_0/kernel"]),
        f"blocks.{i}.mlp.fc1.bias": state[pre + "MlpBlock_3/Dense_0/bias"],
        f"blocks.{i}.mlp.fc2.weight": _jax_to_torch(state[pre + "MlpBlock_3/Dense_1/kernel"]),
        f"blocks.{i}.mlp.fc2.bias": state[pre + "MlpBlock_3/Dense_1/bias"],
    }


def filter_npz(state: Mapping[str, Tensor]) -> StateDict:
    """Google JAX ViT (``ViT-B_16.npz``) -> timm names -> ours (mapping of timm's ``_load_weights``)."""
    depth = 1 + max(int(m.group(1)) for k in state if (m := re.match(r"Transformer/encoderblock_(\d+)/", k)))
    timm_state: StateDict = {
        "patch_embed.proj.weight": _jax_to_torch(state["embedding/kernel"]),
        "patch_embed.proj.bias": state["embedding/bias"],
        "cls_token": state["cls"],
        "pos_embed": state["Transformer/posembed_input/pos_embedding"],
        "norm.weight": state["Transformer/encoder_norm/scale"],
        "norm.bias": state["Transformer/encoder_norm/bias"],
    }
    for i in range(depth):
        timm_state.update(_npz_block(state, i))
    return filter_timm(timm_state)


def _backbone_only(state: Mapping[str, Tensor]) -> StateDict:
    """Keep ``backbone.*`` entries (the DINO teacher's projection ``head.*`` is dropped)."""
    if not any(k.startswith("backbone.") for k in state):
        return dict(state)
    return {k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")}


def filter_dino(state: Mapping[str, Tensor]) -> StateDict:
    """DINO / TransReID-SSL teacher -> ours."""
    return filter_timm(_backbone_only(state))


def filter_pass(state: Mapping[str, Tensor]) -> StateDict:
    """PASS teacher -> ours: ``part_token{i}`` / ``part{i}_pos`` (1x1xD each) -> ``part_tokens`` /
    ``part_pos`` (1xLxD); ``cls_pos`` and the patch-only ``pos_embed`` keep their names."""
    plain = _backbone_only(state)
    count = sum(1 for k in plain if re.fullmatch(r"part_token\d+", k))
    parts = [f"part_token{i}" for i in range(1, count + 1)]
    positions = [f"part{i}_pos" for i in range(1, count + 1)]
    missing = [k for k in [*parts, *positions] if k not in plain]
    if missing:
        raise ValueError(f"weights (pass layout): expected {missing} beside part_token1..{count}")
    out = {k: v for k, v in plain.items() if k not in parts and k not in positions}
    out["part_tokens"] = torch.cat([plain[k] for k in parts], dim=1)
    out["part_pos"] = torch.cat([plain[k] for k in positions], dim=1)
    return filter_timm(out)


def _transreid_head(key: str) -> str | None:
    """``bottleneck[_j]`` / ``classifier[_j]`` -> our head names."""
    match = re.fullmatch(r"(bottleneck|classifier)(?:_(\d+))?\.(.+)", key)
    if match is None:
        return None
    kind, branch, rest = match.groups()
    head = "global_head" if branch is None else f"local_heads.{int(branch) - 1}"
    return f"{head}.{kind}.{rest}"


def filter_transreid(state: Mapping[str, Tensor]) -> StateDict:
    """Official TransReID model -> ReIDNet names.

    Without JPM ``base.*`` is the whole backbone. With JPM the trained global last block and norm
    live in ``b1.{0,1}`` (the official ``base.blocks[-1]``/``base.norm`` are unused copies and
    dropped) and the JPM branch in ``b2.{0,1}``.
    """
    backbone = filter_timm({k.removeprefix("base."): v for k, v in state.items() if k.startswith("base.")})
    has_jpm = any(k.startswith("b1.") for k in state)
    out: StateDict = {}
    if has_jpm:
        last = max(int(m.group(1)) for k in backbone if (m := re.match(r"blocks\.(\d+)\.", k)))
        backbone = {k: v for k, v in backbone.items() if not k.startswith((f"blocks.{last}.", "norm."))}
        for src, dst in (("b1.0.", f"backbone.blocks.{last}."), ("b1.1.", "backbone.norm."),
                         ("b2.0.", "jpm.block."), ("b2.1.", "jpm.norm.")):  # fmt: skip
            out.update({dst + k.removeprefix(src): v for k, v in state.items() if k.startswith(src)})
    out.update({f"backbone.{k}": v for k, v in backbone.items()})
    for key, value in state.items():
        head_key = _transreid_head(key)
        if head_key is not None:
            out[head_key] = value
    return out


def filter_torchvision(state: Mapping[str, Tensor]) -> StateDict:
    """torchvision ResNet -> ours: the names are the same; ``fc.*`` is kept so that the load report
    lists it as unexpected (the ImageNet classifier has no counterpart in a re-id net)."""
    return dict(state)


def filter_reid(state: Mapping[str, Tensor]) -> StateDict:
    """Our own ReIDNet (optionally inside a Lightning module as ``net.``)."""
    return {k.removeprefix("net."): v for k, v in state.items()}


FILTERS: dict[str, Callable[[Mapping[str, Tensor]], StateDict]] = {
    "timm": filter_timm,
    "npz": filter_npz,
    "dino": filter_dino,
    "pass": filter_pass,
    "transreid": filter_transreid,
    "torchvision": filter_torchvision,
    "reid": filter_reid,
}


# ---- fitting into a model ----------------------------------------------------------------------
def _place(mapped: StateDict, layout: str, model: nn.Module) -> StateDict:
    """Prefix backbone-only layouts for a ReIDNet; strip network layouts for a bare backbone."""
    _, prefix = backbone_of(model)
    whole_net = layout in ("transreid", "reid")
    if whole_net and not prefix:
        return {k.removeprefix("backbone."): v for k, v in mapped.items() if k.startswith("backbone.")}
    if not whole_net and prefix:
        return {prefix + k: v for k, v in mapped.items()}
    return mapped


def _fit_pos_embed(
    state: StateDict, model: nn.Module, report: LoadReport, old_grid: Sequence[int] | None
) -> tuple[int, int] | None:
    """Resize the checkpoint's patch positions to the model's grid; drops the checkpoint's grid record
    (the model keeps its own). Returns the checkpoint's grid (``None`` without patch positions)."""
    backbone, prefix = backbone_of(model)
    key, record = prefix + "pos_embed", state.pop(prefix + POS_GRID, None)
    target = getattr(backbone, "pos_embed", None)
    if target is None and old_grid is not None:
        raise ValueError(
            "weights: model.weights_grid is set, but the model has no position grid (CNN); set null"
        )
    if key not in state or target is None:
        return None
    saved = state[key]
    if saved.ndim != 3 or saved.shape[-1] != target.shape[-1]:
        return None  # a width mismatch is reported by the shape check
    new_grid = tuple(backbone.patch_embed.grid_size)
    grid = checkpoint_grid(saved.shape[1], record, old_grid, backbone.patch_embed, report.path)
    if grid != new_grid:
        state[key] = resize_pos_embed(saved, new_grid, grid)
        how = (
            "recorded in the file" if record is not None else "model.weights_grid" if old_grid else "inferred"
        )
        report.resized.append(f"{key} {grid[0]}x{grid[1]} -> {new_grid[0]}x{new_grid[1]} (old grid {how})")
    return grid


def _fit_rel_tables(
    state: StateDict, model: nn.Module, report: LoadReport, grid: tuple[int, int] | None
) -> None:
    """Resize relative tables learned on the checkpoint's grid ``grid`` to the model's (bicubic); a table
    of any other shape is left for the shape check to refuse."""
    backbone, _ = backbone_of(model)
    new_grid = tuple(getattr(getattr(backbone, "patch_embed", None), "grid_size", ()))
    if grid is None or len(new_grid) != 2 or grid == new_grid:
        return
    prefix = int(backbone.num_prefix_tokens)
    wanted = model.state_dict()
    for key, saved in list(state.items()):
        if not REL_TABLE.search(key) or key not in wanted or saved.ndim != 2:
            continue
        if saved.shape == (num_relative_entries(grid, prefix), wanted[key].shape[1]):
            state[key] = resize_relative_table(saved, grid, new_grid, prefix)
            report.resized.append(f"{key} {grid[0]}x{grid[1]} -> {new_grid[0]}x{new_grid[1]} (bicubic)")


def load_pretrained(
    model: nn.Module,
    path: str | Path,
    layout: str = "auto",
    old_grid: Sequence[int] | None = None,
    strict: bool = True,
) -> LoadReport:
    """Load ``path`` into ``model`` (a ``ReIDNet`` or ``CNNReIDNet``; or a bare ``VisionTransformer``
    or ``ResNet``).

    ``layout`` is one of :data:`LAYOUTS` or ``"auto"`` (:func:`detect_layout`); ``old_grid``
    (``model.weights_grid``) is the checkpoint's ``[rows, cols]`` patch grid where it records none
    and the count is ambiguous (:func:`reid.models.position.checkpoint_grid`). ``strict`` (config
    ``model.weights_strict``): a file that fills less than :func:`backbone_keys` is an error.
    When the file holds no JPM branch, the branch is re-copied from the loaded last block (the
    official code builds its copies after loading the ImageNet checkpoint).
    """
    raw = read_checkpoint(path)
    try:
        state, from_teacher = _unwrap(raw)
    except TypeError as error:
        raise ValueError(f"weights: {path} {error}") from None
    if layout == "auto":
        layout = detect_layout(state, from_teacher)
    if layout not in FILTERS:
        raise ValueError(f"weights: layout must be 'auto' or one of {LAYOUTS}, got {layout!r}")
    mapped = _place(FILTERS[layout](state), layout, model)
    wanted = model.state_dict()
    check_input_norm(mapped, wanted, str(path))
    report = LoadReport(str(path), layout)
    _fit_rel_tables(mapped, model, report, _fit_pos_embed(mapped, model, report, old_grid))
    if layout in WHOLE_NET_LAYOUTS:
        drop_foreign_classifiers(mapped, wanted, report)
    check_shapes(mapped, wanted, str(path), layout)
    usable = {k: v for k, v in mapped.items() if k in wanted}
    check_finite(usable, str(path))
    report.loaded = sorted(usable)
    check_filled(report, list(state), model, strict)
    model.load_state_dict(usable, strict=False)
    report.unexpected = sorted(k for k in mapped if k not in wanted)
    skipped = ("num_batches_tracked", POS_GRID)  # bookkeeping buffers, not weights
    reinitialised = {line.split(":")[0] for line in report.reinitialised}
    report.missing = sorted(
        k for k in wanted if k not in mapped and not k.endswith(skipped) and k not in reinitialised
    )
    reset_local_branch = getattr(model, "reset_local_branch", None)  # ReIDNet's, with a JPM branch
    if callable(reset_local_branch) and not any(k.startswith("jpm.") for k in usable):
        reset_local_branch()
    return report
