"""The structured configs Hydra composes against: a typed schema for each group's constructor, and the
registered datasets.

Each group option whose node is built by ``instantiate`` (``conf/data``, ``conf/model``, ``conf/eval``,
``conf/trainer``) lists the schema of its ``_target_`` first in its defaults, e.g.
``- /schema/data/ReIDDataModule@_here_``. The schema is a dataclass derived from the constructor's
signature (:func:`schema_of`): one field per parameter, typed from its annotation (``int``, ``float``,
``bool``, ``str``, lists of those, ``Optional`` of those; anything else ``Any``) and defaulting to the
parameter's default (a parameter without one is ``???`` until a config sets it). So at compose time

- a key the constructor does not take fails: ``Key 'batch_sise' not in 'ReIDDataModule'`` with its full key
  and the config it came from;
- a value of the wrong type fails: ``Value 'abc' of type 'str' could not be converted to Integer`` with its
  full key;
- the composed config shows every setting of the run, the constructor's defaults included.

Arguments the code passes when it builds the object (the task's ``data_info`` and ``evaluation``, the
trainer's ``callbacks`` and ``logger``) are not config keys. Ranges and cross-key rules are checked by the
constructors themselves, each naming its key.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import types
import typing
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, List, Literal, Optional, Union  # noqa: UP035  # the typing forms OmegaConf reads

from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import get_object
from omegaconf import MISSING, DictConfig, OmegaConf

from reid.config import CONFIG_DIR
from reid.config_checks import ConfigValueError
from reid.data.datasets.registry import store_dataset_configs

SCHEMA_GROUP = "schema"
_HYDRA_KEYS = {"_target_", "_partial_", "_recursive_", "_convert_", "_args_"}
PRIMITIVES: tuple[type, ...] = (int, float, bool, str)

SCHEMAS: dict[str, tuple[str, ...]] = {
    "data": (
        "reid.data.reid_datamodule.ReIDDataModule",
        "reid.data.usl_datamodule.UnlabelledDataModule",
        "reid.data.ssl_datamodule.SSLDataModule",
    ),
    "model": (
        "reid.tasks.transreid.TransReIDTask",
        "reid.tasks.cluster_contrast.ClusterContrastTask",
        "reid.tasks.ssl_pretrain.SSLPretrainTask",
    ),
    "eval": ("reid.evaluation.config.EvalConfig",),
    "trainer": ("lightning.pytorch.trainer.trainer.Trainer",),
}
"""The constructors of each group; a group option's ``_target_`` is one of them."""

PASSED_BY_CODE: dict[str, tuple[str, ...]] = {
    "model": ("data_info", "evaluation"),  # reid.run: from the datamodule and conf/eval
    "trainer": ("callbacks", "logger"),  # reid.run: from conf/callbacks and conf/logger
}
"""Constructor arguments ``reid.run`` gives when it builds the object: not config keys."""


def field_type(annotation: Any) -> Any:
    """The OmegaConf type of a parameter annotation: primitives, ``List`` of one primitive (sequences and
    homogeneous tuples), ``Optional`` of those, ``str`` for a ``Literal`` of strings; else ``Any``."""
    if annotation in PRIMITIVES:
        return annotation
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (Union, types.UnionType):
        present = [a for a in args if a is not type(None)]
        inner = field_type(present[0]) if len(present) == 1 else Any
        return Any if inner is Any or len(present) == len(args) else Optional[inner]  # noqa: UP045
    if origin is Literal and all(isinstance(a, str) for a in args):
        return str
    if origin in (list, tuple, Sequence) and args:
        items = {a for a in args if a is not Ellipsis}
        if len(items) == 1 and (item := items.pop()) in PRIMITIVES:
            return List[item]  # type: ignore[valid-type]  # noqa: UP006  # OmegaConf reads typing.List
    return Any


def _parameters(target: Callable[..., Any]) -> dict[str, tuple[Any, Any]]:
    """``{name: (annotation, default)}`` of a constructor, following ``**kwargs`` into its bases."""
    found: dict[str, tuple[Any, Any]] = {}
    classes = target.__mro__ if isinstance(target, type) else ()
    functions = [c.__dict__["__init__"] for c in classes if "__init__" in c.__dict__] or [target]
    for function in functions:
        hints = typing.get_type_hints(function)
        forwards = False
        for name, parameter in inspect.signature(function).parameters.items():
            if name == "self":
                continue
            if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
                forwards = True
                continue
            found.setdefault(name, (hints.get(name, Any), parameter.default))
        if not forwards:
            break
    return found


def _field_default(name: str, default: Any, target: str) -> Any:
    if default is inspect.Parameter.empty:
        return MISSING
    if isinstance(default, tuple):
        default = list(default)
    plain = default is None or isinstance(default, PRIMITIVES)
    if not plain and not (isinstance(default, list) and all(isinstance(v, PRIMITIVES) for v in default)):
        raise TypeError(f"{target}: the default of {name} ({default!r}) cannot be a config value")
    return dataclasses.field(default_factory=lambda: list(default)) if isinstance(default, list) else default


@functools.cache
def schema_of(target: str, skip: tuple[str, ...] = ()) -> type:
    """The dataclass schema of constructor ``target`` (module docstring), named after it; ``skip``: the
    parameters that are no config keys."""
    constructor = get_object(target)
    fields: list[tuple[str, Any, Any]] = [("_target_", str, dataclasses.field(default=target))]
    for name, (annotation, default) in _parameters(constructor).items():
        if name in skip:
            continue
        value = _field_default(name, default, target)
        kind = field_type(annotation)
        if value is None and kind is not Any and typing.get_origin(kind) not in (Union, types.UnionType):
            kind = Optional[kind]  # noqa: UP045  # a None default of a parameter annotated without None
        fields.append((name, kind, value))
    return dataclasses.make_dataclass(target.rpartition(".")[2], fields)


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
        unknown = [str(key) for key in node if key not in known and str(key) not in _HYDRA_KEYS]
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
        node = compose(config_name=f"{group}/{option}")[group]
    plain = OmegaConf.to_container(node, resolve=False)
    assert isinstance(plain, dict)  # a group option's node is a mapping
    return OmegaConf.create(plain)


def store_configs() -> None:
    """Everything the configs compose against that is not a file of ``conf/``: the group schemas and the
    registered datasets. ``reid.run``, the tools and the tests call it before composing."""
    store_schemas()
    store_dataset_configs()
