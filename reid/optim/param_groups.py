"""SGD parameter groups: per-parameter lr factor and weight decay.

TransReID (``solver/make_optimizer.py``) gives every parameter whose name contains "bias" the
lr ``base * BIAS_LR_FACTOR`` (2) and weight decay ``WEIGHT_DECAY_BIAS`` (1e-4, the same as all
other weights). The timm/DINO convention instead exempts biases, normalisation weights (1-D
tensors) and the tokens/embeddings that a model lists in ``no_weight_decay()`` from weight
decay; ``exempt_norm_and_tokens`` switches that on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

OptimizerFactory = Callable[[Iterable[Any]], torch.optim.Optimizer]
"""An optimiser class with its settings bound (``functools.partial(torch.optim.SGD, lr=0.008,
momentum=0.9)``), called with the parameters or parameter groups."""


def checked_base_lr(optimizer: Any, key: str = "model.optimizer.lr") -> float:
    """The base lr of an optimiser factory (a ``functools.partial`` with ``lr``), checked positive: a
    ValueError names ``key`` before any parameter group is built."""
    lr = getattr(optimizer, "keywords", {}).get("lr")
    if isinstance(lr, bool) or not isinstance(lr, int | float) or not lr > 0:
        raise ValueError(f"{key}={lr!r}: expected a positive number (the base learning rate)")
    return float(lr)


@dataclass(frozen=True)
class ParamGroupConfig:
    """How parameters are split into optimiser groups.

    Attributes:
        bias_lr_factor: lr multiplier for biases (TransReID: 2.0).
        weight_decay_bias: weight decay for biases; ``None`` means the base weight decay.
        exempt_norm_and_tokens: weight decay 0 for biases, 1-D weights (norms) and the names
            returned by ``model.no_weight_decay()`` (matched as a prefix of any module path).
    """

    bias_lr_factor: float = 1.0
    weight_decay_bias: float | None = None
    exempt_norm_and_tokens: bool = False


def _no_decay_names(model: nn.Module) -> set[str]:
    """Full parameter names listed by ``no_weight_decay()`` on the model or any submodule."""
    names: set[str] = set()
    for prefix, module in model.named_modules():
        listed = getattr(module, "no_weight_decay", None)
        if callable(listed):
            dot = f"{prefix}." if prefix else ""
            names.update(f"{dot}{n}" for n in listed())
    return names


def build_param_groups(
    model: nn.Module, base_lr: float, weight_decay: float, config: ParamGroupConfig | None = None
) -> list[dict[str, Any]]:
    """Split trainable parameters into groups keyed by (lr factor, weight decay).

    Each group holds ``params``, ``lr`` (= ``base_lr * lr_factor``), ``lr_factor``,
    ``weight_decay`` and a readable ``name``. Frozen parameters are left out.
    """
    config = config or ParamGroupConfig()
    bias_decay = weight_decay if config.weight_decay_bias is None else config.weight_decay_bias
    exempt = _no_decay_names(model) if config.exempt_norm_and_tokens else set()
    groups: dict[tuple[float, float], dict[str, Any]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        is_bias = name.endswith("bias")
        factor = config.bias_lr_factor if is_bias else 1.0
        decay = bias_decay if is_bias else weight_decay
        if config.exempt_norm_and_tokens and (is_bias or param.ndim <= 1 or name in exempt):
            decay = 0.0
        key = (factor, decay)
        if key not in groups:
            groups[key] = {
                "params": [],
                "lr": base_lr * factor,
                "lr_factor": factor,
                "weight_decay": decay,
                "name": f"lr_x{factor:g}_wd{decay:g}",
            }
        groups[key]["params"].append(param)
    return list(groups.values())
