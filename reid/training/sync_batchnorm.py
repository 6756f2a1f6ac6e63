"""Batch normalisation over the global batch on any backend: torch's ``SyncBatchNorm`` runs on CUDA (and
XPU) only, so DDP on CPU (gloo) would normalise each process's share with its own statistics, and N
processes would not train as one. :class:`GlobalBatchNorm` computes the statistics of the whole batch
with differentiable all-reduces (``torch.distributed.nn.functional.all_reduce``, whose backward is the
all-reduce of the gradient), in two passes as the one-process layer does::

    mean = sum_all x / n,   var = sum_all (x - mean)^2 / n,   y = (x - mean) / sqrt(var + eps) * w + b

and updates the running statistics with the unbiased global variance, as ``BatchNorm`` does. Outside
training, or without a process group of several processes, it is the plain layer. :class:`GlobalBatchNormSync`
is the Lightning ``LayerSync`` plugin that swaps it in (``trainer.sync_batchnorm`` picks it on CPU,
``reid.config_checks``); on GPUs torch's own ``SyncBatchNorm`` is used.
"""

from __future__ import annotations

import torch
import torch.distributed.nn.functional as distributed
from lightning.pytorch.plugins.layer_sync import LayerSync
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from reid.distributed import world


class GlobalBatchNorm(_BatchNorm):
    """``BatchNorm1d/2d/3d`` whose training statistics are those of every process's batch together."""

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"GlobalBatchNorm: expected an input of 2 or more dimensions, got {input.dim()}")

    def forward(self, input: Tensor) -> Tensor:
        size, _ = world()
        if not self.training or size == 1:
            return super().forward(input)
        dims = [0, *range(2, input.dim())]
        shape = [1, -1] + [1] * (input.dim() - 2)
        count = input.new_tensor(float(input.numel() // input.shape[1]))
        total = distributed.all_reduce(torch.cat([input.sum(dims), count.view(1)]))
        n = total[-1]
        mean = total[:-1] / n
        centred = input - mean.view(shape)
        var = distributed.all_reduce(centred.pow(2).sum(dims)) / n
        output = centred / torch.sqrt(var.view(shape) + self.eps)
        if self.affine:
            output = output * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats:
            self._update_running_stats(mean.detach(), var.detach() * n / (n - 1))
        return output

    @torch.no_grad()
    def _update_running_stats(self, mean: Tensor, unbiased_var: Tensor) -> None:
        assert self.num_batches_tracked is not None and self.running_mean is not None  # track_running_stats
        assert self.running_var is not None
        self.num_batches_tracked.add_(1)
        momentum = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        self.running_mean.mul_(1 - momentum).add_(mean, alpha=momentum)
        self.running_var.mul_(1 - momentum).add_(unbiased_var, alpha=momentum)


def convert_to_global_batchnorm(module: nn.Module) -> nn.Module:
    """``module`` with every ``BatchNorm*d`` (not already global) replaced by a :class:`GlobalBatchNorm`
    holding the same parameters and buffers."""
    if isinstance(module, _BatchNorm) and not isinstance(module, GlobalBatchNorm):
        converted = GlobalBatchNorm(
            module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats
        )
        if module.affine:
            converted.weight, converted.bias = module.weight, module.bias
        if module.track_running_stats:
            converted.running_mean, converted.running_var = module.running_mean, module.running_var
            converted.num_batches_tracked = module.num_batches_tracked
        converted.train(module.training)
        return converted
    for name, child in module.named_children():
        module.add_module(name, convert_to_global_batchnorm(child))
    return module


class GlobalBatchNormSync(LayerSync):
    """Lightning plugin: every batch normalisation layer normalises with the global batch's statistics."""

    def apply(self, model: nn.Module) -> nn.Module:
        return convert_to_global_batchnorm(model)

    def revert(self, model: nn.Module) -> nn.Module:
        return model  # the layer is the plain one without a process group
