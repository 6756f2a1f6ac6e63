"""The dataset registry: a dataset in its real on-disk format is one parser module.

A parser module decorates its loader with :func:`register_dataset`; the registry then serves it by name

- to the configs: Hydra's ConfigStore holds, in the ``data/dataset`` group, the node
  ``{_target_: <the loader>, _partial_: true, root: ${paths.data_dir}/<folder>, <keyword: default>...}``
  (every keyword parameter of the loader with its default, unless ``config`` gives another), so that
  ``data/dataset=<name>``, ``data.test_datasets=[<name>]`` and ``data.extra_train_datasets=[<name>]``
  find it with no YAML file; and, in the ``data`` group, ``data=<name>``: the supervised datamodule
  (``conf/data/_reid_base.yaml``) on it, with the ``datamodule`` settings it registers;
- to the tools: its file-name format (``name_format``) lets ``python -m reid.tools.extract`` label images of
  that dataset by their names (:mod:`reid.inference.name_labels`).

Where datasets are found (:func:`discover`): every module of this package (a parser file dropped here
registers itself), the importable modules named in the environment variable ``REID_DATASET_MODULES``
(comma-separated, e.g. ``REID_DATASET_MODULES=my_lab.datasets.cuhk03``), and the modules of the
``reid.datasets`` entry points of installed distributions. ``conf/data/dataset/`` keeps the synthetic presets,
which are generators rather than formats.
"""

from __future__ import annotations

import importlib
import inspect
import os
import pkgutil
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from types import MappingProxyType
from typing import Any, TypeVar

from reid.data.datasets.market_layout import NameFormat
from reid.data.records import ReIDDataset

GROUP = "data/dataset"
"""The Hydra config group the registered datasets' loaders are stored in (``data/dataset=<name>``, placed
at ``data.dataset``), beside the ``conf/data/dataset/`` presets."""
DATA_GROUP = "data"
"""The group of their ``data=<name>`` options (the supervised datamodule on the dataset)."""
MODULES_VARIABLE = "REID_DATASET_MODULES"
ENTRY_POINT_GROUP = "reid.datasets"
_NAME = re.compile(r"[a-z][a-z0-9_]*")

Loader = TypeVar("Loader", bound=Callable[..., ReIDDataset])


class DatasetModuleError(ImportError):
    """A module named by ``REID_DATASET_MODULES`` or a ``reid.datasets`` entry point cannot be imported."""


@dataclass(frozen=True)
class RegisteredDataset:
    """A dataset as registered: its config ``name``, its ``loader`` (``loader(root, **options)``), the
    ``folder`` it has under ``paths.data_dir`` by default, its file-name format for the tools (``None``:
    its names carry no labels the tools could read) and ``config`` values other than the loader's defaults."""

    name: str
    loader: Callable[..., ReIDDataset]
    folder: str
    name_format: NameFormat | None = None
    config: Mapping[str, Any] = field(default_factory=dict)
    datamodule: Mapping[str, Any] | None = field(default_factory=dict)

    @property
    def target(self) -> str:
        """The loader's import path, the config node's ``_target_``."""
        return f"{self.loader.__module__}.{self.loader.__qualname__}"

    def config_node(self) -> dict[str, Any]:
        """The ``data/dataset`` group node: the loader, its root under ``paths.data_dir``, its keywords."""
        options = {
            name: parameter.default
            for name, parameter in inspect.signature(self.loader).parameters.items()
            if name != "root" and parameter.default is not inspect.Parameter.empty
        }
        unknown = sorted(set(self.config) - set(options))
        if unknown:
            raise TypeError(
                f"dataset {self.name!r}: config keys {unknown} are not keyword parameters of {self.target}"
            )
        node: dict[str, Any] = {
            "_target_": self.target,
            "_partial_": True,
            "root": f"${{paths.data_dir}}/{self.folder}",
        }
        return node | options | dict(self.config)

    def data_node(self) -> dict[str, Any] | None:
        """The ``data=<name>`` option: the supervised datamodule (``conf/data/_reid_base.yaml``) on this
        dataset, with :attr:`datamodule`'s settings; ``None`` for a dataset without one (unlabelled)."""
        if self.datamodule is None:
            return None
        defaults = ["_reid_base", {"dataset": self.name}, "_self_"]  # data/dataset, relative to data
        return {"defaults": defaults, **self.datamodule}


