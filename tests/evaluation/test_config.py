from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from reid.evaluation import AQEConfig, EvalConfig, RerankConfig

CONF = Path(__file__).resolve().parents[2] / "conf"


def _load(preset: str) -> EvalConfig:
    with initialize_config_dir(str(CONF / "eval"), version_base="1.3"):
        return instantiate(compose(config_name=preset))


def test_presets_instantiate_with_anchor_values():
    default = _load("default")
    assert default == EvalConfig()
    assert default.ranks == (1, 5, 10) and isinstance(default.ranks, tuple)
    fastreid = _load("fastreid")
    assert fastreid.metric == "cosine"
    assert fastreid.aqe == AQEConfig(alpha=3.0, k=5)
    assert fastreid.rerank == RerankConfig(k1=20, k2=6, lambda_value=0.3)
    transreid = _load("transreid_rerank")
    assert transreid.aqe is None and transreid.rerank == RerankConfig(k1=50, k2=15, lambda_value=0.3)


def test_lists_are_converted_and_nested_settings_are_their_dataclasses():
    """The config path builds ``eval.rerank`` into a RerankConfig (its schema gives the node that
    ``_target_``, reid.config_store); a plain mapping is refused, naming the key."""
    config = EvalConfig(ranks=[1, 3], max_rank=5, rerank=RerankConfig(k1=4, k2=2))
    assert config.ranks == (1, 3) and config.rerank == RerankConfig(k1=4, k2=2, lambda_value=0.3)
    hash(config)  # frozen and hashable: usable as a key
    with pytest.raises(ValueError, match="eval.rerank: expected a RerankConfig or null, got dict"):
        EvalConfig(rerank={"k1": 4, "k2": 2})


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"metric": "manhattan"}, "eval.metric"),
        ({"ranks": [0]}, "eval.ranks"),
        ({"ranks": [60]}, "eval.ranks"),
        ({"chunk_size": 0}, "eval.chunk_size"),
        ({"aqe": 3}, "eval.aqe"),
    ],
)
def test_bad_values_name_the_key(kwargs, message):
    with pytest.raises(ValueError, match=message):
        EvalConfig(**kwargs)


def test_bad_nested_values_name_the_key():
    with pytest.raises(ValueError, match="eval.rerank.k2"):
        RerankConfig(k1=4, k2=6)
    with pytest.raises(ValueError, match="eval.rerank.lambda_value"):
        RerankConfig(lambda_value=1.5)
    with pytest.raises(ValueError, match="eval.aqe.k"):
        AQEConfig(k=0)
