"""The supervised objective as a set of named, weighted loss terms over one fixed model output.

Each term reads what it needs from :class:`ObjectiveInput` (per-branch features and logits, labels,
branch weights, camera ids and optional auxiliary tensors such as selected patch indices) and returns
a scalar; the objective is

    L = sum_t w_t * L_t

The task logs every ``L_t`` as ``train/loss_<name>`` without knowing the terms, and the optimiser
trains any parameters a term holds, in a group of their own (:meth:`Objective.param_groups`), unless
the term brings its own optimiser (``optimizer=``: BoT's centre SGD), which the task steps beside its
own once per optimiser step (:class:`reid.losses.term_optimizers.TermOptimizers`). A term that needs
sizes of the model (a center loss's ``num_classes`` x ``feat_dim`` centres) names them in
``model_dims`` and :func:`build_objective` fills them from the task. Adding a loss means a term module
and a config entry::

    loss:
      _target_: reid.losses.Objective
      id:  {_target_: reid.losses.IDTerm, weight: 1.0, label_smoothing: 0.0}
      tri: {_target_: reid.losses.TripletTerm, weight: 1.0, margin: null}

A term set to ``null`` in the config is left out (``model.loss.tri=null``).

TransReID Sec. 3.3 (``loss/make_loss.py``) is the two default terms: with a global branch g and k JPM
local branches l_j, both are summed over branches with the network's branch weights::

    L_ID  = 0.5 * CE(z_g) + 0.5 * (1/k) sum_j CE(z_lj)
    L_Tri = 0.5 * Tri(f_g) + 0.5 * (1/k) sum_j Tri(f_lj)

(``(1.0,)`` without JPM). The triplet term takes the features before the BNNeck, the ID term the
logits after it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, ClassVar, NamedTuple, cast

import torch
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

from reid.losses.id_loss import IDLoss
from reid.losses.triplet import TripletLoss


@dataclass(frozen=True)
class ObjectiveInput:
    """What loss terms may read: one entry per branch in ``feats`` / ``logits`` / ``branch_weights``.

    ``aux`` holds optional model outputs by name (e.g. ``"pos_embed"``, the patch position table); a
    term that needs an entry the model does not give raises an error naming it. ``step`` is the
    optimiser step the batch trains (the trainer's ``global_step``), for terms whose weight ramps up.
    """

    feats: Sequence[Tensor]
    logits: Sequence[Tensor]
    labels: Tensor
    branch_weights: Sequence[float]
    camids: Tensor | None = None
    aux: Mapping[str, Tensor] = field(default_factory=dict)
    step: int = 0

    def __post_init__(self) -> None:
        if not (len(self.feats) == len(self.logits) == len(self.branch_weights)) or not self.feats:
            raise ValueError(
                "ObjectiveInput: need one feature, one logits tensor and one weight per branch, got "
                f"{len(self.feats)} feats, {len(self.logits)} logits, {len(self.branch_weights)} "
                "branch_weights"
            )

    def require(self, name: str, term: str) -> Tensor:
        """``aux[name]``, or a ValueError saying which term needs it and what the model gave."""
        if name not in self.aux:
            raise ValueError(
                f"loss term '{term}' needs the model output '{name}', but the model gives "
                f"{sorted(self.aux) or 'no auxiliary outputs'}"
            )
        return self.aux[name]


class ObjectiveOutput(NamedTuple):
    """``total = sum_t weight_t * terms[t]``; ``terms`` are the unweighted values, in config order.

    ``stats`` are detached diagnostics the terms report (``"<term>/<stat>"``, e.g. ``"rpe/d_an"``),
    logged by the task as ``train/<key>``; they never enter the total.
    """

    total: Tensor
    terms: dict[str, Tensor]
    stats: Mapping[str, Tensor] = MappingProxyType({})


class LossTerm(nn.Module):
    """A named objective term: ``forward(ObjectiveInput) -> scalar``, scaled by ``weight_at(step)`` in the
    total (the constant ``weight`` unless the term overrides :meth:`weight_at`, e.g. with a warm-up).

    ``param_group_options`` are the optimiser settings of the term's own parameters (none by default:
    the base learning rate, no weight decay). ``optimizer`` (a ``_partial_`` optimiser, called with the
    parameters) gives them an optimiser of their own instead (:meth:`own_optimizer`), stepped on their
    gradients times :meth:`own_grad_scale`. ``model_dims`` names constructor arguments the task fills
    from the model (:func:`build_objective`). A term may report diagnostics of its last forward by
    filling ``self.stats`` (name -> scalar); they reach the log as ``train/<term>/<name>``.
    """

    model_dims: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        weight: float = 1.0,
        optimizer: Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer] | None = None,
    ) -> None:
        super().__init__()
        self.weight = float(weight)
        self.optimizer_factory = optimizer
        self.stats: dict[str, Tensor] = {}

    @property
    def has_own_optimizer(self) -> bool:
        """Its parameters are stepped by :meth:`own_optimizer`, not by the task's optimiser."""
        return self.optimizer_factory is not None

    def own_optimizer(self) -> torch.optim.Optimizer | None:
        """A new optimiser of the term's trainable parameters; None without ``optimizer`` or parameters."""
        params = [p for p in self.parameters() if p.requires_grad]
        if self.optimizer_factory is None or not params:
            return None
        return self.optimizer_factory(params)

    def own_grad_scale(self) -> float:
        """Factor on the term's gradients (of the weighted total) before its own optimiser steps."""
        return 1.0

    def param_group_options(self) -> dict[str, Any]:
        return {"weight_decay": 0.0}

    def weight_at(self, step: int) -> float:
        """The weight in the total at optimiser step ``step``: ``weight`` unless a term ramps it."""
        return self.weight

    def forward(self, inputs: ObjectiveInput) -> Tensor:  # pragma: no cover - interface
        raise NotImplementedError


