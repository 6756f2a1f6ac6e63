"""The re-identification network: ViT backbone -> global branch (+ JPM local branches) -> BNNeck heads.

TransReID (Sec. 3.1, 3.3): the backbone runs all but its last block; the global branch is the last block
and the final norm, its [CLS] output the global feature ``f_g``; with JPM, ``k`` local branches (a shared
copy of the last block and norm) give ``f_l^1 .. f_l^k``. Every branch feature goes to the triplet loss
and, through its own BNNeck, to an ID classifier. Training loss (official weights)

    L = 0.5 * L(f_g) + 0.5 * (1/k) sum_j L(f_l^j)           (``branch_weights``)

and the retrieval feature is ``cat(f_g, f_l^1 / k, .., f_l^k / k)``, taken before the BNNeck by default
(official ``TEST.NECK_FEAT 'before'``), or after it.

PASS fine-tuning (``feature="cls_parts"``): the global feature is ``cat(f_cls, mean_i f_part_i)`` (2D),
with the PASS multi-neck head (``heads.ClsPartsNeckHead``).

Differences from the official module layout, on purpose: the global branch *is* the backbone's last block
and norm (the official ``build_transformer_local`` keeps an unused ``base.blocks[-1]``/``base.norm`` beside
a copy ``b1``), and there is no unused ImageNet ``fc`` layer; so nothing here is a parameter without a
gradient. Key names: ``backbone.*``, ``jpm.{block,norm}.*`` (``jpm.rel_pos.table`` with per-layer relative
position bias), ``global_head.*``, ``local_heads.{j}.*``.

Auxiliary outputs for loss terms (``ReIDModelOutput.aux``, training mode only; empty in eval):
``cls_similarity`` [B, N], the cosine similarity of the global branch's final (normed) [CLS] to each final
patch token (row-major); ``pos_embed`` [N, D], the patch position embeddings used for this input; and, with
relative position bias, ``rel_pos_bias`` [L, heads, N, N], the patch-to-patch bias of each table (L =
depth, or 1 shared). None is detached.

``classifier`` (a ``reid.models.classifiers`` factory; ``None``: the linear one) builds the ID classifier of
every head, the JPM branches' too, and ``forward(..., labels)`` gives it the training labels (margin
classifiers need them; the linear one ignores them). The official ``build_transformer_local`` builds only
the global ``classifier`` for a margin ``ID_LOSS_TYPE`` and then fails on the undefined local scores, so JPM
with a margin classifier never ran there; here each branch gets its own, as each gets its own linear one.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Literal, NamedTuple, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from reid.models.classifiers import ClassifierFactory
from reid.models.heads import BNNeckHead, ClsPartsNeckHead, NeckOutput
from reid.models.jpm import JigsawPatchModule, JPMConfig
from reid.models.relative_position import Grid, RelativePositionBias
from reid.models.vit import VisionTransformer

NeckFeat = Literal["before", "after"]
GlobalFeature = Literal["cls", "cls_parts"]


class ReIDModelOutput(NamedTuple):
    feats: tuple[Tensor, ...]  # per branch [global, local_1..k], before the BNNeck (triplet input)
    logits: tuple[Tensor, ...]  # per branch ID logits; () in eval mode
    embedding: Tensor  # retrieval feature [B, embedding_dim]
    aux: Mapping[str, Tensor] = MappingProxyType({})  # by name, for loss terms (ObjectiveInput.aux)


class GlobalBranchOutput(NamedTuple):
    feat: Tensor  # the global feature: [CLS] [B, D], or cat(cls, mean(parts)) [B, 2D]
    cls: Tensor  # [CLS] after the last block and norm, [B, D]
    parts: Tensor | None  # part tokens [B, L, D] when feature == "cls_parts"
    tokens: Tensor  # every token after the last block and norm, [B, P + N, D]


class ReIDNet(nn.Module):
    """Backbone + global branch + optional JPM local branches + BNNeck heads."""

    def __init__(
        self,
        backbone: VisionTransformer,
        num_classes: int,
        jpm: JPMConfig | None = None,
        neck_feat: NeckFeat = "before",
        feature: GlobalFeature = "cls",
        classifier: ClassifierFactory | None = None,
    ) -> None:
        super().__init__()
        if neck_feat not in ("before", "after"):
            raise ValueError(f"ReIDNet: neck_feat must be 'before' or 'after', got {neck_feat!r}")
        if feature not in ("cls", "cls_parts"):
            raise ValueError(f"ReIDNet: feature must be 'cls' or 'cls_parts', got {feature!r}")
        if not hasattr(backbone, "forward_tokens_on_grid"):
            raise TypeError(
                f"ReIDNet: needs a ViT backbone (forward_tokens_on_grid), got {type(backbone).__name__}; a "
                "CNN backbone goes with model.net=reid.models.cnn_reid_net.CNNReIDNet (conf/model/bot_r50)"
            )
        num_parts = getattr(backbone, "num_parts", 0)
        if feature == "cls_parts" and num_parts < 1:
            raise ValueError("ReIDNet: feature='cls_parts' needs a backbone with num_parts >= 1")
        self.backbone = backbone
        self.neck_feat = neck_feat
        self.feature = feature
        if jpm is not None and not isinstance(jpm, JPMConfig):
            raise TypeError(f"ReIDNet: jpm must be a reid.models.jpm.JPMConfig or None, got {type(jpm)}")
        self.jpm_config = jpm
        dim = backbone.embed_dim
        self.global_head: BNNeckHead | ClsPartsNeckHead = (
            BNNeckHead(dim, num_classes, classifier)
            if feature == "cls"
            else ClsPartsNeckHead(dim, num_parts, num_classes, classifier)
        )
        self.jpm = (
            JigsawPatchModule(backbone.blocks[-1], backbone.norm, self.jpm_config, self._last_table(own=True))
            if self.jpm_config is not None
            else None
        )
        num_local = 0 if self.jpm_config is None else self.jpm_config.num_local
        self.local_heads = nn.ModuleList(BNNeckHead(dim, num_classes, classifier) for _ in range(num_local))

    @property
    def num_local(self) -> int:
        return len(self.local_heads)

    @property
    def branch_weights(self) -> tuple[float, ...]:
        """Loss weight per branch: (1.0,) without JPM, (0.5, 0.5/k, ..., 0.5/k) with k local branches."""
        if not self.num_local:
            return (1.0,)
        return (0.5, *([0.5 / self.num_local] * self.num_local))

    @property
    def embedding_dim(self) -> int:
        dim = self.backbone.embed_dim
        return dim * (2 if self.feature == "cls_parts" else 1) + dim * self.num_local

    def _last_table(self, own: bool) -> RelativePositionBias | None:
        """The backbone's last-layer relative table: for the JPM branch to copy (``own``: per-layer tables)
        or to read at each forward (shared table); ``None`` where the other case applies or there is none."""
        config = getattr(self.backbone, "rel_pos_config", None)
        if config is None or config.shared == own:
            return None
        return self.backbone.rel_pos_of(-1)

    def reset_local_branch(self) -> None:
        """Copy the backbone's last block, norm (and per-layer last relative table) into the JPM branch.
        Call after loading backbone weights (the official code builds its copies after loading the
        ImageNet checkpoint)."""
        if self.jpm is not None:
            table = self._last_table(own=True)
            self.jpm.load_from_backbone(self.backbone.blocks[-1], self.backbone.norm, table)

    def no_weight_decay(self) -> set[str]:
        names = {f"backbone.{name}" for name in self.backbone.no_weight_decay()}
        if self.jpm is not None and self.jpm.rel_pos is not None:
            names.add("jpm.rel_pos.table")
        return names

    def _global_branch(self, tokens: Tensor, grid: Grid) -> GlobalBranchOutput:
        """The last block + norm on the tokens before it; the global feature is [CLS] or cat(cls, parts)."""
        final = self.backbone.norm(self.backbone.forward_block(-1, tokens, grid))
        cls = final[:, 0]
        if self.feature == "cls":
            return GlobalBranchOutput(cls, cls, None, final)
        parts = final[:, 1 : self.backbone.num_prefix_tokens]
        return GlobalBranchOutput(torch.cat((cls, parts.mean(dim=1)), dim=1), cls, parts, final)

    def _aux(self, branch: GlobalBranchOutput, grid: Grid) -> dict[str, Tensor]:
        """Training-time inputs of positional loss terms (module docstring)."""
        patches = branch.tokens[:, self.backbone.num_prefix_tokens :]
        aux = {
            "cls_similarity": F.cosine_similarity(branch.cls[:, None], patches, dim=-1),
            "pos_embed": self.backbone.patch_pos_embed(grid)[0],
        }
        biases = self.backbone.patch_biases(grid)
        if biases is not None:
            aux["rel_pos_bias"] = biases
        return aux

    def positional_inputs(
        self, images: Tensor, camids: Tensor | None = None, viewids: Tensor | None = None
    ) -> dict[str, Tensor]:
        """The training-time ``aux`` (module docstring) for ``images`` in any mode: what a positional loss
        term reads, for monitoring it on evaluation images (``reid.callbacks.rpe_monitor``)."""
        tokens, grid = self.backbone.forward_tokens_on_grid(images, camids, viewids, depth=-1)
        return self._aux(self._global_branch(tokens, grid), grid)

    def _heads(
        self, branch: GlobalBranchOutput, local_feats: tuple[Tensor, ...], labels: Tensor | None
    ) -> list[NeckOutput]:
        if isinstance(self.global_head, ClsPartsNeckHead):
            first = self.global_head(branch.cls, branch.parts, labels)
        else:
            first = self.global_head(branch.feat, labels)
        return [first, *(head(f, labels) for head, f in zip(self.local_heads, local_feats, strict=True))]

    def _necks(self, branch: GlobalBranchOutput, local_feats: tuple[Tensor, ...]) -> list[Tensor]:
        """BNNeck features only (evaluation with ``neck_feat="after"``: no classifier)."""
        if isinstance(self.global_head, ClsPartsNeckHead):
            assert branch.parts is not None, "a cls_parts head is built with a part-token backbone"
            first = self.global_head.neck(branch.cls, branch.parts)
        else:
            first = self.global_head.neck(branch.feat)
        local = (
            cast(BNNeckHead, head).neck(f) for head, f in zip(self.local_heads, local_feats, strict=True)
        )
        return [first, *local]

    def _embedding(self, branch_feats: list[Tensor] | tuple[Tensor, ...]) -> Tensor:
        """``cat(global, local_1 / k, .., local_k / k)`` (official test feature)."""
        scale = 1.0 / max(self.num_local, 1)
        return torch.cat([branch_feats[0], *(f * scale for f in branch_feats[1:])], dim=1)

    def forward(
        self,
        images: Tensor,
        camids: Tensor | None = None,
        viewids: Tensor | None = None,
        labels: Tensor | None = None,
    ) -> ReIDModelOutput:
        """``labels`` [B]: the identities, for a margin classifier in training (ignored in eval)."""
        tokens, grid = self.backbone.forward_tokens_on_grid(images, camids, viewids, depth=-1)
        branch = self._global_branch(tokens, grid)
        local_feats = (
            self.jpm(
                tokens,
                self.backbone.num_prefix_tokens,
                grid,
                self._last_table(own=False),
                checkpointed=getattr(self.backbone, "grad_checkpointing", False),
            )
            if self.jpm is not None
            else ()
        )
        feats = (branch.feat, *local_feats)
        aux: Mapping[str, Tensor] = MappingProxyType({})
        if self.training:
            heads = self._heads(branch, local_feats, labels)
            logits = tuple(out.logits for out in heads)
            neck_feats = [out.neck_feat for out in heads]
            aux = MappingProxyType(self._aux(branch, grid))
        else:
            logits = ()
            neck_feats = self._necks(branch, local_feats) if self.neck_feat == "after" else []
        embedding = self._embedding(feats if self.neck_feat == "before" else neck_feats)
        return ReIDModelOutput(feats, logits, embedding, aux)