_REGISTRY: dict[str, RegisteredDataset] = {}


def register_dataset(
    name: str,
    *,
    folder: str,
    name_format: NameFormat | None = None,
    config: Mapping[str, Any] | None = None,
    datamodule: Mapping[str, Any] | None = MappingProxyType({}),
) -> Callable[[Loader], Loader]:
    """Decorator: register the decorated ``load_<name>(root, **options) -> ReIDDataset`` under ``name``.

    Args:
        name: the config option (``data/dataset=<name>``): lower case, digits and ``_``.
        folder: the dataset's folder under ``paths.data_dir`` (its official release name).
        name_format: how its file names encode identity and camera, for the tools; ``None`` if they do not.
        config: config values other than the loader's keyword defaults (e.g. a default regex).
        datamodule: settings of its ``data=<name>`` option over the supervised datamodule's (e.g. a vehicle
            dataset's ``image_size: [256, 256]``); ``None``: no such option (an unlabelled dataset).

    Raises:
        ValueError: a malformed name, or a name another loader has registered.
    """
    if not _NAME.fullmatch(name):
        raise ValueError(
            f"dataset name {name!r}: expected lower case letters, digits and '_', a letter first"
        )

    def register(loader: Loader) -> Loader:
        settings = None if datamodule is None else dict(datamodule)
        entry = RegisteredDataset(name, loader, folder, name_format, dict(config or {}), settings)
        previous = _REGISTRY.get(name)
        if previous is not None and previous.target != entry.target:
            raise ValueError(
                f"dataset {name!r} is registered twice: by {previous.target} and by {entry.target}"
            )
        entry.config_node()  # a config key that is no parameter fails here, where the dataset is written
        _REGISTRY[name] = entry
        return loader

    return register


def _plugin_modules() -> list[str]:
    """The modules named by ``REID_DATASET_MODULES`` and by ``reid.datasets`` entry points."""
    named = [m.strip() for m in os.environ.get(MODULES_VARIABLE, "").split(",") if m.strip()]
    return named + [point.module for point in entry_points(group=ENTRY_POINT_GROUP)]


def discover() -> None:
    """Import every module that may register a dataset (idempotent: Python imports a module once).

    Raises:
        DatasetModuleError: a module of ``REID_DATASET_MODULES`` or of an entry point cannot be imported;
            the message names the variable or the entry point group.
    """
    package = importlib.import_module(__name__.rpartition(".")[0])
    for module in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{package.__name__}.{module.name}")
    for name in _plugin_modules():
        try:
            importlib.import_module(name)
        except ImportError as error:
            raise DatasetModuleError(
                f"dataset module {name!r} (from {MODULES_VARIABLE} or the {ENTRY_POINT_GROUP!r} entry "
                f"points) cannot be imported: {error}"
            ) from error


def registered_datasets() -> dict[str, RegisteredDataset]:
    """Every registered dataset by name, in registration order (after :func:`discover`)."""
    discover()
    return dict(_REGISTRY)


def store_dataset_configs() -> None:
    """Put every registered dataset's :meth:`RegisteredDataset.config_node` in Hydra's ConfigStore, group
    ``dataset``; called before composing a run's config (``reid.run``, the tools, the tests). Idempotent."""
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    for entry in registered_datasets().values():
        store.store(group=GROUP, name=entry.name, node=entry.config_node(), provider="reid")
        data = entry.data_node()
        if data is not None:
            store.store(group=DATA_GROUP, name=entry.name, node=data, provider="reid")
