"""Any timm model by name as the backbone of the CNN re-ID network (BNNeck, ID and triplet losses).

    python -m reid.run experiment=bot_r50_market model=bot_timm model.backbone.name=convnext_tiny \
        model.backbone.weights=/weights/convnext_tiny.safetensors

:class:`TimmBackbone` builds ``timm.create_model(name, num_classes=0, **kwargs)`` and gives
:class:`reid.models.cnn_reid_net.CNNReIDNet` what it needs: ``forward_features(images) -> [B, C, H, W]``
and ``num_features``. A convolutional model's feature map is passed on as it is (channels-last maps,
e.g. Swin's, are permuted), so the net's pooling (average, GeM) applies; a transformer's tokens are pooled
as the model itself pools them (``forward_head(pre_logits=True)``: its [CLS] token, or the mean for
models without one) and passed on as a 1 x 1 map.

Nothing is downloaded: ``weights`` is a local file that timm loads into the model
(``pretrained_cfg_overlay=dict(file=...)``); without it the model starts from its random initialisation.
``last_stride=1`` (BoT's ``MODEL.LAST_STRIDE``, the recipe's value) is timm's ``output_stride=16``, which
convolutional families take; set ``model.backbone.last_stride=2`` for the others. The project's own ViT
stays the backbone of the official TransReID / TransReID-SSL / PASS checkpoints (SIE, JPM, overlapping
patches), so a camera embedding is refused here.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import timm
from torch import Tensor, nn

KEY = "model.backbone"


class TimmBackbone(nn.Module):
    """Args:
    name: a timm model name (``timm.list_models()``).
    weights: a local checkpoint file of that model, or None.
    last_stride: 1 (``output_stride=16``) or 2 (the model's own, 32).
    grad_checkpointing: recompute activations in backward (timm's ``set_grad_checkpointing``).
    kwargs: more ``timm.create_model`` arguments (e.g. ``img_size: [256, 128]`` for a ViT).
    camera_embed, stem_relu: the project's ViT / BoT ResNet options, accepted only unset.
    """

    model: Any  # the timm model: forward_features, forward_head, num_features, set_grad_checkpointing

    def __init__(
        self,
        name: str,
        weights: str | None = None,
        last_stride: int = 2,
        grad_checkpointing: bool = False,
        kwargs: Mapping[str, Any] | None = None,
        camera_embed: Any = None,
        stem_relu: bool | None = None,
    ) -> None:
        super().__init__()
        if camera_embed is not None:
            raise ValueError(f"{KEY}: SIE (model.sie) needs the project's ViT; {name} is a timm model")
        if stem_relu is not None:
            raise ValueError(
                f"{KEY}.stem_relu={stem_relu}: the BoT stem option of reid.models.resnet; leave it null"
            )
        if last_stride not in (1, 2):
            raise ValueError(f"{KEY}.last_stride={last_stride}: expected 1 (output stride 16) or 2")
        if name not in timm.list_models():
            raise ValueError(f"{KEY}.name={name!r}: not a timm model (timm.list_models() lists them)")
        options = dict(kwargs or {}) | ({"output_stride": 16} if last_stride == 1 else {})
        if weights is not None:
            if not Path(weights).is_file():
                raise FileNotFoundError(f"{KEY}.weights={weights}: no such file (a local {name} checkpoint)")
            options |= {"pretrained": True, "pretrained_cfg_overlay": {"file": str(weights)}}
        try:
            self.model = timm.create_model(name, num_classes=0, **options)
        except TypeError as error:
            hint = " (set model.backbone.last_stride=2: only convolutional families take output_stride)"
            raise ValueError(
                f"{KEY}: timm.create_model({name!r}, {options}) failed: {error}"
                + (hint if "output_stride" in str(error) else "")
            ) from error
        self.num_features = int(self.model.num_features)
        if grad_checkpointing:
            self.model.set_grad_checkpointing(True)

    def forward_features(self, images: Tensor) -> Tensor:
        """``[B, C, H, W]``: the model's feature map, or its pooled tokens as a 1 x 1 map."""
        out = self.model.forward_features(images)
        if out.ndim == 4 and out.shape[1] == self.num_features:
            return out
        if out.ndim == 4 and out.shape[-1] == self.num_features:  # channels last (Swin and kin)
            return out.permute(0, 3, 1, 2)
        pooled = self.model.forward_head(out, pre_logits=True)
        return pooled[:, :, None, None]

    def no_weight_decay(self) -> set[str]:
        """The model's own exemptions (position embeddings, tokens), as timm lists them."""
        found = getattr(self.model, "no_weight_decay", None)
        return {f"model.{name}" for name in found()} if callable(found) else set()
