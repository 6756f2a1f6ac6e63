"""The structured configs Hydra composes against: a typed schema for each group's constructor, and the
registered datasets.

Each group option whose node is built by ``instantiate`` (``conf/data``, ``conf/model``, ``conf/eval``,
``conf/trainer``) lists the schema of its ``_target_`` first in its defaults, e.g.
``- /schema/data/ReIDDataModule@_here_``. The schema is a dataclass derived from the constructor's
signature (:func:`reid.config_schema.schema_of`: one field per parameter, typed from its annotation,
defaulting to the parameter's default). So at compose time

- a key the constructor does not take fails: ``Key 'batch_sise' not in 'ReIDDataModule'`` with its full key
  and the config it came from;
- a value of the wrong type fails: ``Value 'abc' of type 'str' could not be converted to Integer`` with its
  full key;
- a node typed by a dataclass (``model.jpm``: ``JPMConfig``, ``eval.rerank``: ``RerankConfig``) is checked
  key by key too, and gets its ``_target_``: the task receives the built dataclass;
- the composed config shows every setting of the run, the constructor's defaults included.

Arguments the code passes when it builds the object (the task's ``data_info`` and ``evaluation``, the
trainer's ``callbacks`` and ``logger``) are not config keys. Ranges and cross-key rules are checked by the
constructors themselves, each naming its key.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Optional

from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf

from reid.config import CONFIG_DIR
from reid.config_checks import ConfigValueError
from reid.config_schema import HYDRA_KEYS, PASSED_BY_CODE, SCHEMAS, schema_of
from reid.data.datasets.registry import store_dataset_configs

SCHEMA_GROUP = "schema"


@dataclasses.dataclass
class RunSchema:
    """The top level of ``conf/run.yaml``: the run's own keys typed, the groups' nodes (typed by their
    own schemas) and ``published`` (checked by ``reid.tools.summarize``) left open."""

    task_name: str = "reid"
    seed: int = 0
    train: bool = True
    test: bool = True
    test_weights: str = "last"
    evaluate_before_fit: bool = False
    ckpt_path: Optional[str] = None  # noqa: UP045  # the typing form OmegaConf reads
    overwrite: bool = False
    optimized_metric: Optional[str] = "val/mAP"  # noqa: UP045
    published: Any = None
    paths: Any = None
    data: Any = None
    model: Any = None
    trainer: Any = None
    logger: Any = None
    callbacks: Any = None
    eval: Any = None


def store_schemas(schemas: Mapping[str, Sequence[str]] = SCHEMAS) -> None:
    """Put :class:`RunSchema` (``schema/run``) and the schema of every constructor of :data:`SCHEMAS`
    (``schema/<group>/<ClassName>``) in Hydra's ConfigStore (idempotent)."""
    store = ConfigStore.instance()
    store.store(group=SCHEMA_GROUP, name="run", node=RunSchema, provider="reid")
    for group, targets in schemas.items():
        for target in targets:
            node = schema_of(target, PASSED_BY_CODE.get(group, ()))
            store.store(group=f"{SCHEMA_GROUP}/{group}", name=node.__name__, node=node, provider="reid")


def check_group_keys(cfg: DictConfig) -> None:
    """Every key of a schema group's node is a parameter of its ``_target_``: the check compose time cannot
    make for keys a ``+group.key=value`` override force-added. Raises :class:`ConfigValueError` naming the
    key and the constructor's keys."""
    for group in SCHEMAS:
        node = cfg.get(group)
        if not isinstance(node, DictConfig) or not isinstance(node.get("_target_"), str):
            continue
        try:
            known = {
                f.name for f in dataclasses.fields(schema_of(node._target_, PASSED_BY_CODE.get(group, ())))
            }
        except (ImportError, AttributeError, TypeError, ValueError):
            continue  # an unknown target is reported by instantiate itself, with its import error
        unknown = [str(key) for key in node if key not in known and str(key) not in HYDRA_KEYS]
        if unknown:
            name = node._target_.rpartition(".")[2]
            keys = ", ".join(sorted(known - {"_target_"}))
            raise ConfigValueError(
                f"{group}.{unknown[0]}: {name} takes no '{unknown[0]}' (its keys: {keys}); drop it or pick a "
                f"{group} option that has it"
            )


@contextmanager
def hydra_context(config_dir: Path = CONFIG_DIR) -> Iterator[None]:
    """The running Hydra app's config search path, or ``config_dir`` outside one (tests, tools, notebooks);
    the schemas and the registered datasets are in the ConfigStore either way."""
    store_configs()
    if GlobalHydra.instance().is_initialized():
        yield
        return
    with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
        yield


def compose_option(group: str, option: str, config_dir: Path = CONFIG_DIR) -> DictConfig:
    """The node of ``<group>/<option>`` composed on its own: its defaults list (bases, schema) applied,
    interpolations such as ``${data.image_size}`` left for the caller's config to resolve; a plain,
    editable node (the schema checked it; the caller places it in a config of its own)."""
    with hydra_context(config_dir):
        node = OmegaConf.select(compose(config_name=f"{group}/{option}"), group.replace("/", "."))
    plain = OmegaConf.to_container(node, resolve=False)
    assert isinstance(plain, dict)  # a group option's node is a mapping
    return OmegaConf.create(plain)


def store_configs() -> None:
    """Everything the configs compose against that is not a file of ``conf/``: the group schemas and the
    registered datasets. ``reid.run``, the tools and the tests call it before composing."""
    store_schemas()
    store_dataset_configs()
