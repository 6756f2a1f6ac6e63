"""ResNet backbone for re-identification with a configurable last stride (BoT).

ResNet (He et al., "Deep Residual Learning for Image Recognition", CVPR 2016), torchvision's v1.5
variant (the stride of a downsampling Bottleneck sits on its 3x3 conv). Each block computes
``x_{k+1} = ReLU(F_k(x_k) + W_s x_k)`` (Eq. 2), ``W_s`` the identity, or a 1x1 conv + BN where the
shape changes. Stem conv 7x7/2 + max-pool /2, then four stages at strides 1, 2, 2 and ``last_stride``:

    last_stride = 2:  output stride 32, a 256 x 128 image -> an  8 x 4 map   (ImageNet ResNet)
    last_stride = 1:  output stride 16, a 256 x 128 image -> a  16 x 8 map   (BoT)

"Last stride = 1" is one of the tricks of BoT (Luo et al., "Bag of Tricks and a Strong Baseline for
Deep Person Re-identification", CVPRW 2019; TMM 2019): removing the down-sampling of the last stage
(its first block's 3x3 conv and its shortcut 1x1 conv get stride 1) quadruples the area of the last
map at no parameter cost; the authors' ablation on Market-1501: R1 91.4 -> 92.0, mAP 80.3 -> 81.7.

Built on torchvision's ``ResNet._make_layer``, ``BasicBlock`` and ``Bottleneck``, with torchvision's
initialisation; the state-dict keys are torchvision's (``conv1.*``, ``bn1.*``, ``layer{1..4}.{i}.*``)
without the ImageNet ``fc.*``, so ``reid.models.weights`` loads torchvision checkpoints directly.

Contract shared with ``reid.models.vit``: ``forward_features(images) -> [B, C, H, W]``,
``num_features`` (= C) and ``no_weight_decay()`` (empty: a CNN has no tokens or positions).

Activation checkpointing (``grad_checkpointing=True``, as timm's ResNet ``set_grad_checkpointing``): in
training with grad enabled each stage ``layer1..layer4`` runs under a non-reentrant
``torch.utils.checkpoint.checkpoint``, keeping only its input and recomputing its activations in backward.
The recompute runs the stage's BatchNorms in training mode a second time; their running statistics (and
``num_batches_tracked``) are restored after it, so they advance once per step, as without checkpointing
(timm's ResNet updates them twice).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint
from torchvision.models import resnet as tv

from reid.models.ibn import with_ibn_a
from reid.models.sie import CameraEmbedConfig

Block = type[tv.BasicBlock] | type[tv.Bottleneck]
STANDARD_WIDTHS = (64, 128, 256, 512)


@contextmanager
def buffers_restored(module: nn.Module) -> Iterator[None]:
    """Put ``module``'s buffers (BatchNorm running statistics) back as they were on entry, on exit."""
    saved = [(buffer, buffer.clone()) for buffer in module.buffers()]
    try:
        yield
    finally:
        with torch.no_grad():
            for buffer, value in saved:
                buffer.copy_(value)


def checkpointed_stage(stage: nn.Module, x: Tensor) -> Tensor:
    """``stage(x)`` under a non-reentrant checkpoint whose recompute leaves the stage's buffers unchanged."""
    return checkpoint(
        stage, x, use_reentrant=False, context_fn=lambda: (nullcontext(), buffers_restored(stage))
    )


