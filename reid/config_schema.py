"""Typed schemas of the constructors that configs build: a dataclass per constructor, derived from its
signature, so a config is checked key by key and typed before anything is built.

:func:`schema_of` makes one field per parameter, typed from its annotation (``int``, ``float``, ``bool``,
``str``, lists of those, ``Optional`` of those, a dataclass of config values as its own nested schema;
anything else ``Any``) and defaulting to the parameter's default (a parameter without one is ``???`` until a
config sets it). A nested schema carries the dataclass as its ``_target_``, so ``instantiate`` builds it:
``model.jpm`` arrives at the task as a ``JPMConfig``, ``eval.rerank`` as a ``RerankConfig``.

``reid.config_store`` registers these schemas with Hydra (checked at compose time);
:func:`typed_node` applies one to a node built outside Hydra's composition (an edited config, a run
folder's saved config), as ``reid.tasks.from_config.build_task`` does.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any, List, Literal, Optional, Union  # noqa: UP035  # the typing forms OmegaConf reads

from hydra.utils import get_object
from omegaconf import MISSING, DictConfig, OmegaConf

HYDRA_KEYS = frozenset({"_target_", "_partial_", "_recursive_", "_convert_", "_args_"})
"""Hydra's own keys of a node: how it is built, not arguments of its constructor."""
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
    homogeneous tuples), ``Optional`` of those, ``str`` for a ``Literal`` of strings, the schema of a
    dataclass of config values (a nested node, typed and given the dataclass as its ``_target_``, so
    ``instantiate`` builds it); else ``Any``."""
    if annotation in PRIMITIVES:
        return annotation
    if isinstance(annotation, type) and dataclasses.is_dataclass(annotation):
        try:
            return schema_of(f"{annotation.__module__}.{annotation.__qualname__}")
        except TypeError:  # a field whose default is no config value (a nested object): left open
            return Any
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
    """``{name: (annotation, default)}`` of a constructor, following ``**kwargs`` into its bases, and for a
    factory function (``vit_base(**kwargs) -> VisionTransformer``) into the class it returns."""
    found: dict[str, tuple[Any, Any]] = {}
    classes = target.__mro__ if isinstance(target, type) else ()
    functions = [c.__dict__["__init__"] for c in classes if "__init__" in c.__dict__] or [target]
    forwards = False
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
    returned = typing.get_type_hints(target).get("return") if not classes else None
    if forwards and isinstance(returned, type):
        for name, entry in _parameters(returned).items():
            found.setdefault(name, entry)
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


def _settings_class(annotation: Any) -> type | None:
    """The dataclass a parameter is annotated with (``Optional`` unwrapped), else None."""
    present = [arg for arg in typing.get_args(annotation) if arg is not type(None)] or [annotation]
    kind = present[0] if len(present) == 1 else None
    return kind if isinstance(kind, type) and dataclasses.is_dataclass(kind) else None


def with_settings_targets(node: Any) -> Any:
    """``node`` (plain containers) where every mapping given, without a ``_target_``, to a parameter that a
    ``_target_`` node's constructor annotates with a dataclass gets that dataclass as ``_target_``: the
    schemas' rule for the nodes no group schema reaches, e.g. ``model.backbone.rel_pos_bias: {shared:
    false}`` inside the backbone's partial becomes a ``RelPosBiasConfig``. Recursive; returns a copy."""
    if isinstance(node, list):
        return [with_settings_targets(item) for item in node]
    if not isinstance(node, Mapping):
        return node
    found = {key: with_settings_targets(value) for key, value in node.items()}
    target = found.get("_target_")
    try:
        parameters = _parameters(get_object(target)) if isinstance(target, str) else {}
    except (ImportError, AttributeError, TypeError, ValueError, NameError):
        parameters = {}  # building the node reports a bad _target_ with its own message
    for key, value in found.items():
        settings = _settings_class(parameters[key][0]) if key in parameters else None
        if settings is not None and isinstance(value, dict) and "_target_" not in value:
            found[key] = {"_target_": f"{settings.__module__}.{settings.__qualname__}", **value}
    return found


def typed_node(node: Mapping[str, Any], group: str) -> DictConfig:
    """``node`` (a ``group`` node with a ``_target_``) merged into the schema of its target: every key checked
    and typed, the constructor's defaults and the nested dataclass ``_target_`` s filled in. An unknown key
    or a wrong type raises OmegaConf's error naming the full key."""
    try:
        schema = schema_of(str(node["_target_"]), PASSED_BY_CODE.get(group, ()))
    except TypeError:  # a user's constructor with a default that is no config value: nothing to type by
        return OmegaConf.create(dict(node))
    # under the group's name, so an error names the full key (model.sie.cameras)
    typed = OmegaConf.merge({group: OmegaConf.structured(schema)}, {group: OmegaConf.create(dict(node))})
    assert isinstance(typed, DictConfig)
    node_typed = typed[group]
    assert isinstance(node_typed, DictConfig)  # a structured mapping merged with a mapping
    return node_typed
