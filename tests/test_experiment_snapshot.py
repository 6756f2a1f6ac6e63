"""Every experiment's fully resolved config, held (issue 32, item 7): the library-first redesign must not
change what any experiment trains. The snapshot (``tests/snapshots/experiment_configs.json``) holds each
experiment's leaf values by dotted path, composed as ``python -m reid.run experiment=<name>`` composes it
with fixed paths. A redesign that moves a key lists the move in :data:`MOVED` (old path -> new path), so
the values are compared, not the layout. A key the snapshot lacks is accepted only when it is a constructor
default that a typed group schema (``reid.config_store``, issue 32 item 2) now writes into the config (the
same value the constructor used when the key was absent; for a node typed by a dataclass, e.g.
``model.param_groups``, its fields and its ``_target_``), or a key :data:`ADDED` lists. Rewrite the
snapshot only for an intended change of a recipe:
``REID_UPDATE_SNAPSHOT=1 pytest tests/test_experiment_snapshot.py``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import typing
from typing import Any

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from reid.config import CONFIG_DIR, register_resolvers
from reid.config_schema import PASSED_BY_CODE, SCHEMAS, schema_of

SNAPSHOT = CONFIG_DIR.parent / "tests" / "snapshots" / "experiment_configs.json"
PATHS = ["paths.data_dir=/data", "paths.output_dir=/out", "paths.root_dir=/project"]
MOVED: dict[str, str] = {}
"""Keys a redesign moved: the snapshot's dotted path -> where the value lives now."""
ADDED: dict[str, Any] = {"model.loss.center._partial_": True}
"""Keys a redesign added that change how an object is built, not what it is: BoT's center term comes as a
partial the task completes with the model's sizes (``Objective.bind_model``), where the task used to write
them into the config."""
EXPERIMENTS = sorted(path.stem for path in (CONFIG_DIR / "experiment").glob("*.yaml"))


def leaves(value: Any, prefix: str = "") -> dict[str, Any]:
    """``{dotted.path: leaf}`` of a plain container (list items by index)."""
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list):
        items = ((str(i), v) for i, v in enumerate(value))
    else:
        return {prefix: value}
    found: dict[str, Any] = {}
    for key, item in items:
        found |= leaves(item, f"{prefix}.{key}" if prefix else str(key))
    if not found:
        found[prefix] = value  # an empty dict or list is a value too
    return found


def resolved(name: str) -> dict[str, Any]:
    register_resolvers()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("run", overrides=[f"experiment={name}", *PATHS])
    return leaves(json.loads(json.dumps(OmegaConf.to_container(cfg, resolve=True))))


def _nested_schema(kind: Any) -> type | None:
    """The dataclass schema a field is typed by (``Optional`` unwrapped), else None."""
    present = [arg for arg in typing.get_args(kind) if arg is not type(None)] or [kind]
    return present[0] if len(present) == 1 and dataclasses.is_dataclass(present[0]) else None


def constructor_default(now: dict[str, Any], path: str) -> Any:
    """The default the schema of ``path``'s group gives the key, following nodes typed by a dataclass
    (``model.jpm.shuffle``); ``"<none>"`` if it is no schema key."""
    group, _, key = path.partition(".")
    if group not in SCHEMAS or f"{group}._target_" not in now:
        return "<none>"
    schema: type | None = schema_of(now[f"{group}._target_"], PASSED_BY_CODE.get(group, ()))
    *parents, leaf = key.split(".")
    for parent in parents:
        fields = {field.name: field.type for field in dataclasses.fields(schema)} if schema else {}
        schema = _nested_schema(fields[parent]) if parent in fields else None
    if schema is None:
        return "<none>"
    defaults = json.loads(json.dumps(OmegaConf.to_container(OmegaConf.structured(schema))))
    return defaults.get(leaf, "<none>")


def added_value(now: dict[str, Any], path: str) -> Any:
    """The value a key the snapshot lacks may have: its schema default, or what :data:`ADDED` says."""
    return ADDED[path] if path in ADDED else constructor_default(now, path)


@pytest.fixture(scope="module")
def snapshot() -> dict[str, dict[str, Any]]:
    if os.environ.get("REID_UPDATE_SNAPSHOT") == "1":
        SNAPSHOT.write_text(
            json.dumps({name: resolved(name) for name in EXPERIMENTS}, indent=0, sort_keys=True)
        )
    return json.loads(SNAPSHOT.read_text())


def test_the_snapshot_covers_every_experiment(snapshot):
    assert sorted(snapshot) == EXPERIMENTS


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_an_experiment_resolves_to_its_snapshot(name, snapshot):
    held = {MOVED.get(path, path): value for path, value in snapshot[name].items()}
    now = resolved(name)
    pairs = {
        path: (held.get(path, "<absent>"), now.get(path, "<absent>")) for path in held.keys() | now.keys()
    }
    changed = {
        path: pair
        for path, pair in pairs.items()
        if pair[0] != pair[1] and not (pair[0] == "<absent>" and pair[1] == added_value(now, path))
    }
    assert not changed, f"experiment={name}: (snapshot, now) per key: {dict(sorted(changed.items()))}"