class ResNet(tv.ResNet):
    """torchvision's ResNet without ``avgpool``/``fc``, with ``last_stride`` and stage ``widths``.

    Args:
        block: ``BasicBlock`` (ResNet-18/34) or ``Bottleneck`` (ResNet-50/101/152).
        layers: blocks per stage.
        widths: stage widths (``planes``); the stem has ``widths[0]`` channels. torchvision's
            constructor fixes them at 64..512 and adds an ImageNet ``fc``, so this class sets the
            attributes its ``_make_layer`` reads and builds the stages itself.
        last_stride: stride of the last stage, 1 (BoT) or 2 (ImageNet ResNet).
        zero_init_residual: zero the last BN of every residual branch (torchvision option).
        norm_layer: 2D normalisation layer (default ``BatchNorm2d``).
        camera_embed: only ``None``: side-information embeddings (TransReID SIE) are ViT token
            offsets; the argument exists so the task's backbone call fails with a clear message.
        grad_checkpointing: recompute each stage's activations in backward (module docstring).
        stem_relu: the ReLU after the stem's ``bn1`` (torchvision). BoT's ResNet has none: its line is
            commented out in reid-strong-baseline ``modeling/backbones/resnet.py`` ("add missed relu"),
            and its published models trained without it; ``False`` makes ``relu`` the identity, so
            BoT's weights give BoT's features (the state-dict keys are the same either way).
    """

    def __init__(
        self,
        block: Block,
        layers: Sequence[int],
        widths: Sequence[int] = STANDARD_WIDTHS,
        last_stride: int = 1,
        zero_init_residual: bool = False,
        norm_layer: Callable[[int], nn.Module] | None = None,
        camera_embed: CameraEmbedConfig | None = None,
        grad_checkpointing: bool = False,
        stem_relu: bool = True,
    ) -> None:
        nn.Module.__init__(self)  # tv.ResNet.__init__ would build fixed widths and an unused fc
        if not isinstance(grad_checkpointing, bool):
            raise TypeError(
                f"ResNet: grad_checkpointing (model.backbone.grad_checkpointing) must be true or false, got "
                f"{grad_checkpointing!r}"
            )
        self.grad_checkpointing = grad_checkpointing
        if camera_embed is not None:
            raise ValueError(
                "ResNet: side-information embedding (model.sie) adds camera/view vectors to ViT tokens "
                "and does not apply to a CNN backbone; set model.sie=null"
            )
        if last_stride not in (1, 2):
            raise ValueError(f"ResNet: last_stride must be 1 or 2, got {last_stride}")
        if len(layers) != 4 or len(widths) != 4:
            raise ValueError(f"ResNet: need 4 stages, got layers={list(layers)} widths={list(widths)}")
        self._norm_layer = norm_layer or nn.BatchNorm2d
        self.inplanes, self.dilation, self.groups, self.base_width = widths[0], 1, 1, 64
        self.last_stride = last_stride
        self.conv1 = nn.Conv2d(3, self.inplanes, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = self._norm_layer(self.inplanes)
        self.relu = (
            nn.ReLU(inplace=True) if stem_relu else nn.Identity()
        )  # the stem's only: blocks have theirs
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, widths[0], layers[0])
        self.layer2 = self._make_layer(block, widths[1], layers[1], stride=2)
        self.layer3 = self._make_layer(block, widths[2], layers[2], stride=2)
        self.layer4 = self._make_layer(block, widths[3], layers[3], stride=last_stride)
        self.num_features = widths[3] * block.expansion
        self._init_weights(zero_init_residual)

    def _init_weights(self, zero_init_residual: bool) -> None:
        # torchvision's: Kaiming-normal (fan_out) convs, unit/zero norms, optional zero last BN
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        if zero_init_residual:
            for module in self.modules():
                if isinstance(module, tv.Bottleneck):
                    nn.init.zeros_(module.bn3.weight)
                elif isinstance(module, tv.BasicBlock):
                    nn.init.zeros_(module.bn2.weight)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Turn activation checkpointing of the four stages on or off (timm contract)."""
        self.grad_checkpointing = enable

    def no_weight_decay(self) -> set[str]:
        """Nothing: no token or position embeddings (timm contract)."""
        return set()

    def forward_features(self, images: Tensor) -> Tensor:
        """Images ``[B, 3, H, W]`` -> the last stage's map ``[B, num_features, H/s, W/s]``,
        ``s = 16 * last_stride``."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(images))))
        stages = (self.layer1, self.layer2, self.layer3, self.layer4)
        if self.grad_checkpointing and self.training and torch.is_grad_enabled():
            for stage in stages:
                x = checkpointed_stage(stage, x)
            return x
        for stage in stages:
            x = stage(x)
        return x

    def forward(self, images: Tensor) -> Tensor:
        return self.forward_features(images)


def resnet18(last_stride: int = 1, **kwargs: Any) -> ResNet:
    """ResNet-18 (BasicBlock [2, 2, 2, 2]), 512 features."""
    return ResNet(tv.BasicBlock, [2, 2, 2, 2], last_stride=last_stride, **kwargs)


def resnet34(last_stride: int = 1, **kwargs: Any) -> ResNet:
    """ResNet-34 (BasicBlock [3, 4, 6, 3]), 512 features."""
    return ResNet(tv.BasicBlock, [3, 4, 6, 3], last_stride=last_stride, **kwargs)


def resnet50(last_stride: int = 1, **kwargs: Any) -> ResNet:
    """ResNet-50 (Bottleneck [3, 4, 6, 3]), 2048 features; the BoT backbone with ``last_stride=1``."""
    return ResNet(tv.Bottleneck, [3, 4, 6, 3], last_stride=last_stride, **kwargs)


def resnet101(last_stride: int = 1, **kwargs: Any) -> ResNet:
    """ResNet-101 (Bottleneck [3, 4, 23, 3]), 2048 features."""
    return ResNet(tv.Bottleneck, [3, 4, 23, 3], last_stride=last_stride, **kwargs)


def resnet_tiny(last_stride: int = 1, **kwargs: Any) -> ResNet:
    """A CPU-test ResNet: one BasicBlock per stage, widths 16..128, 128 features (~0.3M parameters)."""
    kwargs.setdefault("widths", (16, 32, 64, 128))
    return ResNet(tv.BasicBlock, [1, 1, 1, 1], last_stride=last_stride, **kwargs)


def resnet50_ibn_a(last_stride: int = 1, **kwargs: Any) -> ResNet:
    """IBN-a ResNet-50 (IBN-Net, Pan et al., ECCV 2018; fast-reid ``resnet50_ibn_a``): ResNet-50 with
    ``bn1`` of every block of stages 1-3 replaced by IN + BN halves (``reid.models.ibn``); same parameter
    count, keys ``layer{1,2,3}.{i}.bn1.{IN,BN}.*`` as the official ``resnet50_ibn_a-d9d0bb7b.pth``."""
    return with_ibn_a(resnet50(last_stride=last_stride, **kwargs))


def resnet_tiny_ibn_a(last_stride: int = 1, **kwargs: Any) -> ResNet:
    """:func:`resnet_tiny` with IBN-a in stages 1-3 (the official ``BasicBlock_IBN`` puts it on ``bn1``)."""
    return with_ibn_a(resnet_tiny(last_stride=last_stride, **kwargs))
