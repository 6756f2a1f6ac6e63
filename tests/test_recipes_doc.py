"""docs/recipes.md is generated from the configs and cannot drift; every deliberate difference from the
official code is one override away (reid.tools.recipes)."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from reid.config import CONFIG_DIR, register_resolvers
from reid.tools import recipes


def test_every_experiment_has_a_recipe_source():
    files = {path.stem for path in (CONFIG_DIR / "experiment").glob("*.yaml")}
    assert set(recipes.SOURCES) == files, "add new experiments to reid.tools.recipes.SOURCES"


def test_docs_recipes_md_is_what_the_configs_give():
    """Regenerate it with `python -m reid.tools.recipes --write` after changing a recipe."""
    assert recipes.DOC.read_text() == recipes.render(), (
        "docs/recipes.md is stale: python -m reid.tools.recipes --write"
    )


def _one_experiment_per_difference() -> list[tuple[str, recipes.Difference]]:
    """Each distinct difference once, on the first experiment of a family that has it."""
    found: dict[int, tuple[str, recipes.Difference]] = {}
    for name, (family, _) in recipes.SOURCES.items():
        for diff in family.differences:
            if diff.override and id(diff) not in found:
                found[id(diff)] = (name, diff)
    return list(found.values())


DIFFERENCES = _one_experiment_per_difference()


@pytest.mark.parametrize(("name", "difference"), DIFFERENCES, ids=[f"{n}:{d.key}" for n, d in DIFFERENCES])
def test_each_difference_is_one_override_away(name, difference):
    register_resolvers()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        default = compose(config_name="run", overrides=[f"experiment={name}"])
        official = compose(config_name="run", overrides=[f"experiment={name}", difference.override])
    key, value = difference.override.split("=", 1)
    assert key == difference.key
    assert OmegaConf.select(default, key) != OmegaConf.select(official, key)
    assert str(OmegaConf.select(official, key)) == value


def test_the_cli_prints_one_experiment(capsys):
    recipes.main(["bot_r50_market"])
    out = capsys.readouterr().out
    assert out.startswith("## BoT") and "| `model.backbone.stem_relu` | `False` |" in out
    with pytest.raises(ValueError, match="no recipe source"):
        recipes.render(["no_such_experiment"])
