"""LightningModules: each orchestrates a model, its losses, optimiser and evaluation."""

from reid.tasks.transreid import TransReIDTask

__all__ = ["TransReIDTask"]
