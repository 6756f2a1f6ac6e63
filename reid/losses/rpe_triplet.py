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

Why the reported ("naive") form diverges (docs/rpe.md, the study at weight 50). The top-N selection is
discrete, so no gradient reaches the image features through it: the only trainable inputs are the
shared position tables. With raw relation vectors the loss is homogeneous of degree 2 in the absolute
table (``d r_ab / d P_abs[a] = P_abs[b]``: the gradient is proportional to the table), so an SGD step, the
users' optimiser, changes the table by a fraction of its own size set by lr x weight (and the batch's
gap). Below a threshold the tables settle; above it each step multiplies them and they, d_ap and d_an grow
geometrically (the anchor-negative term the users see diverging) while the loss rises; under warm-up the
threshold is crossed as the lr rises (weight 50 at SGD lr 0.05: step ~24). Under Adam the step is about lr
per coordinate whatever the gradient's size, so nothing compounds. The position tables feed every
attention layer, so the attention logits follow them out. The stable form removes the feedback:
relation vectors are L2-normalised per image (distances in [0, 2], invariant to the tables' scale,
gradients shrinking as the tables grow), a hinge margin gives exactly zero loss and gradient once
``d_an >= d_ap + m``, and the weight ramps up linearly over ``warmup_steps`` optimiser steps.

What neither form can do (the collapse, docs/rpe.md): since only the shared tables receive gradient,
the loss can only change what every image shares; on the study's final checkpoints the stable form's
relation vectors of different images have cosine 0.99-1.00 and carry no identity (AUC 0.50).

The ``soft`` form (the default) gives the loss a path to the features. The selection is soft: image
``i`` weights the patches by ``w_i = softmax(s_i / temperature)`` (``s_i`` its [CLS]-to-patch cosine
similarities, which carry gradient), and its relation vector is indexed by patch position::

    r_i[b] = sum_a w_ia G[a, b],   G[a, b] = P~_abs[a] . P~_abs[b] + P~_rel[a, b]

with the tables centred (``P~_abs = P_abs - mean_a P_abs[a]``, ``P~_rel = P_rel - mean(P_rel)``): the
component every position shares (40% of the table's energy on the stable runs) says nothing about
where an image looks. ``r_i`` is the relation to every position of the patches image ``i`` attends to;
the triplet loss on ``r_i / ||r_i||`` (hinge) pulls together where images of one identity look, through
``w_i`` into the network, and shapes the tables as well.

Diagnostics (each forward, on the batch the loss sees; docs/rpe.md): ``auc``, the probability that a
same-identity pair of relation vectors is closer than a different-identity pair (0.5: no identity
information); ``collapse``, the mean cosine between different images' compared relation vectors (1: all
alike; batch-centred vectors, the soft form's, cannot collapse so: their mean cosine is about -1/(B-1),
and ``raw_collapse`` is the same on the uncentred ones);
``pos_embed_mean_share`` and ``rel_bias_mean_share``, the fraction of each table's energy in its mean
component; ``relation_norm``, ``pos_embed_norm``, ``rel_bias_norm``, ``d_ap``, ``d_an``, ``gap``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from reid.losses.objective import LossTerm, ObjectiveInput
from reid.losses.triplet import global_batch, hard_example_mining, pairwise_euclidean

log = logging.getLogger("reid")
KEY = "model.loss.rpe_triplet"
FORM_DEFAULT = "form"  # a key set to this takes its form's default
FORMS = {
    "naive": {"selection": "top", "center": False, "normalize": False, "margin": None, "warmup_steps": 0},
    "stable": {"selection": "top", "center": False, "normalize": True, "margin": 0.1, "warmup_steps": 1000},
    "soft": {"selection": "soft", "center": True, "normalize": True, "margin": 0.1, "warmup_steps": 0},
}
"""Each form's values of the keys left at ``"form"``. ``naive`` is the users' reported form and nothing else:
its values hold whatever the other keys say (so a sweep over ``form`` compares the forms as defined)."""
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


