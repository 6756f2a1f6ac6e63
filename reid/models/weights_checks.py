"""Whether a mapped checkpoint fits a model, and the report of a load (:mod:`reid.models.weights`).

Shapes must match (else the tensor, both shapes and the likely cause are named); the ``input_norm``
flag must agree; a whole-network checkpoint's ID classifier trained on other identities is left to the
model's initialisation; and the file must fill the model's backbone (:func:`backbone_keys`) unless a
partial load is asked for.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from reid.models.patch_embed import INPUT_NORM_FLAG
from reid.models.position import POS_GRID

StateDict = dict[str, Tensor]
REL_TABLE = re.compile(r"(^|\.)rel_pos\.(\d+\.)?table$")
SNR_BLOCK = re.compile(r"(^|\.)snr\.")
"""SNR blocks (``reid.models.snr``, ``snr.layer{k}.*``): new at re-id training, in no pretrained file."""


@dataclass
class LoadReport:
    """What a load did: model keys filled, model keys left as they were, checkpoint keys unused."""

    path: str
    layout: str
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    resized: list[str] = field(default_factory=list)
    reinitialised: list[str] = field(default_factory=list)
    backbone_matched: int = 0
    backbone_total: int = 0

    @property
    def partial(self) -> bool:
        """The backbone was not filled (allowed only with ``strict=False``)."""
        return self.backbone_matched < self.backbone_total

    def summary(self) -> str:
        lines = [
            f"weights {self.path} (layout {self.layout}): loaded {len(self.loaded)} tensors, "
            f"{self.backbone_matched} of {self.backbone_total} backbone tensors"
            + (" (PARTIAL initialisation: model.weights_strict=false)" if self.partial else "")
        ]
        lines += [f"  resized {name}" for name in self.resized]
        lines += [f"  re-initialised {name}" for name in self.reinitialised]
        if self.missing:
            lines.append(f"  missing (kept initialisation): {', '.join(self.missing)}")
        if self.unexpected:
            lines.append(f"  unexpected (ignored): {', '.join(self.unexpected)}")
        return "\n".join(lines)


def _likely_cause(name: str, saved: tuple[int, ...], wanted: tuple[int, ...]) -> str:
    if "classifier" in name:
        return "class count differs (checkpoint trained on another dataset's identities)"
    if name.endswith("sie_embed"):
        return "camera/view count differs (SIE table = cameras x views), or SIE is set differently"
    if name.endswith(("part_tokens", "part_pos")):
        return "number of part tokens (num_parts) differs"
    if REL_TABLE.search(name):
        return "relative table: heads or part tokens differ, or its grid is not the checkpoint's pos_grid"
    if re.match(r"(backbone\.)?(conv1|bn1|layer\d)\.", name):
        return "ResNet depth, block type or widths differ (e.g. a ResNet-18 checkpoint for a ResNet-50)"
    if name.endswith("patch_embed.proj.weight") and saved[2:] != wanted[2:]:
        return "patch size or stem differs (model.backbone.patch_size / stem=ics halves the kernel)"
    if saved and wanted and saved[-1] != wanted[-1]:
        return f"embedding width differs: checkpoint {saved[-1]}, model {wanted[-1]} (ViT-S 384, ViT-B 768)"
    return "architecture differs (depth, heads, MLP ratio or input size)"


def backbone_of(model: nn.Module) -> tuple[Any, str]:
    """The model's ``backbone`` and its key prefix, or the model itself (a bare backbone) and ``""``; typed
    ``Any``: callers read the backbone family's own members (``patch_embed``, ``num_prefix_tokens``)."""
    backbone = getattr(model, "backbone", None)
    return (backbone, "backbone.") if isinstance(backbone, nn.Module) else (model, "")


def check_shapes(state: StateDict, wanted: Mapping[str, Tensor], path: str, layout: str) -> None:
    problems = [
        f"  {name}: checkpoint {tuple(value.shape)} vs model {tuple(wanted[name].shape)} -- "
        + _likely_cause(name, tuple(value.shape), tuple(wanted[name].shape))
        for name, value in state.items()
        if name in wanted and value.shape != wanted[name].shape
    ]
    if problems:
        raise ValueError(f"weights: {path} (layout {layout}) does not fit the model:\n" + "\n".join(problems))


def check_finite(state: Mapping[str, Tensor], path: str, listed: int = 5) -> None:
    """Refuse tensors holding NaN or Inf, naming them: such a file loads and then fails later, where the
    blame falls on the learning rate (a diverged run's checkpoint, or a corrupt conversion)."""
    bad = []
    for name, value in state.items():
        if value.is_floating_point() or value.is_complex():
            count = int((~torch.isfinite(value)).sum())
            if count:
                bad.append(f"{name} ({count} of {value.numel()} values)")
    if bad:
        shown = ", ".join(bad[:listed]) + (f" and {len(bad) - listed} more" if len(bad) > listed else "")
        raise ValueError(
            f"weights: {path} holds NaN/Inf values in {len(bad)} of {len(state)} tensors: {shown}; "
            "the file comes from a diverged run or a broken conversion: take an earlier checkpoint"
        )


