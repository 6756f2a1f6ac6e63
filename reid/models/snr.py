"""Style Normalization and Restitution (SNR) and a ResNet with SNR blocks after chosen stages.

Jin et al., "Style Normalization and Restitution for Generalizable Person Re-identification", CVPR 2020,
Sec. 3.1. For the feature map ``F`` [B, C, H, W] leaving a ResNet stage:

    F~  = IN(F)                                   style normalisation (InstanceNorm2d, affine)
    R   = F - F~                                  what IN removed (style and some identity)
    a   = sigmoid(W2 ReLU(W1 avgpool(R)))         channel gate [B, C], hidden width C / r, r = 16
    R+  = a * R,   R- = (1 - a) * R               identity-relevant / identity-irrelevant parts
    F~+ = F~ + R+  (enhanced, passed on),   F~- = F~ + R-  (contaminated)

so ``R+ + R- = R``. The dual causality loss (``reid.losses.causality``, Eq. 5-6 of the paper)
compares the pooled enhanced and contaminated features with the pooled normalised one: restoring
``R+`` must make a feature more discriminative than ``F~``, adding ``R-`` less.

The gate's two FC layers are 1x1 convolutions *with* biases, zero-initialised, the weights
Kaiming-normal (fan out), the IN affine parameters 1 and 0: the paper's Eq. 4 writes no bias (as SE
does), but the authors' only released SNR block (microsoft/SNR ``classification/PACS/resnet_SNR.py``,
``ChannelGate_sub``: ``nn.Conv2d(..., kernel_size=1, bias=True)``, and its initialisation loop) has
them, and this follows the code. The authors' re-id code was never released (microsoft/SNR issue #9).

:class:`SNRResNet` puts SNR blocks after any of the four stages of a :class:`reid.models.resnet.ResNet`
(the paper: after each of the four). It adopts the ResNet's modules under their own names, so the
state-dict keys of the ResNet part stay torchvision's (``conv1.*``, ``layer{1..4}.*``) and a torchvision
ImageNet checkpoint fills them; the SNR blocks live under ``snr.layer{k}.*``, new modules that no
pretrained file holds (``reid.models.weights_checks`` does not count them as backbone tensors to fill).
Contract as ResNet: ``forward_features``, ``num_features``, ``no_weight_decay``; besides,
``forward_stages`` gives the pooled stage features the causality loss reads, which ``CNNReIDNet``
passes on in training mode as ``ReIDModelOutput.aux`` entries named by :func:`stage_feature_name`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, Literal, NamedTuple

from torch import Tensor, nn

from reid.models.resnet import ResNet, resnet50
from reid.models.sie import CameraEmbedConfig

STAGES = (1, 2, 3, 4)
SNRFeature = Literal["normalized", "enhanced", "contaminated"]
SNR_FEATURES: tuple[SNRFeature, ...] = ("normalized", "enhanced", "contaminated")


def stage_feature_name(stage: str, kind: SNRFeature) -> str:
    """The ``aux`` name of a pooled SNR feature, e.g. ``snr.layer1.enhanced``."""
    return f"snr.{stage}.{kind}"


class SNROutput(NamedTuple):
    """The maps of one SNR block, each [B, C, H, W], and its gate [B, C]."""

    output: Tensor  # what the next stage receives: F~+ (the same tensor as ``enhanced``)
    normalized: Tensor  # F~ = IN(F)
    enhanced: Tensor  # F~+ = F~ + a * R
    contaminated: Tensor  # F~- = F~ + (1 - a) * R
    gate: Tensor  # a, in (0, 1)


class StageFeatures(NamedTuple):
    """``forward_stages``: the last stage's map and the pooled SNR features by ``aux`` name."""

    feature_map: Tensor  # [B, num_features, h, w], as forward_features
    aux: Mapping[str, Tensor]  # stage_feature_name(stage, kind) -> [B, C_stage]