def soft_relation_vectors(
    similarity: Tensor, pos_embed: Tensor, rel_bias: Tensor | None, temperature: float, heads: str
) -> Tensor:
    """The ``soft`` form's ``r_i[b] = sum_a w_ia G[a, b]`` [B, N_p] (x heads under ``"concat"``).

    ``w_i = softmax(similarity_i / temperature)``; ``G = P~ P~^T + P~_rel`` with both tables centred
    (module docstring). ``rel_bias`` [heads, N_p, N_p] (averaged over layers) or None.
    """
    weights = torch.softmax(similarity / temperature, dim=1)  # [B, N_p]
    centred = pos_embed - pos_embed.mean(dim=0, keepdim=True)
    gram = centred @ centred.t()  # [N_p, N_p]
    if rel_bias is None:
        return weights @ gram
    rel = rel_bias - rel_bias.mean()
    if heads == "mean":
        return weights @ (gram + rel.mean(0))
    return torch.einsum("ia,hac->ich", weights, gram.unsqueeze(0) + rel).flatten(1)


def identity_auc(features: Tensor, labels: Tensor) -> Tensor:
    """P(d(same identity) < d(different identity)) over the pairs of a batch, ties counting half (the
    Mann-Whitney statistic; 0.5 without identity information). NaN without both kinds of pair."""
    dist = pairwise_euclidean(features.detach().float(), features.detach().float())
    upper = torch.triu(torch.ones_like(dist, dtype=torch.bool), diagonal=1)
    same = (labels[:, None] == labels[None, :]) & upper
    different = (labels[:, None] != labels[None, :]) & upper
    positives, negatives = dist[same], dist[different]
    if not positives.numel() or not negatives.numel():
        return dist.new_tensor(float("nan"))
    values = torch.cat([positives, negatives]).double()
    ordered, order = values.sort()
    _, inverse, counts = torch.unique_consecutive(ordered, return_inverse=True, return_counts=True)
    ends = counts.cumsum(0).double()
    ranks = torch.empty_like(values)
    ranks[order] = ((ends - counts + 1 + ends) / 2)[inverse]  # mid-ranks for ties
    n_pos, n_neg = positives.numel(), negatives.numel()
    auc = (ranks[n_pos:].sum() - n_neg * (n_neg + 1) / 2) / (n_pos * n_neg)
    return auc.to(features.dtype if features.is_floating_point() else torch.float32)


def mean_cross_cosine(relations: Tensor) -> Tensor:
    """Mean cosine between the relation vectors of different images (1: collapsed to one direction)."""
    unit = F.normalize(relations.detach().float(), dim=1, eps=1e-12)
    cosine = unit @ unit.t()
    n = cosine.shape[0]
    return (cosine.sum() - cosine.diagonal().sum()) / max(n * (n - 1), 1)


def mean_share(table: Tensor, dim: int | None) -> Tensor:
    """Fraction of ``table``'s energy in its mean component: along ``dim`` (the rows' mean vector of a
    position table) or over all entries (``None``: a bias table)."""
    table = table.detach().float()
    mean = table.mean() if dim is None else table.mean(dim=dim, keepdim=True)
    energy = table.pow(2).sum().clamp(min=1e-30)
    return (mean.expand_as(table).pow(2).sum() / energy).clamp(max=1.0)


def _require(aux: Mapping[str, Tensor], name: str) -> Tensor:
    """``aux[name]``, or the error :meth:`ObjectiveInput.require` gives."""
    if name not in aux:
        raise ValueError(
            f"loss term 'rpe_triplet' needs the model output '{name}', but the model gives "
            f"{sorted(aux) or 'no auxiliary outputs'}"
        )
    return aux[name]


def _pick(value: object, key: str, form: str) -> object:
    return FORMS[form][key] if isinstance(value, str) and value == FORM_DEFAULT else value


