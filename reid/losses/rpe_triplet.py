"""RPE-triplet loss: a batch-hard triplet loss on the positional relations of the patches an image attends to.

The users' method (no public code; facts in the project's reference notes, "Relative position bias and
RPE triplet loss"). For image i let ``s_i`` [N_p] be the cosine similarity of the final [CLS] token to
each patch token, and ``pi_i(1..N)`` the top-N patches by ``s_i``, in descending order. For every pair
``k < l`` of that order (N(N-1)/2 pairs, ordered ``(1,2), (1,3), .., (1,N), (2,3), ..``) with
``a = pi_i(k)``, ``b = pi_i(l)``::

    r_i,ab = P_abs[a] . P_abs[b]  +  P_rel[a, b]

``P_abs`` [N_p, D] is the model's absolute patch position table and ``P_rel`` [heads, N_p, N_p] its
relative position bias (query a, key b, as added to the attention logits), averaged over the chosen
layers. ``r_i`` (one value per pair, or per pair and head) is the image's relation vector, and the
loss is the batch-hard triplet loss (:func:`~reid.losses.triplet.hard_example_mining`) on the ``r_i``
by identity.

Why the reported ("naive") form diverges (docs/rpe.md, the SGD study). The top-N selection is
discrete, so no gradient reaches the image features through it: the only trainable inputs are the
shared position tables. With raw relation vectors ``r_ab`` is quadratic in the absolute table and a
triplet distance's gradient with respect to ``r`` has unit size whatever the scale, so the term's
gradient on the table is proportional to the table (``d r_ab / d P_abs[a] = P_abs[b]``). Under SGD, the
users' optimiser, each step then changes the table by a fixed fraction of its own size (set by
lr x weight); above a threshold the steps compound and the table, d_ap and d_an grow geometrically
(the anchor-negative term the users see diverging) while the loss rises. Under Adam the step is about lr
per coordinate whatever the gradient's size, so nothing compounds (the AdamW study: the tables shrink).
The position tables feed every attention layer, so the attention logits, and the ViT, follow them out.
The stable form removes the feedback: relation vectors are L2-normalised per image (distances in
[0, 2], invariant to the tables' scale, gradients shrinking as the tables grow), a hinge margin gives
exactly zero loss and gradient once ``d_an >= d_ap + m``, and the weight ramps up linearly over
``warmup_steps`` optimiser steps, so the term starts after the embeddings have organised.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from reid.losses.objective import LossTerm, ObjectiveInput
from reid.losses.triplet import global_batch, hard_example_mining, pairwise_euclidean

KEY = "model.loss.rpe_triplet"
FORM_DEFAULT = "form"  # a key set to this takes its form's default
FORMS = {
    "naive": {"normalize": False, "margin": None, "warmup_steps": 0},
    "stable": {"normalize": True, "margin": 0.1, "warmup_steps": 1000},
}
HEADS = ("mean", "concat")
LAYERS = ("last", "mean")


def top_patches(similarity: Tensor, num_patches: int) -> Tensor:
    """Indices [B, N] of the ``num_patches`` patches most similar to [CLS], most similar first.

    The selection is discrete: it is taken on the detached similarity and passes no gradient.
    """
    return similarity.detach().topk(num_patches, dim=1, largest=True, sorted=True).indices


def ordered_pairs(order: Tensor) -> tuple[Tensor, Tensor]:
    """Patch indices ``(a, b)`` [B, N(N-1)/2] of the pairs ``k < l`` of each row of ``order`` [B, N],
    enumerated ``(1,2), (1,3), .., (1,N), (2,3), ..``."""
    k, l = torch.triu_indices(order.shape[1], order.shape[1], offset=1, device=order.device)
    return order[:, k], order[:, l]


def relation_vectors(
    pos_embed: Tensor, first: Tensor, second: Tensor, rel_bias: Tensor | None, heads: str
) -> Tensor:
    """``r_ab = P_abs[a] . P_abs[b] + P_rel[a, b]`` for the pairs ``first``, ``second`` [B, M].

    Args:
        pos_embed: ``P_abs`` [N_p, D].
        rel_bias: ``P_rel`` [heads, N_p, N_p] (already averaged over layers), or None for the
            absolute term only.
        heads: ``"mean"``: ``P_rel`` averaged over heads, one value per pair -> [B, M];
            ``"concat"``: one value per pair and head, the absolute term added to each ->
            [B, M * heads], pair-major (``r_(pair0,head0), r_(pair0,head1), ..``).
    """
    absolute = (pos_embed[first] * pos_embed[second]).sum(-1)
    if rel_bias is None:
        return absolute
    rel = rel_bias[:, first, second].permute(1, 2, 0)  # [B, M, heads]
    if heads == "mean":
        return absolute + rel.mean(-1)
    return (absolute.unsqueeze(-1) + rel).flatten(1)


def _pick(value: object, key: str, form: str) -> object:
    return FORMS[form][key] if isinstance(value, str) and value == FORM_DEFAULT else value


class RPETripletTerm(LossTerm):
    """Batch-hard triplet loss on the patches' positional relation vectors (see the module docstring).

    With ``f_i = r_i / ||r_i||`` (``normalize``) or ``f_i = r_i``, ``d_ap`` / ``d_an`` the distances
    to the hardest positive / negative of anchor i::

        soft (margin=None):  L = mean_i softplus(d_ap - d_an)
        hinge (margin=m):    L = mean_i max(0, d_ap - d_an + m)
        weight_at(t) = weight * min(1, t / warmup_steps)   (weight when warmup_steps = 0)

    Reads ``aux["cls_similarity"]`` [B, N_p], ``aux["pos_embed"]`` [N_p, D] and, with ``use_bias``,
    ``aux["rel_pos_bias"]`` [L, heads, N_p, N_p] (L = depth, or 1 for a shared table). Gradients reach
    the position tables only (the top-N selection is discrete).

    Args:
        weight: the term's weight after warm-up.
        num_patches: N, the patches kept per image (2 <= N <= N_p).
        form: ``"naive"`` (the reported form) or ``"stable"``; it sets the defaults of the next three
            keys, each of which may be set on its own (``"form"``: take the form's default):

            ============  =====  ======  =========================================
            key           naive  stable  meaning
            ============  =====  ======  =========================================
            normalize     False  True    L2-normalise each relation vector
            margin        None   0.1     None: soft margin; m >= 0: hinge
            warmup_steps  0      1000    linear ramp of the weight (optimiser steps)
            ============  =====  ======  =========================================

        layers: which bias tables give ``P_rel``: ``"last"``, ``"mean"`` (mean over all tables) or a
            list of table indices (mean over them; negative indices count from the last).
        heads: ``"mean"`` or ``"concat"`` (see :func:`relation_vectors`); ignored without the bias.
        use_bias: False: the absolute term only (the model then needs no ``rel_pos_bias``).

    Stats (each forward): ``relation_norm`` (mean ||r_i|| of the raw vectors), ``pos_embed_norm`` (mean
    row norm of ``P_abs``), ``rel_bias_norm`` (RMS of the bias entries gathered, over the chosen
    layers and heads; with the bias only), ``d_ap``, ``d_an``, ``gap`` (mean ``d_an - d_ap``) and
    ``weight`` (``weight_at(step)``).
    """

    def __init__(
        self,
        weight: float = 1.0,
        num_patches: int = 8,
        form: str = "stable",
        normalize: bool | str = FORM_DEFAULT,
        margin: float | str | None = FORM_DEFAULT,
        warmup_steps: int | str = FORM_DEFAULT,
        layers: str | Sequence[int] = "last",
        heads: str = "mean",
        use_bias: bool = True,
    ) -> None:
        super().__init__(weight)
        if form not in FORMS:
            raise ValueError(f"{KEY}.form: expected one of {sorted(FORMS)}, got {form!r}")
        self.form = form
        self.normalize = _pick(normalize, "normalize", form)
        self.margin = _pick(margin, "margin", form)
        self.warmup_steps = _pick(warmup_steps, "warmup_steps", form)
        self._check_form_keys()
        if isinstance(num_patches, bool) or not isinstance(num_patches, int) or num_patches < 2:
            raise ValueError(
                f"{KEY}.num_patches: expected an integer >= 2 (pairs need two), got {num_patches!r}"
            )
        self.num_patches = num_patches
        if heads not in HEADS:
            raise ValueError(f"{KEY}.heads: expected one of {list(HEADS)}, got {heads!r}")
        self.heads = heads
        self.layers = self._check_layers(layers)
        self.use_bias = bool(use_bias)

    def _check_form_keys(self) -> None:
        if not isinstance(self.normalize, bool):
            raise ValueError(
                f"{KEY}.normalize: expected true, false or {FORM_DEFAULT!r}, got {self.normalize!r}"
            )
        if self.margin is not None and (
            isinstance(self.margin, (str, bool)) or not float(self.margin) >= 0  # also refuses NaN
        ):
            raise ValueError(
                f"{KEY}.margin: expected null (soft margin), a number >= 0 (hinge) or {FORM_DEFAULT!r}, "
                f"got {self.margin!r}"
            )
        self.margin = None if self.margin is None else float(self.margin)
        steps = self.warmup_steps
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
            raise ValueError(
                f"{KEY}.warmup_steps: expected an integer >= 0 or {FORM_DEFAULT!r}, got {steps!r}"
            )

    @staticmethod
    def _check_layers(layers: str | Sequence[int]) -> str | tuple[int, ...]:
        if isinstance(layers, str):
            if layers not in LAYERS:
                raise ValueError(
                    f"{KEY}.layers: expected 'last', 'mean' or a list of layer indices, got {layers!r}"
                )
            return layers
        picked = tuple(layers) if isinstance(layers, Sequence) else ()
        if not picked or not all(isinstance(i, int) and not isinstance(i, bool) for i in picked):
            raise ValueError(
                f"{KEY}.layers: expected 'last', 'mean' or a non-empty list of integer layer indices, "
                f"got {layers!r}"
            )
        return picked

    def weight_at(self, step: int) -> float:
        """``weight * min(1, step / warmup_steps)``: 0 at step 0, ``weight`` from ``warmup_steps`` on."""
        if self.warmup_steps == 0:
            return self.weight
        return self.weight * min(1.0, max(step, 0) / self.warmup_steps)

    def _bias_tables(self, inputs: ObjectiveInput) -> Tensor:
        """The chosen tables of ``aux["rel_pos_bias"]`` [L', heads, N_p, N_p]."""
        try:
            bias = inputs.require("rel_pos_bias", term="rpe_triplet")
        except ValueError as err:
            raise ValueError(
                f"{err}: the model has no relative position bias; enable it with model.backbone.rel_pos_bias "
                f"(e.g. model.backbone.rel_pos_bias={{shared:false}}), or set {KEY}.use_bias=false for the "
                "absolute term only"
            ) from err
        if bias.dim() != 4:
            raise ValueError(f"{KEY}: expected aux['rel_pos_bias'] [L, heads, N, N], got {tuple(bias.shape)}")
        if self.layers == "last":
            return bias[-1:]
        if self.layers == "mean":
            return bias
        depth = bias.shape[0]
        bad = [i for i in self.layers if not -depth <= i < depth]
        if bad:
            raise ValueError(
                f"{KEY}.layers: indices {bad} out of range for the model's {depth} bias table(s) "
                f"(expected -{depth} <= i < {depth})"
            )
        return bias[list(self.layers)]

    def relations(self, inputs: ObjectiveInput) -> Tensor:
        """The raw relation vectors ``r_i`` [B, R] (R = N(N-1)/2, times heads under ``"concat"``);
        sets the ``relation_norm``, ``pos_embed_norm`` and ``rel_bias_norm`` stats."""
        similarity = inputs.require("cls_similarity", term="rpe_triplet")
        pos_embed = inputs.require("pos_embed", term="rpe_triplet")
        available = similarity.shape[1]
        if pos_embed.shape[0] != available:
            raise ValueError(
                f"{KEY}: aux['pos_embed'] has {pos_embed.shape[0]} rows but aux['cls_similarity'] "
                f"scores {available} patches"
            )
        if self.num_patches > available:
            raise ValueError(
                f"{KEY}.num_patches: expected at most the {available} patches the model gives, "
                f"got {self.num_patches}"
            )
        first, second = ordered_pairs(top_patches(similarity, self.num_patches))
        tables = self._bias_tables(inputs) if self.use_bias else None
        rel = None if tables is None else tables.mean(0)
        raw = relation_vectors(pos_embed, first, second, rel, self.heads).float()
        self.stats = {
            "relation_norm": raw.detach().norm(dim=1).mean(),
            "pos_embed_norm": pos_embed.detach().float().norm(dim=1).mean(),
        }
        if tables is not None:
            used = tables.detach().float()[:, :, first, second]
            self.stats["rel_bias_norm"] = used.pow(2).mean().sqrt()
        return raw

    def bound(self, raw: Tensor) -> Tensor:
        """What the triplet loss sees: ``r_i / ||r_i||`` with ``normalize``, else ``r_i``."""
        return F.normalize(raw, dim=1, eps=1e-12) if self.normalize else raw

    def forward(self, inputs: ObjectiveInput) -> Tensor:
        features, labels = global_batch(self.bound(self.relations(inputs)), inputs.labels)
        pairs = hard_example_mining(pairwise_euclidean(features, features), labels)
        gap = pairs.dist_ap - pairs.dist_an
        loss = F.softplus(gap).mean() if self.margin is None else F.relu(gap + self.margin).mean()
        self.stats |= {
            "d_ap": pairs.dist_ap.detach().mean(),
            "d_an": pairs.dist_an.detach().mean(),
            "gap": -gap.detach().mean(),
            "weight": loss.detach().new_tensor(self.weight_at(inputs.step)),
        }
        return loss

    def extra_repr(self) -> str:
        margin = "soft" if self.margin is None else self.margin
        return (
            f"weight={self.weight}, num_patches={self.num_patches}, form={self.form}, "
            f"normalize={self.normalize}, margin={margin}, warmup_steps={self.warmup_steps}, "
            f"layers={self.layers}, heads={self.heads}, use_bias={self.use_bias}"
        )