class SEGate(nn.Module):
    """Channel gate of SNR (Eq. 4; squeeze-and-excitation, Hu et al. CVPR 2018):
    ``a = sigmoid(W2 ReLU(W1 avgpool(x)))``, ``x`` [B, C, H, W] -> ``a`` [B, C]; hidden width
    ``C // reduction``."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = channels // reduction if reduction > 0 else 0
        if hidden < 1:
            raise ValueError(
                f"SNR gate: channels={channels} with reduction={reduction} leaves no hidden unit; "
                f"need 1 <= reduction <= channels (model.backbone.reduction)"
            )
        self.fc1 = nn.Conv2d(channels, hidden, kernel_size=1, bias=True)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(hidden, channels, kernel_size=1, bias=True)
        for conv in (self.fc1, self.fc2):  # microsoft/SNR's initialisation of these convolutions
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
            if conv.bias is not None:
                nn.init.zeros_(conv.bias)

    def forward(self, x: Tensor) -> Tensor:
        squeezed = x.mean(dim=(2, 3), keepdim=True)
        return self.fc2(self.relu(self.fc1(squeezed))).sigmoid().flatten(1)


class SNRBlock(nn.Module):
    """One SNR module (Sec. 3.1, module docstring): ``F`` -> :class:`SNROutput`.

    Args:
        channels: ``C`` of the stage it follows.
        reduction: ``r`` of the gate (16 in the paper).
    """

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        self.norm = nn.InstanceNorm2d(channels, affine=True)  # weight 1, bias 0
        self.gate = SEGate(channels, reduction)

    def forward(self, x: Tensor) -> SNROutput:
        normalized = self.norm(x)
        residual = x - normalized
        gate = self.gate(residual)
        relevant = gate[:, :, None, None] * residual
        enhanced = normalized + relevant
        contaminated = normalized + (residual - relevant)
        return SNROutput(enhanced, normalized, enhanced, contaminated, gate)


def _stage_widths(resnet: ResNet) -> list[int]:
    """Output channels of each stage: those of its last block's last convolution (``conv3`` of a
    Bottleneck, ``conv2`` of a BasicBlock)."""
    widths = []
    for k in STAGES:
        last_block = getattr(resnet, f"layer{k}")[-1]
        conv = getattr(last_block, "conv3", None)
        widths.append(int((last_block.conv2 if conv is None else conv).out_channels))
    return widths


class SNRResNet(nn.Module):
    """A ResNet with an :class:`SNRBlock` after each stage in ``stages``.

    Args:
        resnet: the backbone (``reid.models.resnet``: any depth, IBN or not); its modules are adopted
            under their names, so the ResNet's keys are unchanged.
        stages: which stages (1-4) an SNR block follows; the paper: ``(1, 2, 3, 4)``.
        reduction: ``r`` of every gate.
    """

    conv1: nn.Module  # the ResNet's stem, adopted under its names
    bn1: nn.Module
    relu: nn.Module
    maxpool: nn.Module

    def __init__(self, resnet: ResNet, stages: Sequence[int] = STAGES, reduction: int = 16) -> None:
        super().__init__()
        stages = [int(s) for s in stages]
        if not stages or sorted(set(stages)) != stages or not set(stages) <= set(STAGES):
            raise ValueError(
                f"SNRResNet: stages must be increasing, distinct values out of {list(STAGES)}, got "
                f"{stages} (model.backbone.stages)"
            )
        if getattr(resnet, "grad_checkpointing", False):  # _run calls the stages itself, plainly
            raise ValueError(
                "SNRResNet: model.backbone.grad_checkpointing is not supported with SNR; set it false"
            )
        for name, module in resnet.named_children():
            self.add_module(name, module)
        self.num_features = int(resnet.num_features)
        self._resnet_no_weight_decay = set(resnet.no_weight_decay())
        widths = _stage_widths(resnet)
        self.stages = tuple(stages)
        self.snr = nn.ModuleDict({f"layer{k}": SNRBlock(widths[k - 1], reduction) for k in stages})

    def no_weight_decay(self) -> set[str]:
        """The ResNet's (nothing: no token or position embeddings)."""
        return set(self._resnet_no_weight_decay)

    def _run(self, images: Tensor, pooled: dict[str, Tensor] | None) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(images))))
        for k in STAGES:
            name = f"layer{k}"
            x = getattr(self, name)(x)
            if name in self.snr:
                out: SNROutput = self.snr[name](x)
                x = out.output
                if pooled is not None:
                    for kind in SNR_FEATURES:
                        pooled[stage_feature_name(name, kind)] = getattr(out, kind).mean(dim=(2, 3))
        return x

    def forward_features(self, images: Tensor) -> Tensor:
        """Images ``[B, 3, H, W]`` -> the last map ``[B, num_features, h, w]`` (after its SNR block)."""
        return self._run(images, None)

    def forward_stages(self, images: Tensor) -> StageFeatures:
        """As :meth:`forward_features`, plus the globally average-pooled F~, F~+ and F~- of every SNR
        block, [B, C_stage] each (``snr.layer{k}.{normalized,enhanced,contaminated}``)."""
        pooled: dict[str, Tensor] = {}
        feature_map = self._run(images, pooled)
        return StageFeatures(feature_map, MappingProxyType(pooled))

    def forward(self, images: Tensor) -> Tensor:
        return self.forward_features(images)


def snr_resnet(
    resnet: Callable[..., ResNet] = resnet50,
    stages: Sequence[int] = STAGES,
    reduction: int = 16,
    camera_embed: CameraEmbedConfig | None = None,
    **resnet_kwargs: Any,
) -> SNRResNet:
    """The backbone factory of ``conf/model/snr_r50.yaml`` (``_partial_``; the task calls it with
    ``camera_embed=``): ``resnet(camera_embed=camera_embed, **resnet_kwargs)`` (e.g.
    ``reid.models.resnet.resnet50`` with ``last_stride=1``) with SNR blocks after ``stages``."""
    return SNRResNet(resnet(camera_embed=camera_embed, **resnet_kwargs), stages, reduction)
