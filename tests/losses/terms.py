"""Loss terms the tests add through config (``model.loss.<name>._target_=tests.losses.terms...``)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from reid.losses import LossTerm, ObjectiveInput


class MeanCentreTerm(LossTerm):
    """A term with parameters: mean squared distance of each global feature to one learned centre."""

    def __init__(self, weight: float = 1.0, dim: int = 48, lr: float = 0.5) -> None:
        super().__init__(weight)
        self.centre = nn.Parameter(torch.zeros(dim))
        self.lr = lr

    def param_group_options(self) -> dict:
        return {"lr": self.lr, "weight_decay": 0.0}

    def forward(self, inputs: ObjectiveInput) -> Tensor:
        return (inputs.feats[0] - self.centre).pow(2).sum(1).mean()
