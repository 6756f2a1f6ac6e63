"""Flags a run whose RPE-triplet loss diverges: the users saw d_an and the position tables blow up late in
training, while the loss stayed finite (so the non-finite guard never fired).

After every step it reads the term's ``pos_embed_norm`` (the absolute position table, the tensor a
runaway grows: the naive relation is quadratic in it) and ``d_an`` (the anchor-negative distance the users
saw blow up; any runaway of the relation vectors shows in it), keeps each one's value at the first step,
and flags the run the first time one exceeds ``factor`` times its start: a warning naming the quantity,
its growth and the step, and
``train/rpe_triplet/diverged_step`` logged from then on (``-1`` before; ``results.json`` keeps the last
logged value, ``reid.tools.summarize`` shows it as a column). With ``stop=true`` the run also stops there
(its ``last.ckpt`` is the step's state). The start values travel in checkpoints, so a resumed run keeps
measuring against the first step of the whole run.

Not watched: ``relation_norm`` and ``rel_bias_norm``. The relative bias table starts at zero, so learning
it multiplies both many times over without anything running away: in the SGD study at weight 50 the soft
form's relation norm goes 0.015 -> 0.41 in four steps and then stays between 1 and 3.5 for 440 steps,
which a relation-norm rule called a divergence at step 4 (docs/rpe.md). Both stay logged.
"""

from __future__ import annotations

import logging
from typing import Any

import lightning as L

from reid.callbacks.rpe_monitor import rpe_term

log = logging.getLogger("reid")
QUANTITIES = ("pos_embed_norm", "d_an")
"""The term's stats the flag watches (module docstring)."""


class RPEDivergence(L.Callback):
    """Flags (and with ``stop`` stops) a run when an RPE-triplet norm grows past ``factor`` x its start."""

    def __init__(self, factor: float = 10.0, stop: bool = False) -> None:
        if not factor > 1:
            raise ValueError(f"callbacks.rpe_divergence.factor={factor}: expected a number > 1")
        self.factor, self.stop = float(factor), bool(stop)
        self.start: dict[str, float] = {}
        self.diverged_step = -1
        self.reason = ""

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        term = rpe_term(pl_module)
        if term is None:
            return
        values = {k: float(v) for k, v in term.stats.items() if k in QUANTITIES}
        for name, value in values.items():
            self.start.setdefault(name, value)
            start = self.start[name]
            if self.diverged_step < 0 and start > 0 and value > self.factor * start:
                self.diverged_step = int(trainer.global_step)
                self.reason = f"{name} {start:.3g} -> {value:.3g} ({value / start:.1f}x)"
                stopping = "; stopping (callbacks.rpe_divergence.stop)" if self.stop else ""
                log.warning(
                    "the RPE-triplet loss diverges at step %d: %s, past %gx its first-step value%s",
                    self.diverged_step, self.reason, self.factor, stopping,
                )  # fmt: skip
                if self.stop:
                    trainer.should_stop = True
        pl_module.log(
            "train/rpe_triplet/diverged_step", float(self.diverged_step), on_step=True, on_epoch=False
        )

    def state_dict(self) -> dict[str, Any]:
        return {"start": dict(self.start), "diverged_step": self.diverged_step, "reason": self.reason}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.start = dict(state.get("start", {}))
        self.diverged_step = int(state.get("diverged_step", -1))
        self.reason = str(state.get("reason", ""))
