"""Typed structured configs (issue 32, item 2): each group that builds an object composes against a schema
derived from its constructor's signature (reid/config_store.py), so a wrong key or type fails at compose
time with the key; ranges are the constructors' own checks.

Before: the groups were untyped, and a hand-written rule table in reid.config_checks covered nine keys
after composition (`data.batch_size=abc` passed composition; `data.pixel_std=abc` failed inside a
transform; `trainer.max_epoch=3` was refused only because Hydra's struct mode refuses any new key).
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from collections.abc import Sequence
from typing import Any, List, Literal, Optional  # noqa: UP035

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import MISSING, OmegaConf

from reid.config import CONFIG_DIR
from reid.config_checks import ConfigValueError
from reid.config_schema import field_type, schema_of
from reid.config_store import check_group_keys


@pytest.mark.parametrize(
    ("annotation", "expected"),
    [
        (int, int),
        (float | None, Optional[float]),  # noqa: UP045
        (Sequence[int], List[int]),  # noqa: UP006
        (tuple[float, float, float], List[float]),  # noqa: UP006
        (tuple[int, ...], List[int]),  # noqa: UP006
        (Literal["before", "after"], str),
        (int | str, Any),
        (dict[str, int], Any),
        (Sequence[int] | None, Optional[List[int]]),  # noqa: UP006, UP045
    ],
)
def test_annotations_map_to_the_types_omegaconf_checks(annotation, expected):
    assert field_type(annotation) == expected


class Widget:
    def __init__(self, size: int, scale: float = 1.0, names: Sequence[str] = ("a",), mode: str | None = None):
        pass


class BigWidget(Widget):
    def __init__(self, *args: Any, depth: int = 2, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)


def test_a_schema_has_one_typed_field_per_parameter_with_its_default():
    schema = schema_of(f"{__name__}.BigWidget")
    fields = {field.name: field for field in dataclasses.fields(schema)}
    assert list(fields) == ["_target_", "depth", "size", "scale", "names", "mode"]  # **kwargs followed
    node = OmegaConf.structured(schema)
    assert node.depth == 2 and node.scale == 1.0 and list(node.names) == ["a"] and node.mode is None
    assert OmegaConf.is_missing(node, "size") and fields["size"].default is MISSING
    with pytest.raises(Exception, match=r"Value 'big' of type 'str' could not be converted to Integer"):
        OmegaConf.merge(node, {"depth": "big"})
    with pytest.raises(Exception, match=r"Key 'dept' not in 'BigWidget'"):
        OmegaConf.merge(node, {"dept": 3})


class Odd:
    def __init__(self, rng: object = object()) -> None:
        pass


def test_a_default_that_is_no_config_value_is_refused_naming_it():
    with pytest.raises(TypeError, match=r"Odd: the default of rng .* cannot be a config value"):
        schema_of(f"{__name__}.Odd")


@pytest.mark.parametrize(
    ("override", "fragments"),
    [
        ("data.batch_size=abc", ["data.batch_size", "could not be converted to Integer", "ReIDDataModule"]),
        ("data.pixel_std=abc", ["data.pixel_std", "Invalid value assigned: str is not a ListConfig"]),
        ("trainer.max_epoch=3", ["max_epoch"]),
        ("eval.max_rank=ten", ["eval.max_rank", "could not be converted to Integer", "EvalConfig"]),
        ("model.sie_at_test=maybe", ["model.sie_at_test", "'maybe' is not a valid bool"]),
        ("seed=1.5", ["seed", "could not be converted to Integer"]),
    ],
)
def test_a_wrong_key_or_type_fails_at_compose_time_naming_the_key(compose_config, override, fragments):
    with pytest.raises(ConfigCompositionException) as error:
        compose_config(override)
    chain, cause = [], error.value
    while cause is not None:
        chain.append(str(cause))
        cause = cause.__cause__
    message = " | ".join(chain)
    assert all(fragment in message for fragment in fragments), message


def test_the_command_line_stops_at_compose_time_with_the_key(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "reid.run", "data.num_workers=two", f"hydra.run.dir={tmp_path}"],
        capture_output=True, text=True, timeout=120, cwd=CONFIG_DIR.parent,
    )  # fmt: skip
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert "data.num_workers" in done.stderr and "could not be converted to Integer" in done.stderr
    assert not (tmp_path / "results.json").exists()


def test_every_setting_is_in_the_composed_config(compose_config):
    """The constructors' defaults are written out: the saved config is the whole run."""
    cfg = compose_config()
    assert cfg.data.min_image_side == 16 and cfg.model.weights_strict is True
    assert cfg.trainer.accumulate_grad_batches == 1 and cfg.eval.max_rank == 50


def test_a_force_added_key_is_refused_naming_the_constructors_keys(compose_config):
    cfg = compose_config("+model.neck_feats=after")  # `+` appends past the schema
    with pytest.raises(
        ConfigValueError, match=r"model.neck_feats: TransReIDTask takes no 'neck_feats' \(its keys"
    ):
        check_group_keys(cfg)
    check_group_keys(compose_config())