def check_input_norm(state: StateDict, wanted: Mapping[str, Tensor], path: str) -> None:
    """Refuse weights trained with ``input_norm`` for a model without it, and the other way round.

    The option has no parameters, so a mismatch would otherwise load silently and feed the network
    inputs on another scale than it was trained on; the ``input_norm_flag`` buffer records it.
    """
    flag = f"patch_embed.{INPUT_NORM_FLAG}"
    saved, expected = (any(k.endswith(flag) for k in keys) for keys in (state, wanted))
    if saved != expected:
        raise ValueError(
            f"weights: {path} was trained {'with' if saved else 'without'} per-image input "
            f"standardisation, but the model has model.backbone.input_norm={str(expected).lower()}; "
            f"set model.backbone.input_norm={str(saved).lower()} (it has no weights, so the config "
            "must say it)"
        )


WHOLE_NET_LAYOUTS = ("transreid", "reid")
_NOT_REQUIRED = ("num_batches_tracked", POS_GRID, INPUT_NORM_FLAG, "sie_embed")
"""Backbone entries a checkpoint may lack: bookkeeping buffers, the input-norm flag (checked on its own)
and the SIE table (side information is added at fine-tuning; the official code initialises it)."""


def drop_foreign_classifiers(state: StateDict, wanted: Mapping[str, Tensor], report: LoadReport) -> None:
    """A whole-network checkpoint trained on other identities: keep its backbone, leave the classifier."""
    for name in [k for k in state if "classifier" in k and k in wanted]:
        saved, target = state[name].shape, wanted[name].shape
        if saved != target and saved[1:] == target[1:]:
            del state[name]
            report.reinitialised.append(
                f"{name}: checkpoint has {saved[0]} classes, model {target[0]} (other identities)"
            )


def backbone_keys(model: nn.Module) -> list[str]:
    """The model's backbone entries a pretrained checkpoint is expected to fill (see ``_NOT_REQUIRED``;
    relative position tables and SNR blocks are new modules no pretrained file has)."""
    _, prefix = backbone_of(model)
    return [
        key
        for key in model.state_dict()
        if key.startswith(prefix)
        and not key.endswith(_NOT_REQUIRED)
        and not REL_TABLE.search(key)
        and not SNR_BLOCK.search(key)
    ]


def _fill_hint(keys: Sequence[str], layout: str, model: nn.Module, matched: int) -> str:
    """The likely fix when a file fills too little of the backbone."""
    backbone, _ = backbone_of(model)
    if not keys:
        return "the file holds no tensors"
    if any(k.startswith(("teacher.backbone.", "student.backbone.")) for k in keys):
        return (
            "it is a pretraining checkpoint of this project (teacher.backbone.*): export its backbone with "
            "`python -m reid.tools.export_backbone <file> backbone.safetensors` and set model.weights to it"
        )
    cnn_layout, cnn_model = layout == "torchvision", not hasattr(backbone, "patch_embed")
    if cnn_layout != cnn_model:
        kind = "ResNet" if cnn_layout else "ViT"
        return f"it holds a {kind} (layout {layout}), the model's backbone is a {type(backbone).__name__}"
    if matched:
        return "the file lacks part of the model: another architecture (depth, stem or part tokens differ)"
    sample = ", ".join(sorted(keys)[:3])
    return (
        f"its keys ({sample}, ...) name none of the model's tensors: another architecture, or a layout "
        f"other than {layout!r}: our own Lightning checkpoints load as the 'reid' layout (net.*), "
        "pretraining checkpoints after `python -m reid.tools.export_backbone`"
    )


def check_filled(report: LoadReport, keys: Sequence[str], model: nn.Module, strict: bool) -> None:
    required = backbone_keys(model)
    loaded = set(report.loaded)
    report.backbone_total, report.backbone_matched = len(required), sum(k in loaded for k in required)
    if not strict or not report.partial:
        return
    unfilled = [k for k in required if k not in loaded]
    hint = _fill_hint(keys, report.layout, model, report.backbone_matched)
    raise ValueError(
        f"weights: {report.path} (layout {report.layout}) fills {report.backbone_matched} of "
        f"{report.backbone_total} backbone tensors (not filled: {', '.join(unfilled[:3])}"
        f"{', ...' if len(unfilled) > 3 else ''}); {hint}. "
        "To initialise only the matching tensors on purpose, set model.weights_strict=false"
    )


def state_differences(saved: Mapping[str, Any], wanted: Mapping[str, Any]) -> list[str]:
    """How a checkpoint's state dict differs from a model's: counts with one example each."""
    missing = [k for k in wanted if k not in saved]
    unexpected = [k for k in saved if k not in wanted]
    shapes = [
        f"{k} {tuple(saved[k].shape)} vs {tuple(v.shape)}"
        for k, v in wanted.items()
        if k in saved and hasattr(saved[k], "shape") and saved[k].shape != v.shape
    ]
    found = (("missing", missing), ("unexpected", unexpected), ("of another shape", shapes))
    return [f"{len(items)} {what} (e.g. {items[0]})" for what, items in found if items]
