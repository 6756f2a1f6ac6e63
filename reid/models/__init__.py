"""Backbones, heads and the re-identification network."""

from reid.models.heads import BNNeckHead, ClsPartsNeckHead, NeckOutput
from reid.models.jpm import JigsawPatchModule, JPMConfig
from reid.models.reid_net import ReIDModelOutput, ReIDNet
from reid.models.relative_position import RelativePositionBias, RelPosBiasConfig
from reid.models.sie import CameraEmbedConfig
from reid.models.snr import SNRBlock, SNROutput, SNRResNet, snr_resnet
from reid.models.vit import VisionTransformer, vit_base, vit_small, vit_tiny

__all__ = [
    "BNNeckHead",
    "CameraEmbedConfig",
    "ClsPartsNeckHead",
    "JPMConfig",
    "JigsawPatchModule",
    "NeckOutput",
    "ReIDModelOutput",
    "ReIDNet",
    "RelPosBiasConfig",
    "RelativePositionBias",
    "SNRBlock",
    "SNROutput",
    "SNRResNet",
    "VisionTransformer",
    "snr_resnet",
    "vit_base",
    "vit_small",
    "vit_tiny",
]
