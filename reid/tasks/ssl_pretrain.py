"""Self-supervised pretraining of a ViT: DINO, and PASS when ``num_parts > 0``.

DINO (Caron et al., ICCV 2021; TransReID-SSL, Luo et al. 2021): a student (backbone + projection
head) learns to match an EMA teacher across multi-crop views; the teacher sees the 2 global
crops, the student all crops. PASS (Zhu et al., ECCV 2022) adds L part tokens; the student's part
token r on a local crop of band r matches the teacher's part token r on the globals.

Per optimiser step ``i`` (schedules are arrays precomputed from epochs x steps per epoch):

    lr[i]: linear warmup to lr * batch / 256, cosine to min_lr     wd[i]: cosine 0.04 -> 0.4
    m[i]: cosine 0.996 -> 1 (teacher EMA)                           tau_t[i]: teacher temperature
    gradients clipped per parameter to norm 3.0; head's last layer frozen during epoch 0.

Exact resume: all model randomness (drop path) is reseeded from ``step_seed + i`` at each step, the
crops are a function of (seed, epoch, image) and the sampler restarts mid-epoch (ssl_datamodule),
so a resumed run reproduces the uninterrupted one bit for bit on CPU.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple, cast

import lightning as L
import numpy as np
import torch
from lightning.pytorch.core.optimizer import LightningOptimizer
from torch import Tensor, nn
from torch.optim import Optimizer

from reid.data.records import DatasetInfo
from reid.evaluation import EvalConfig, ReIDEvaluator
from reid.evaluation.evaluator import update_with_batch
from reid.losses.dino import DINOLoss, mean_entropy, teacher_temperature_schedule
from reid.losses.pass_loss import PASSLoss
from reid.models.ema import ema_update_
from reid.models.projection_head import DINOHead
from reid.optim.schedules import cosine_schedule


class Schedules(NamedTuple):
    lr: np.ndarray
    weight_decay: np.ndarray
    momentum: np.ndarray
    teacher_temp: np.ndarray


@dataclass(frozen=True)
class ScheduleSettings:
    """The task's schedule keys (DINO's ``main_dino.py`` arguments of the same names)."""

    epochs: int | None
    lr: float
    min_lr: float
    warmup_epochs: float
    weight_decay: float
    weight_decay_end: float
    momentum_teacher: float
    teacher_temp: float
    warmup_teacher_temp: float
    warmup_teacher_temp_epochs: int


class CropOutputs(NamedTuple):
    """Head outputs of one network: globals [G, B, 1+L, K]; locals [n, B, 2, K] (CLS, part of its band)."""

    globals: Tensor
    locals: Tensor | None


def decay_groups(module: nn.Module) -> list[dict[str, Any]]:
    """DINO's two groups: weights with ndim > 1 (decayed; index 0) and biases / norms (not decayed)."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for name, param in module.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if name.endswith(".bias") or param.ndim <= 1 else decay).append(param)
    return [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]


