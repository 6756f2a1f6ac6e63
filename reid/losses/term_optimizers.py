"""The optimisers of loss terms that train their own parameters apart from the model (BoT's centres).

BoT (michuanhaohao/reid-strong-baseline ``engine/trainer.py``, ``create_supervised_trainer_with_center``)
steps its centres with a second optimiser after the model's: ``loss.backward(); optimizer.step();
c.grad *= 1 / CENTER_LOSS_WEIGHT; optimizer_center.step()``, and saves ``optimizer_center`` beside the
model. :class:`TermOptimizers` does that for every term with ``optimizer=`` (``LossTerm.own_optimizer``),
driven by the task's hooks:

* :meth:`build` in ``configure_optimizers`` (the parameters are on their device by then);
* :meth:`step` in ``on_before_optimizer_step``: once per real optimiser step, after all gradient
  accumulation micro-batches; each term's gradients are multiplied by ``own_grad_scale() / loss_scale``
  (``loss_scale``: the fp16 GradScaler's current scale, which Lightning unscales for the task's optimiser
  only; 1 in fp32/bf16), the optimiser steps, the gradients are cleared (the task's ``zero_grad`` does not
  reach them). Under fp16 a step with non-finite gradients of the term is skipped, as GradScaler skips
  the model's; the term's own gradients decide (an overflow in the model's gradients that skips the
  model's step leaves the term's valid step alone);
* :meth:`save` / :meth:`load` in ``on_save_checkpoint`` / ``on_load_checkpoint`` under
  ``checkpoint["loss_term_optimizers"]``; state read before :meth:`build` (Lightning restores the
  module before it builds optimisers) is applied when they are built, so a resume is exact.

The terms' parameters themselves are in the module's ``state_dict`` (``objective.terms.<name>.*``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch.optim import Optimizer

from reid.losses.objective import Objective

CHECKPOINT_KEY = "loss_term_optimizers"


class TermOptimizers:
    """The own optimisers of ``objective``'s terms, by term name (module docstring)."""

    def __init__(self, objective: Objective) -> None:
        self.objective = objective
        self.optimizers: dict[str, Optimizer] = {}
        self._pending: dict[str, Any] | None = None

    def build(self) -> None:
        """(Re)create the optimisers from the terms; applies state loaded before."""
        self.optimizers = {}
        for name, term in self.objective.named_terms():
            optimizer = term.own_optimizer()
            if optimizer is not None:
                self.optimizers[name] = optimizer
        if self._pending is not None:
            pending, self._pending = self._pending, None
            self.load_state_dict(pending)

    def step(self, loss_scale: float = 1.0) -> None:
        """Scale each term's gradients by ``own_grad_scale() / loss_scale``, step, clear them."""
        for name, optimizer in self.optimizers.items():
            term = self.objective.term(name)
            grads = [
                p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None
            ]
            if grads:
                finite = loss_scale == 1.0 or all(bool(torch.isfinite(g).all()) for g in grads)
                if finite:
                    torch._foreach_mul_(grads, term.own_grad_scale() / loss_scale)
                    optimizer.step()
            optimizer.zero_grad(set_to_none=True)

    def state_dict(self) -> dict[str, Any]:
        return {name: optimizer.state_dict() for name, optimizer in self.optimizers.items()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the optimisers (or keep the state for :meth:`build`); the term names must agree."""
        if not self.optimizers and self._expected_names():
            self._pending = dict(state)
            return
        if set(state) != set(self.optimizers):
            raise ValueError(
                f"checkpoint['{CHECKPOINT_KEY}'] holds optimisers of the loss terms {sorted(state)}, but "
                f"this model's terms with their own optimiser are {sorted(self.optimizers)}; resume with the "
                "run's own model.loss"
            )
        for name, optimizer in self.optimizers.items():
            optimizer.load_state_dict(state[name])

    def _expected_names(self) -> list[str]:
        return [name for name, term in self.objective.named_terms() if term.has_own_optimizer]

    def save(self, checkpoint: dict[str, Any]) -> None:
        """Write the optimisers' state into a Lightning checkpoint dict (nothing when there are none)."""
        if self.optimizers:
            checkpoint[CHECKPOINT_KEY] = self.state_dict()

    def load(self, checkpoint: Mapping[str, Any]) -> None:
        """Read what :meth:`save` wrote; a checkpoint without it leaves the optimisers fresh (a run saved
        before its terms had their own optimiser, or evaluation only)."""
        if CHECKPOINT_KEY in checkpoint:
            self.load_state_dict(checkpoint[CHECKPOINT_KEY])
