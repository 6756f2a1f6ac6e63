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
``model_dims`` and is given as a partial (``_partial_: true``); the task completes it with
:meth:`Objective.bind_model` once its net exists. Adding a loss means a term module and a config entry::

    loss:
      _target_: reid.losses.Objective
      id:  {_target_: reid.losses.IDTerm, weight: 1.0, label_smoothing: 0.0}
      tri: {_target_: reid.losses.TripletTerm, weight: 1.0, margin: null}
      center: {_target_: reid.losses.CenterTerm, _partial_: true, weight: 5.0e-4}

A term set to ``null`` in the config is left out (``model.loss.tri=null``).

TransReID Sec. 3.3 (``loss/make_loss.py``) is the two default terms: with a global branch g and k JPM
local branches l_j, both are summed over branches with the network's branch weights::

    L_ID  = 0.5 * CE(z_g) + 0.5 * (1/k) sum_j CE(z_lj)
    L_Tri = 0.5 * Tri(f_g) + 0.5 * (1/k) sum_j Tri(f_lj)

(``(1.0,)`` without JPM). The triplet term takes the features before the BNNeck, the ID term the
logits after it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, ClassVar, NamedTuple, cast

import torch
from torch import Tensor, nn

from reid.losses.id_loss import IDLoss
from reid.losses.triplet import TripletLoss
from reid.optim import OptimizerFactory


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
    from the model: the term comes as a partial, :meth:`Objective.bind_model` completes it. A term may
    report diagnostics of its last forward by filling ``self.stats`` (name -> scalar); they reach the log
    as ``train/<term>/<name>``.
    """

    model_dims: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        weight: float = 1.0,
        optimizer: OptimizerFactory | None = None,
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


TermFactory = Callable[..., "LossTerm"]
"""A loss term still missing model sizes: a ``functools.partial`` of a :class:`LossTerm` class, or the
class."""


def _term_class(value: Any) -> type[LossTerm] | None:
    """The :class:`LossTerm` class a factory builds (a partial of it, or the class), else None."""
    func = value.func if isinstance(value, functools.partial) else value
    return func if isinstance(func, type) and issubclass(func, LossTerm) else None


class Objective(nn.Module):
    """``L = sum_t w_t(step) L_t`` over named :class:`LossTerm` s (``None`` entries are dropped).

    A term is a built :class:`LossTerm` or a :data:`TermFactory` that :meth:`bind_model` completes with
    the model sizes its class names in ``model_dims``. Raises at construction when no term is left or a
    term is neither, naming it.
    """

    def __init__(self, **terms: LossTerm | TermFactory | None) -> None:
        super().__init__()
        kept = {name: term for name, term in terms.items() if term is not None}
        for name, term in kept.items():
            if not isinstance(term, LossTerm) and _term_class(term) is None:
                raise TypeError(
                    f"model.loss.{name}: expected a loss term (reid.losses.LossTerm, e.g. "
                    f"reid.losses.IDTerm) or a partial of one, got {type(term).__name__}"
                )
        if not kept:
            raise ValueError("model.loss: no loss term is set (every entry is null)")
        self.terms = nn.ModuleDict({name: term for name, term in kept.items() if isinstance(term, LossTerm)})
        self._unbound: dict[str, TermFactory] = {
            name: term for name, term in kept.items() if not isinstance(term, LossTerm)
        }
        self._order = list(kept)

    def bind_model(self, **dims: int) -> Objective:
        """Build the factory terms, each given the sizes of the model its class's ``model_dims`` names (the
        task passes ``num_classes`` and ``feat_dim``); returns ``self``.

        A size the partial already sets must equal the model's, else a ValueError names the key
        (``model.loss.center.feat_dim=2048, but ...``); a term needing a size the task does not give is an
        error naming both.
        """
        for name, factory in self._unbound.items():
            term_class = _term_class(factory)
            assert term_class is not None  # checked in __init__
            given = factory.keywords if isinstance(factory, functools.partial) else {}
            sizes: dict[str, int] = {}
            for dim in term_class.model_dims:
                if dim not in dims:
                    raise ValueError(
                        f"model.loss.{name}: {term_class.__name__} needs '{dim}' from the model, the task "
                        f"gives {sorted(dims)}"
                    )
                if given.get(dim) is not None and int(given[dim]) != int(dims[dim]):
                    raise ValueError(
                        f"model.loss.{name}.{dim}={given[dim]}, but the model's is {dims[dim]}; leave "
                        f"model.loss.{name}.{dim} unset to take the model's"
                    )
                sizes[dim] = int(dims[dim])
            self.terms[name] = factory(**sizes)
        self.terms = nn.ModuleDict({name: self.terms[name] for name in self._order})
        self._unbound = {}
        return self

    def named_terms(self) -> list[tuple[str, LossTerm]]:
        """``(name, term)`` of every term, in config order; an error while a factory term is unbound."""
        if self._unbound:
            raise RuntimeError(
                f"Objective: terms {sorted(self._unbound)} still need the model's sizes; call "
                "bind_model(num_classes=..., feat_dim=...) first (the task does)"
            )
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