class SSLPretrainTask(L.LightningModule):
    """DINO / PASS pretraining (module docstring).

    Args:
        backbone: partial ViT factory (``reid.models.vit.vit_small`` etc.), called as
            ``backbone(num_parts=..., drop_path_rate=...)`` for the student and the teacher.
        optimizer: partial optimizer (AdamW), called with the two parameter groups.
        num_parts: L part tokens (0 = DINO).
        epochs: schedule length (defaults to ``trainer.max_epochs``).
        lr: peak lr for a total batch of 256 (scaled linearly with batch x world size).
        step_seed: reseed torch's RNG with ``step_seed + step`` at every step (exact resume);
            None leaves the RNG alone.
        data_info, evaluation: passed by ``reid.run`` for every task; ``evaluation`` configures
            the kNN monitor, ``data_info`` is unused (no classes in self-supervision).
    """

    def __init__(
        self,
        backbone: Callable[..., nn.Module],
        optimizer: Callable[[Iterable[dict[str, Any]]], Optimizer],
        num_parts: int = 0,
        out_dim: int = 65536,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        norm_last_layer: bool = True,
        drop_path_rate: float = 0.1,
        epochs: int | None = None,
        lr: float = 5e-4,
        min_lr: float = 1e-6,
        warmup_epochs: float = 10,
        weight_decay: float = 0.04,
        weight_decay_end: float = 0.4,
        momentum_teacher: float = 0.996,
        teacher_temp: float = 0.04,
        warmup_teacher_temp: float = 0.04,
        warmup_teacher_temp_epochs: int = 0,
        student_temp: float = 0.1,
        center_momentum: float = 0.9,
        clip_grad: float = 3.0,
        freeze_last_layer_epochs: int = 1,
        step_seed: int | None = 0,
        data_info: DatasetInfo | None = None,
        evaluation: EvalConfig | None = None,
    ) -> None:
        super().__init__()
        if num_parts < 0:
            raise ValueError(f"SSLPretrainTask: num_parts must be >= 0, got {num_parts}")
        self.num_parts = num_parts
        self.student = self._network(
            backbone, drop_path_rate, out_dim, hidden_dim, bottleneck_dim, norm_last_layer
        )
        self.teacher = self._network(backbone, 0.0, out_dim, hidden_dim, bottleneck_dim, norm_last_layer)
        self.teacher.load_state_dict(self.student.state_dict())
        self.teacher.requires_grad_(False)
        if num_parts:
            self.criterion: DINOLoss | PASSLoss = PASSLoss(out_dim, num_parts, student_temp, center_momentum)
        else:
            self.criterion = DINOLoss(out_dim, student_temp, center_momentum)
        self.optimizer_factory = optimizer
        self.hp = ScheduleSettings(
            epochs, lr, min_lr, warmup_epochs, weight_decay, weight_decay_end, momentum_teacher,
            teacher_temp, warmup_teacher_temp, warmup_teacher_temp_epochs,
        )  # fmt: skip
        self.clip_grad = clip_grad
        self.freeze_last_layer_epochs = freeze_last_layer_epochs
        self.step_seed = step_seed
        self.evaluation = evaluation if evaluation is not None else EvalConfig(metric="cosine")
        self.schedules: Schedules | None = None
        self._step = 0
        self._test_evaluator: ReIDEvaluator | None = None
        # train/loss_epoch: (epoch, sum of loss x images, images) on this rank, saved in checkpoints so
        # that a run resumed inside an epoch averages every step of it
        self._epoch_loss = (-1, 0.0, 0)

    def _network(
        self, backbone: Callable[..., nn.Module], drop_path: float, *head_args: Any
    ) -> nn.ModuleDict:
        net: Any = backbone(num_parts=self.num_parts, drop_path_rate=drop_path)  # the project's ViT
        if getattr(net, "num_parts", 0) != self.num_parts:
            raise ValueError(
                f"SSLPretrainTask: backbone built with num_parts={net.num_parts}, expected {self.num_parts}"
            )
        return nn.ModuleDict({"backbone": net, "head": DINOHead(net.embed_dim, *head_args)})

    # ---- schedules -------------------------------------------------------------------------------
    def build_schedules(self, batch_size: int, steps_per_epoch: int) -> Schedules:
        """The four per-step arrays for ``batch_size`` images per rank."""
        hp = self.hp
        epochs = hp.epochs or self.trainer.max_epochs
        if (epochs is None or epochs <= 0) and self.trainer.max_steps > 0:
            epochs = -(-self.trainer.max_steps // steps_per_epoch)
        if epochs is None or epochs <= 0:
            raise ValueError(
                "SSLPretrainTask: set model.epochs, trainer.max_epochs or trainer.max_steps (schedule length)"
            )
        peak = hp.lr * batch_size * self.trainer.world_size / 256.0
        return Schedules(
            lr=cosine_schedule(peak, hp.min_lr, epochs, steps_per_epoch, warmup_epochs=hp.warmup_epochs),
            weight_decay=cosine_schedule(hp.weight_decay, hp.weight_decay_end, epochs, steps_per_epoch),
            momentum=cosine_schedule(hp.momentum_teacher, 1.0, epochs, steps_per_epoch),
            teacher_temp=teacher_temperature_schedule(
                hp.warmup_teacher_temp,
                hp.teacher_temp,
                hp.warmup_teacher_temp_epochs,
                epochs,
                steps_per_epoch,
            ),
        )

    def _schedule_value(self, values: np.ndarray) -> float:
        return float(values[min(self._step, len(values) - 1)])

    # ---- forward ---------------------------------------------------------------------------------
    @staticmethod
    def _backbone(net: nn.ModuleDict) -> Any:
        """The ViT of a student or teacher network (``forward_features``, ``embed_dim``)."""
        return net["backbone"]

    def _outputs(self, net: nn.ModuleDict, crops: list[Tensor], regions: Tensor | None) -> CropOutputs:
        """Head outputs on the global crops (CLS and all parts) and, if ``regions`` is given, the locals."""
        num_tokens = 1 + self.num_parts
        globals_ = torch.cat(crops[:2])
        tokens = self._backbone(net).forward_features(globals_)[:, :num_tokens]
        out_g = net["head"](tokens).unflatten(0, (2, -1))
        if regions is None or len(crops) == 2:
            return CropOutputs(out_g, None)
        local = torch.cat(crops[2:])
        tokens = self._backbone(net).forward_features(local)
        batch = crops[2].shape[0]
        selected = [tokens[:, 0]]
        if self.num_parts:
            rows = torch.arange(local.shape[0], device=local.device)
            selected.append(tokens[rows, 1 + regions.to(local.device).repeat_interleave(batch)])
        out_l = net["head"](torch.stack(selected, dim=1)).unflatten(0, (len(crops) - 2, batch))
        return CropOutputs(out_g, out_l)

    def compute_loss(self, crops: list[Tensor], regions: Tensor, teacher_temp: float) -> dict[str, Tensor]:
        """The loss terms, plus the [CLS] stream's collapse check: ``teacher_entropy`` = mean
        H(P_t) and ``kl`` = loss_cls - teacher_entropy, the mean KL(P_t || P_s) over view pairs
        (every global is the teacher of the same number of pairs)."""
        with torch.no_grad():
            teacher = self._outputs(self.teacher, crops, None).globals
            entropy = mean_entropy(self.criterion.cls_centre.probabilities(teacher[:, :, 0], teacher_temp))
        student = self._outputs(self.student, crops, regions)
        losses = self._criterion(student, teacher, regions, teacher_temp)
        losses["teacher_entropy"] = entropy
        losses["kl"] = losses["loss_cls"].detach() - entropy
        return losses

    def _criterion(
        self, student: CropOutputs, teacher: Tensor, regions: Tensor, teacher_temp: float
    ) -> dict[str, Tensor]:
        s_g, s_l = student.globals, student.locals
        s_cls = s_g[:, :, 0] if s_l is None else torch.cat([s_g[:, :, 0], s_l[:, :, 0]])
        if not self.num_parts:
            loss = self.criterion(list(s_cls), list(teacher[:, :, 0]), teacher_temp)
            return {"loss": loss, "loss_cls": loss}
        empty = s_g.new_zeros(0, *s_g.shape[1:2], s_g.shape[-1])
        out = self.criterion(
            student_cls=s_cls,
            student_parts_global=s_g[:, :, 1:].transpose(1, 2),
            student_parts_local=empty if s_l is None else s_l[:, :, 1],
            teacher_cls=teacher[:, :, 0],
            teacher_parts=teacher[:, :, 1:].transpose(1, 2),
            regions=regions if s_l is not None else regions[:0],
            teacher_temp=teacher_temp,
        )
        return out._asdict()

    # ---- Lightning hooks -------------------------------------------------------------------------
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        self._step = self.global_step
        if self.schedules is None:
            self.schedules = self.build_schedules(
                batch["index"].shape[0], int(self.trainer.num_training_batches)
            )
        if self.step_seed is not None:
            torch.manual_seed(self.step_seed + self._step)
        lr, wd = self._schedule_value(self.schedules.lr), self._schedule_value(self.schedules.weight_decay)
        optimizer = cast(LightningOptimizer, self.optimizers()).optimizer  # the one optimiser
        for i, group in enumerate(optimizer.param_groups):
            group["lr"] = lr
            if i == 0:
                group["weight_decay"] = wd
        temp = self._schedule_value(self.schedules.teacher_temp)
        losses = self.compute_loss(batch["crops"], batch["regions"], temp)
        loss = losses["loss"]
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"SSLPretrainTask: loss is {loss.item()} at step {self._step} (epoch {self.current_epoch}, "
                f"lr {lr:.3g}); stopping. Lower model.lr, raise model.warmup_epochs or model.clip_grad."
            )
        log: dict[str, Tensor | float] = {f"train/{name}": value.detach() for name, value in losses.items()}
        log |= {"train/lr": lr, "train/wd": wd, "train/teacher_temp": temp}
        log["train/momentum"] = self._schedule_value(self.schedules.momentum)
        batch_size = batch["index"].shape[0]
        self.log_dict(log, on_step=True, on_epoch=False, prog_bar=False, batch_size=batch_size)
        epoch, total, count = self._epoch_loss
        if epoch != self.current_epoch:
            total, count = 0.0, 0
        self._epoch_loss = (self.current_epoch, total + float(loss.detach()) * batch_size, count + batch_size)
        return loss

    def on_train_epoch_end(self) -> None:
        epoch, total, count = self._epoch_loss
        if epoch == self.current_epoch and count:
            mean = torch.tensor(total / count, dtype=torch.float32, device=self.device)
            self.log("train/loss_epoch", mean, prog_bar=True, sync_dist=True, batch_size=count)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["epoch_loss"] = list(self._epoch_loss)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if "epoch_loss" in checkpoint:
            epoch, total, count = checkpoint["epoch_loss"]
            self._epoch_loss = (int(epoch), float(total), int(count))

    def on_before_optimizer_step(self, optimizer: Optimizer) -> None:
        if self.clip_grad > 0:  # DINO clips every parameter's gradient separately
            for param in self.student.parameters():
                if param.grad is not None:
                    scale = self.clip_grad / (param.grad.norm(2) + 1e-6)
                    param.grad.mul_(scale.clamp(max=1.0))
        if self.current_epoch < self.freeze_last_layer_epochs:
            for param in cast(DINOHead, self.student["head"]).last_layer.parameters():
                param.grad = None

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        super().optimizer_step(*args, **kwargs)
        if self.schedules is None:
            raise RuntimeError("SSLPretrainTask: optimizer_step before training_step built the schedules")
        ema_update_(self.teacher, self.student, self._schedule_value(self.schedules.momentum))

    def configure_optimizers(self) -> Optimizer:
        return self.optimizer_factory(decay_groups(self.student))

    @torch.no_grad()
    def monitor_features(self, images: Tensor) -> Tensor:
        """Teacher backbone retrieval feature: [CLS], or cat(CLS, mean(parts)) for PASS."""
        tokens = self._backbone(self.teacher).forward_features(images)
        if not self.num_parts:
            return tokens[:, 0]
        return torch.cat([tokens[:, 0], tokens[:, 1 : 1 + self.num_parts].mean(dim=1)], dim=1)

    # ---- test: the teacher's retrieval scores on the datamodule's monitor set --------------------
    def on_test_epoch_start(self) -> None:
        num_query = getattr(getattr(self.trainer, "datamodule", None), "num_query", 0)  # attached at run time
        self._test_evaluator = ReIDEvaluator(num_query, self.evaluation) if num_query else None

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        if self._test_evaluator is not None:
            config = self._test_evaluator.config
            update_with_batch(self._test_evaluator, self.monitor_features, batch, config, self.device)

    def on_test_epoch_end(self) -> None:
        if self._test_evaluator is not None:
            result = self._test_evaluator.compute().as_dict()
            self.log_dict({f"test/{name}": value for name, value in result.items()})