class IDTerm(LossTerm):
    """Branch-weighted ID loss ``sum_b w_b CE_eps(z_b, y)`` (:class:`~reid.losses.IDLoss`)."""

    def __init__(self, weight: float = 1.0, label_smoothing: float = 0.0) -> None:
        super().__init__(weight)
        self.loss = IDLoss(label_smoothing)

    def forward(self, inputs: ObjectiveInput) -> Tensor:
        return sum(w * self.loss(z, inputs.labels) for w, z in zip(inputs.branch_weights, inputs.logits))


class TripletTerm(LossTerm):
    """Branch-weighted batch-hard triplet loss ``sum_b w_b Tri(f_b, y)`` (:class:`TripletLoss`)."""

    def __init__(
        self, weight: float = 1.0, margin: float | None = None, normalize_feature: bool = False
    ) -> None:
        super().__init__(weight)
        self.loss = TripletLoss(margin, normalize_feature)

    def forward(self, inputs: ObjectiveInput) -> Tensor:
        return sum(w * self.loss(f, inputs.labels) for w, f in zip(inputs.branch_weights, inputs.feats))


class Objective(nn.Module):
    """``L = sum_t w_t(step) L_t`` over named :class:`LossTerm` s (``None`` entries are dropped).

    Raises at construction when no term is left or a term is not a :class:`LossTerm`, naming it.
    """

    def __init__(self, **terms: LossTerm | None) -> None:
        super().__init__()
        kept = {name: term for name, term in terms.items() if term is not None}
        for name, term in kept.items():
            if not isinstance(term, LossTerm):
                raise TypeError(
                    f"model.loss.{name}: expected a loss term (reid.losses.LossTerm, e.g. "
                    f"reid.losses.IDTerm), got {type(term).__name__}"
                )
        if not kept:
            raise ValueError("model.loss: no loss term is set (every entry is null)")
        self.terms = nn.ModuleDict(kept)

    def named_terms(self) -> list[tuple[str, LossTerm]]:
        """``(name, term)`` of every term, in config order."""
        return [(name, cast(LossTerm, term)) for name, term in self.terms.items()]

    def term(self, name: str) -> LossTerm:
        """The term ``name``."""
        return cast(LossTerm, self.terms[name])

    def forward(self, inputs: ObjectiveInput) -> ObjectiveOutput:
        values = {name: term(inputs) for name, term in self.named_terms()}
        weighted = [self.term(name).weight_at(inputs.step) * value for name, value in values.items()]
        total = sum(weighted[1:], weighted[0])  # summed in config order
        stats = {
            f"{name}/{key}": value.detach()
            for name, term in self.named_terms()
            for key, value in term.stats.items()
        }
        return ObjectiveOutput(total, values, stats)

    def param_groups(self, base_lr: float) -> list[dict[str, Any]]:
        """One optimiser group per term that has trainable parameters (``lr`` = ``base_lr`` unless the
        term's ``param_group_options`` say otherwise); ``[]`` when no term has any. ``lr_factor`` is
        ``lr / base_lr``: under an epoch schedule (``reid.optim.set_epoch_lr``) its peak is base x factor.
        Terms with their own optimiser (:attr:`LossTerm.has_own_optimizer`) are left out."""
        groups = []
        for name, term in self.named_terms():
            if term.has_own_optimizer:
                continue  # stepped by reid.losses.term_optimizers.TermOptimizers
            params = [p for p in term.parameters() if p.requires_grad]
            if params:
                group: dict[str, Any] = {"params": params, "lr": base_lr, "name": f"loss.{name}"}
                group |= term.param_group_options()
                groups.append(group | {"lr_factor": float(group["lr"]) / base_lr})
        return groups


def build_objective(config: DictConfig | Mapping[str, Any], **dims: int) -> Objective:
    """Instantiate the ``model.loss`` config, giving each term the model sizes its class names in
    ``LossTerm.model_dims`` (the task passes ``num_classes`` and ``feat_dim``).

    A size the config leaves out (or sets to null) is filled; one it sets must equal the model's, else a
    ValueError names the key (``model.loss.center.feat_dim=2048, but ...``). A term needing a size the
    task does not give is an error naming both.
    """
    node = OmegaConf.create(
        OmegaConf.to_container(config, resolve=True) if OmegaConf.is_config(config) else dict(config)
    )
    for key, term in node.items():
        name = str(key)
        if not isinstance(term, DictConfig) or "_target_" not in term:
            continue
        try:
            needs = getattr(get_class(term._target_), "model_dims", ())
        except (ImportError, ValueError):
            continue  # instantiate() below reports a bad _target_ with Hydra's own message
        for dim in needs:
            if dim not in dims:
                raise ValueError(
                    f"model.loss.{name}: {term._target_} needs '{dim}' from the model, the task gives "
                    f"{sorted(dims)}"
                )
            given = term.get(dim)
            if given is not None and int(given) != int(dims[dim]):
                raise ValueError(
                    f"model.loss.{name}.{dim}={given}, but the model's is {dims[dim]}; leave "
                    f"model.loss.{name}.{dim} unset to take the model's"
                )
            term[dim] = int(dims[dim])
    return instantiate(node)
