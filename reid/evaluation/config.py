"""Evaluation switches, built by Hydra from ``conf/eval/*.yaml``.

Every field is validated on construction so that a typo in a YAML file fails at start-up with
the offending key and value, not after an hour of training.
"""

from __future__ import annotations

from dataclasses import dataclass

METRICS = ("euclidean", "cosine")


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


@dataclass(frozen=True)
class AQEConfig:
    """Average query expansion (fast-reid ``aqe``): each feature becomes the mean of its ``k`` nearest
    neighbours (itself included) weighted by ``cos^alpha``."""

    alpha: float = 3.0
    k: int = 5

    def __post_init__(self) -> None:
        _require(int(self.k) >= 1, f"eval.aqe.k: expected an integer >= 1, got {self.k!r}")
        object.__setattr__(self, "k", int(self.k))
        object.__setattr__(self, "alpha", float(self.alpha))


@dataclass(frozen=True)
class RerankConfig:
    """k-reciprocal re-ranking (Zhong et al., CVPR 2017): neighbourhood ``k1``, local query
    expansion ``k2``, weight ``lambda_value`` of the original distance in the final one."""

    k1: int = 20
    k2: int = 6
    lambda_value: float = 0.3

    def __post_init__(self) -> None:
        _require(int(self.k1) >= 1, f"eval.rerank.k1: expected an integer >= 1, got {self.k1!r}")
        _require(
            1 <= int(self.k2) <= int(self.k1) + 1,
            f"eval.rerank.k2: expected 1 <= k2 <= k1 + 1 = {int(self.k1) + 1}, got {self.k2!r}",
        )
        _require(
            0.0 <= float(self.lambda_value) <= 1.0,
            f"eval.rerank.lambda_value: expected a value in [0, 1], got {self.lambda_value!r}",
        )
        object.__setattr__(self, "k1", int(self.k1))
        object.__setattr__(self, "k2", int(self.k2))
        object.__setattr__(self, "lambda_value", float(self.lambda_value))


@dataclass(frozen=True)
class EvalConfig:
    """How query/gallery features become metrics.

    Pipeline: optional L2 normalisation -> optional AQE (then re-normalised when ``normalize``) ->
    distances (``euclidean``: ``||q - g||``; ``cosine``: ``1 - cos``) or k-reciprocal re-ranking ->
    CMC / mAP / mINP. ``flip`` is read by the tasks (average of image and mirrored image features);
    the evaluator itself never sees images. ``chunk_size`` is the number of query rows whose
    distances are held at once.
    """

    metric: str = "euclidean"
    normalize: bool = True
    flip: bool = False
    aqe: AQEConfig | None = None
    rerank: RerankConfig | None = None
    ranks: tuple[int, ...] = (1, 5, 10)
    max_rank: int = 50
    chunk_size: int = 2048

    def __post_init__(self) -> None:
        _require(self.metric in METRICS, f"eval.metric: expected one of {METRICS}, got {self.metric!r}")
        ranks = tuple(int(r) for r in self.ranks)
        _require(int(self.max_rank) >= 1, f"eval.max_rank: expected an integer >= 1, got {self.max_rank!r}")
        _require(
            len(ranks) > 0 and all(1 <= r <= int(self.max_rank) for r in ranks),
            f"eval.ranks: expected ranks in [1, max_rank={self.max_rank}], got {list(ranks)}",
        )
        _require(int(self.chunk_size) >= 1, f"eval.chunk_size: expected >= 1, got {self.chunk_size!r}")
        object.__setattr__(self, "ranks", ranks)
        object.__setattr__(self, "max_rank", int(self.max_rank))
        object.__setattr__(self, "chunk_size", int(self.chunk_size))
        object.__setattr__(self, "normalize", bool(self.normalize))
        object.__setattr__(self, "flip", bool(self.flip))
        for key, kind in (("aqe", AQEConfig), ("rerank", RerankConfig)):
            value = getattr(self, key)
            _require(
                value is None or isinstance(value, kind),
                f"eval.{key}: expected a {kind.__name__} or null, got {type(value).__name__}",
            )
