"""Each experiment's ``published`` key holds the result its header comment states, and nothing else.

The comment is the source (its numbers were taken from the papers, ../shared/REFERENCE.md): "Published
a / b" is mAP / R1 unless the names follow the numbers ("94.5 R1 / 85.9 mAP") or precede them
("R1/R5 85.2 / 97.4"). An experiment whose comment states none sets no ``published`` of its own, or
``null`` to drop one it would inherit from a parent experiment of another model.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir

from reid.config import CONFIG_DIR, register_resolvers
from reid.dataset_options import dataset_options

EXPERIMENTS = sorted((Path(CONFIG_DIR) / "experiment").glob("*.yaml"))
DATASETS = set(dataset_options())  # the registered datasets and the synthetic presets
PUBLISHED = re.compile(
    r"Published(?: (?P<names>\w+)/(?P<names2>\w+))?[^\d]*?(?P<a>\d+\.\d+)(?: (?P<a_name>mAP|R1))?"
    r" / (?P<b>\d+\.\d+)(?: (?P<b_name>mAP|R1))?"
)


def header(path: Path) -> str:
    """The leading comment lines, joined (a statement may wrap)."""
    lines = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("# "))
    return " ".join(lines)


def stated(path: Path) -> dict[str, float] | None:
    found = PUBLISHED.search(header(path))
    if found is None:
        return None
    first, second = found["a_name"] or found["names"] or "mAP", found["b_name"] or found["names2"] or "R1"
    return {first: float(found["a"]), second: float(found["b"])}


def own(path: Path) -> dict | None:
    return (yaml.safe_load(path.read_text()) or {}).get("published")


def parents(path: Path) -> list[str]:
    defaults = (yaml.safe_load(path.read_text()) or {}).get("defaults", [])
    return [entry for entry in defaults if isinstance(entry, str) and entry != "_self_"]


def test_the_comments_state_results() -> None:
    """The pattern reads every comment that says "Published" (none is silently skipped)."""
    saying = [p.stem for p in EXPERIMENTS if "Published" in header(p)]
    assert len(saying) >= 19 and all(stated(EXPERIMENTS[0].parent / f"{s}.yaml") for s in saying)
    assert stated(Path(CONFIG_DIR) / "experiment" / "bot_r50_market.yaml") == {"R1": 94.5, "mAP": 85.9}
    assert stated(Path(CONFIG_DIR) / "experiment" / "transreid_vehicleid.yaml") == {"R1": 85.2, "R5": 97.4}


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.stem)
def test_published_key_is_the_comments_result(path: Path) -> None:
    expected, key = stated(path), own(path)
    if expected is None:
        assert key is None, f"{path.name}: published {key} but its comment states no result"
        return
    assert isinstance(key, dict), f"{path.name}: its comment states {expected}; expected a published key"
    assert set(key) == {"dataset", "source", *expected}, path.name
    assert {name: key[name] for name in expected} == expected
    assert key["dataset"] in DATASETS and isinstance(key["source"], str) and key["source"]
    data = re.search(r"override /data: (\w+)", path.read_text())
    if data is not None and not data[1].endswith(key["dataset"]):  # the dataset it trains on (usl_msmt17)
        pytest.fail(f"{path.name}: published for {key['dataset']}, trains on data={data[1]}")


@pytest.mark.parametrize("path", [p for p in EXPERIMENTS if own(p)], ids=lambda p: p.stem)
def test_a_childs_published_key_replaces_every_inherited_value(path: Path) -> None:
    """Hydra merges a child's mapping into its parent's: a metric the child lacks would leak through."""
    for parent in parents(path):
        inherited = own(path.parent / f"{parent}.yaml") or {}
        assert set(inherited) <= set(own(path)), (path.name, parent)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("bot_r50_market2duke", "bot_r50_market"),  # the same BoT model: its market1501 reference target
        ("bot_r50_ibn_market2duke", None),
        ("snr_duke2market", None),
        ("rpe_triplet_market", None),
        ("vit_small_ics_lup_msmt", "vit_small_ics_lup_msmt"),
        ("transreid_market_384", None),
        ("demo", None),
    ],
)
def test_composed_published_follows_the_model(name: str, expected: str | None) -> None:
    register_resolvers()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name="run", overrides=[f"experiment={name}"])
    want = None if expected is None else own(Path(CONFIG_DIR) / "experiment" / f"{expected}.yaml")
    assert (None if cfg.published is None else dict(cfg.published)) == want