def _checked_flag(value: object, key: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{KEY}.{key}: expected true, false or {FORM_DEFAULT!r}, got {value!r}")
    return value


def _checked_margin(value: object) -> float | None:
    if value is None:
        return None
    if (
        isinstance(value, str | bool) or not isinstance(value, int | float) or not float(value) >= 0
    ):  # NaN too
        raise ValueError(
            f"{KEY}.margin: expected null (soft margin), a number >= 0 (hinge) or {FORM_DEFAULT!r}, "
            f"got {value!r}"
        )
    return float(value)


def _checked_steps(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{KEY}.warmup_steps: expected an integer >= 0 or {FORM_DEFAULT!r}, got {value!r}")
    return value


class RPETripletTerm(LossTerm):
    """Batch-hard triplet loss on the patches' positional relation vectors (see the module docstring).

    With ``f_i = r_i / ||r_i||`` (``normalize``) or ``f_i = r_i``, ``d_ap`` / ``d_an`` the distances
    to the hardest positive / negative of anchor i, over the global batch under DDP::

        soft (margin=None):  L = mean_i softplus(d_ap - d_an)
        hinge (margin=m):    L = mean_i max(0, d_ap - d_an + m)
        weight_at(t) = weight * min(1, t / warmup_steps)   (weight when warmup_steps = 0)

    Reads ``aux["cls_similarity"]`` [B, N_p], ``aux["pos_embed"]`` [N_p, D] and, with ``use_bias``,
    ``aux["rel_pos_bias"]`` [L, heads, N_p, N_p] (L = depth, or 1 for a shared table).

    Args:
        weight: the term's weight after warm-up.
        num_patches: N, the patches kept per image by the ``top`` selection (2 <= N <= N_p).
        form: ``"soft"`` (default), ``"stable"`` or ``"naive"`` (the reported form). It sets the values
            of the keys left at ``"form"``; ``naive`` keeps its own whatever they say:

            ============  =====  ======  =====  ==============================================
            key           naive  stable  soft   meaning
            ============  =====  ======  =====  ==============================================
            selection     top    top     soft   top-N patches (detached) | softmax weights
            center        False  False   True   subtract the batch's mean relation vector
            normalize     False  True    True   L2-normalise each relation vector
            margin        None   0.1     0.1    None: soft margin; m >= 0: hinge
            warmup_steps  0      1000    0      linear ramp of the weight (optimiser steps)
            ============  =====  ======  =====  ==============================================

        temperature: of the ``soft`` selection's softmax over the [CLS]-patch cosines (in [-1, 1]).
        layers: which bias tables give ``P_rel``: ``"last"``, ``"mean"`` (mean over all tables) or a
            list of table indices (mean over them; negative indices count from the last).
        heads: ``"mean"`` or ``"concat"`` (see :func:`relation_vectors`); ignored without the bias.
        use_bias: False: the absolute term only (the model then needs no ``rel_pos_bias``).

    Stats (each forward; module docstring): ``auc``, ``collapse``, ``raw_collapse``, ``pos_embed_mean_share``,
    ``rel_bias_mean_share``, ``relation_norm``, ``pos_embed_norm``, ``rel_bias_norm``, ``d_ap``, ``d_an``,
    ``gap`` (mean ``d_an - d_ap``) and ``weight`` (``weight_at(step)``).
    """

    def __init__(
        self,
        weight: float = 1.0,
        num_patches: int = 8,
        form: str = "soft",
        center: bool | str = FORM_DEFAULT,
        normalize: bool | str = FORM_DEFAULT,
        margin: float | str | None = FORM_DEFAULT,
        warmup_steps: int | str = FORM_DEFAULT,
        temperature: float = 0.05,
        layers: str | Sequence[int] = "last",
        heads: str = "mean",
        use_bias: bool = True,
    ) -> None:
        super().__init__(weight)
        if form not in FORMS:
            raise ValueError(f"{KEY}.form: expected one of {sorted(FORMS)}, got {form!r}")
        self.form = form
        self.selection = FORMS[form]["selection"]
        given = {"center": center, "normalize": normalize, "margin": margin, "warmup_steps": warmup_steps}
        if form == "naive":  # the reported form, whatever the keys say
            ignored = {k: v for k, v in given.items() if not (isinstance(v, str) and v == FORM_DEFAULT)}
            if ignored and any(v != FORMS["naive"][k] for k, v in ignored.items()):
                log.info("%s.form=naive keeps its own %s (set %s apply to the other forms)",
                         KEY, {k: FORMS["naive"][k] for k in ignored}, ignored)  # fmt: skip
            given = dict.fromkeys(given, FORM_DEFAULT)
        self.center = _checked_flag(_pick(given["center"], "center", form), "center")
        self.normalize = _checked_flag(_pick(given["normalize"], "normalize", form), "normalize")
        self.margin = _checked_margin(_pick(given["margin"], "margin", form))
        self.warmup_steps = _checked_steps(_pick(given["warmup_steps"], "warmup_steps", form))
        if isinstance(num_patches, bool) or not isinstance(num_patches, int) or num_patches < 2:
            raise ValueError(
                f"{KEY}.num_patches: expected an integer >= 2 (pairs need two), got {num_patches!r}"
            )
        self.num_patches = num_patches
        if isinstance(temperature, bool) or not isinstance(temperature, int | float) or not temperature > 0:
            raise ValueError(f"{KEY}.temperature: expected a number > 0, got {temperature!r}")
        self.temperature = float(temperature)
        if heads not in HEADS:
            raise ValueError(f"{KEY}.heads: expected one of {list(HEADS)}, got {heads!r}")
        self.heads = heads
        self.layers = self._check_layers(layers)
        self.use_bias = bool(use_bias)

    @staticmethod
    def _check_layers(layers: str | Sequence[int]) -> str | tuple[int, ...]:
        if isinstance(layers, str):
            if layers not in LAYERS:
                raise ValueError(
                    f"{KEY}.layers: expected 'last', 'mean' or a list of layer indices, got {layers!r}"
                )
            return layers
        picked: tuple[object, ...] = tuple(layers) if isinstance(layers, Sequence) else ()
        indices = tuple(i for i in picked if isinstance(i, int) and not isinstance(i, bool))
        if not indices or len(indices) != len(picked):
            raise ValueError(
                f"{KEY}.layers: expected 'last', 'mean' or a non-empty list of integer layer indices, "
                f"got {layers!r}"
            )
        return indices

    def weight_at(self, step: int) -> float:
        """``weight * min(1, step / warmup_steps)``: 0 at step 0, ``weight`` from ``warmup_steps`` on."""
        if self.warmup_steps == 0:
            return self.weight
        return self.weight * min(1.0, max(step, 0) / self.warmup_steps)

    def _bias_tables(self, aux: Mapping[str, Tensor]) -> Tensor:
        """The chosen tables of ``aux["rel_pos_bias"]`` [L', heads, N_p, N_p]."""
        try:
            bias = _require(aux, "rel_pos_bias")
        except ValueError as err:
            raise ValueError(
                f"{err}: the model has no relative position bias; enable it with model.backbone.rel_pos_bias "
                f"(e.g. model.backbone.rel_pos_bias={{shared:false}}), or set {KEY}.use_bias=false for the "
                "absolute term only"
            ) from err
        if bias.dim() != 4:
            raise ValueError(f"{KEY}: expected aux['rel_pos_bias'] [L, heads, N, N], got {tuple(bias.shape)}")
        if isinstance(self.layers, str):
            return bias[-1:] if self.layers == "last" else bias  # "mean": every table
        depth = bias.shape[0]
        bad = [i for i in self.layers if not -depth <= i < depth]
        if bad:
            raise ValueError(
                f"{KEY}.layers: indices {bad} out of range for the model's {depth} bias table(s) "
                f"(expected -{depth} <= i < {depth})"
            )
        return bias[list(self.layers)]

    def relations(self, inputs: ObjectiveInput | Mapping[str, Tensor]) -> Tensor:
        """The raw relation vectors ``r_i`` [B, R] of the form's selection (``top``: R = N(N-1)/2 pairs,
        times heads under ``"concat"``; ``soft``: R = N_p positions, times heads); sets the table stats.
        Takes the loss's inputs or the model's ``aux`` outputs (``ReIDNet.positional_inputs``)."""
        aux = inputs.aux if isinstance(inputs, ObjectiveInput) else inputs
        similarity = _require(aux, "cls_similarity")
        pos_embed = _require(aux, "pos_embed")
        available = similarity.shape[1]
        if pos_embed.shape[0] != available:
            raise ValueError(
                f"{KEY}: aux['pos_embed'] has {pos_embed.shape[0]} rows but aux['cls_similarity'] "
                f"scores {available} patches"
            )
        tables = self._bias_tables(aux) if self.use_bias else None
        rel = None if tables is None else tables.mean(0)
        if self.selection == "soft":
            raw = soft_relation_vectors(
                similarity.float(), pos_embed.float(), rel, self.temperature, self.heads
            )
            first = second = None
        else:
            if self.num_patches > available:
                raise ValueError(
                    f"{KEY}.num_patches: expected at most the {available} patches the model gives, "
                    f"got {self.num_patches}"
                )
            first, second = ordered_pairs(top_patches(similarity, self.num_patches))
            raw = relation_vectors(pos_embed, first, second, rel, self.heads).float()
        self.stats = {
            "relation_norm": raw.detach().norm(dim=1).mean(),
            "pos_embed_norm": pos_embed.detach().float().norm(dim=1).mean(),
            "pos_embed_mean_share": mean_share(pos_embed, dim=0),
        }
        if tables is not None:
            used = tables.detach().float() if first is None else tables.detach().float()[:, :, first, second]
            self.stats["rel_bias_norm"] = used.pow(2).mean().sqrt()
            self.stats["rel_bias_mean_share"] = mean_share(tables, dim=None)
        return raw

    def bound(self, raw: Tensor) -> Tensor:
        """What the triplet loss compares, from the raw relation vectors of a whole (global) batch:
        ``r_i - mean_j r_j`` with ``center`` (what sets an image apart from the batch, not what every
        image shares), then ``/ ||.||`` with ``normalize``."""
        if self.center:
            raw = raw - raw.mean(dim=0, keepdim=True)
        return F.normalize(raw, dim=1, eps=1e-12) if self.normalize else raw

    def forward(self, inputs: ObjectiveInput) -> Tensor:
        raw, labels = global_batch(self.relations(inputs), inputs.labels)
        features = self.bound(raw)
        pairs = hard_example_mining(pairwise_euclidean(features, features), labels)
        gap = pairs.dist_ap - pairs.dist_an
        loss = F.softplus(gap).mean() if self.margin is None else F.relu(gap + self.margin).mean()
        self.stats |= {
            "d_ap": pairs.dist_ap.detach().mean(),
            "d_an": pairs.dist_an.detach().mean(),
            "gap": -gap.detach().mean(),
            "auc": identity_auc(features, labels),
            "collapse": mean_cross_cosine(features),
            "raw_collapse": mean_cross_cosine(raw),
            "weight": loss.detach().new_tensor(self.weight_at(inputs.step)),
        }
        return loss

    def extra_repr(self) -> str:
        margin = "soft" if self.margin is None else self.margin
        return (
            f"weight={self.weight}, num_patches={self.num_patches}, form={self.form}, "
            f"selection={self.selection}, temperature={self.temperature}, center={self.center}, "
            f"normalize={self.normalize}, margin={margin}, warmup_steps={self.warmup_steps}, "
            f"layers={self.layers}, heads={self.heads}, use_bias={self.use_bias}"
        )
