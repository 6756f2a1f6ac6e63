"""``data.test_datasets`` and ``data.extra_train_datasets``: datasets named by ``data/dataset`` group options.

``python -m reid.run experiment=... data.test_datasets=[dukemtmc,msmt17]`` evaluates the model on the
query and gallery of every target in one run, in the order given; ``data.extra_train_datasets=[dukemtmc]``
adds the train split of every listed source to ``data.dataset``'s (multi-source training,
``reid.data.combined``). Before the datamodule is built, :func:`resolve_dataset_names` replaces each
option name under one of these keys by that option's loader config, composed by Hydra (so a
``defaults`` list in the option applies) and placed at ``<key>.<name>``, where its interpolations
(``${paths.data_dir}``) resolve against the run's config. A mapping ``{name: {_target_: ..., ...}}``
names custom loaders directly and is left as it is; so is what ``+data/dataset@<key>.<name>=<option>``
composes. ``null`` (the default) evaluates on the training dataset, and trains on it alone.
"""

from __future__ import annotations

from pathlib import Path

from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

from reid.config import CONFIG_DIR
from reid.config_checks import ConfigValueError
from reid.config_store import compose_option, hydra_context
from reid.data.datasets.registry import GROUP

TEST_KEY = "data.test_datasets"
TRAIN_KEY = "data.extra_train_datasets"
_ONCE = {TEST_KEY: "each target is evaluated once", TRAIN_KEY: "each source is added once"}
"""The keys :func:`resolve_dataset_names` serves, with why a name may be listed once."""
_EXAMPLE = {TEST_KEY: "[dukemtmc,msmt17]", TRAIN_KEY: "[dukemtmc]"}


def dataset_options(config_dir: Path = CONFIG_DIR) -> list[str]:
    """The ``data/dataset`` group's option names, sorted: the registered datasets
    (:mod:`reid.data.datasets.registry`) and the ``conf/data/dataset/`` presets (the synthetic people)."""
    with hydra_context(config_dir):
        return sorted(GlobalHydra.instance().config_loader().get_group_options(GROUP))


def compose_dataset_option(name: str, config_dir: Path = CONFIG_DIR) -> DictConfig:
    """The loader config of the ``data/dataset`` option ``name`` (interpolations left unresolved)."""
    return compose_option(GROUP, name, config_dir)


def resolve_test_datasets(cfg: DictConfig, config_dir: Path = CONFIG_DIR) -> None:
    """In place: :func:`resolve_dataset_names` of ``data.test_datasets``.

    Raises:
        ConfigValueError: as :func:`resolve_dataset_names`, and for the replaced ``data.test_dataset``.
    """
    if OmegaConf.select(cfg, "data.test_dataset", default=None) is not None:
        raise ConfigValueError(
            "data.test_dataset was replaced by data.test_datasets, a list of dataset names: use "
            "data.test_datasets=[dukemtmc] (or +data/dataset@data.test_datasets.dukemtmc=dukemtmc)"
        )
    resolve_dataset_names(cfg, TEST_KEY, config_dir)


def resolve_dataset_lists(cfg: DictConfig, config_dir: Path = CONFIG_DIR) -> None:
    """In place: both dataset lists of a run config, ``data.test_datasets`` (:func:`resolve_test_datasets`)
    and ``data.extra_train_datasets``, as every entry point that builds ``cfg.data`` needs them."""
    resolve_test_datasets(cfg, config_dir)
    resolve_dataset_names(cfg, TRAIN_KEY, config_dir)


def resolve_dataset_names(cfg: DictConfig, key: str, config_dir: Path = CONFIG_DIR) -> None:
    """In place: a list of option names at ``key`` (``data.test_datasets`` or ``data.extra_train_datasets``)
    becomes ``{name: loader config}``; a mapping is checked and kept.

    Raises:
        ConfigValueError: for an unknown or repeated name (listing the dataset options), an entry that
            is not a name, a mapping entry without ``_target_``, or, under ``data.extra_train_datasets``,
            a source that is ``data.dataset`` itself (the same loader on the same root).
    """
    if key not in _ONCE:
        raise ValueError(f"resolve_dataset_names: key {key!r}: expected one of {', '.join(_ONCE)}")
    entries = OmegaConf.select(cfg, key, default=None)
    if entries is None:
        return
    if isinstance(entries, DictConfig):
        for key_name, loader in entries.items():
            name = str(key_name)
            if not isinstance(loader, DictConfig) or "_target_" not in loader:
                raise ConfigValueError(
                    f"{key}.{name}: expected a dataset loader config with _target_ (and _partial_: true), "
                    f"got {OmegaConf.to_container(loader) if OmegaConf.is_config(loader) else loader!r}"
                )
    else:
        resolved = _compose_options(entries, key, config_dir)
        with open_dict(cfg):
            OmegaConf.update(cfg, key, resolved, merge=False)
    if key == TRAIN_KEY:
        _refuse_the_training_dataset(cfg, key)


def _compose_options(names: object, key: str, config_dir: Path) -> dict[str, DictConfig]:
    """``{name: loader config}`` of a non-empty list of distinct ``dataset`` option names."""
    if not isinstance(names, ListConfig) or not names:
        raise ConfigValueError(
            f"{key}={names!r}: expected a non-empty list of dataset names, e.g. "
            f"{key}={_EXAMPLE[key]}, a mapping {{name: loader config}}, or null"
        )
    options = dataset_options(config_dir)
    resolved: dict[str, DictConfig] = {}
    for name in names:
        if not isinstance(name, str) or name not in options:
            raise ConfigValueError(
                f"{key}: {name!r} is not a dataset option; expected one of {', '.join(options)} "
                "(the registered datasets, reid/data/datasets/registry.py, and the conf/data/dataset presets)"
            )
        if name in resolved:
            raise ConfigValueError(f"{key}: {name!r} is listed twice; {_ONCE[key]}")
        resolved[name] = compose_dataset_option(name, config_dir)
    return resolved


def _loader_identity(cfg: DictConfig, path: str) -> tuple[object, object]:
    """``(_target_, root)`` of the loader config at ``path``, resolved: what decides which images it reads."""
    target, root = (
        OmegaConf.select(cfg, f"{path}.{field}", default=None, throw_on_resolution_failure=False)
        for field in ("_target_", "root")
    )
    return target, root


def _refuse_the_training_dataset(cfg: DictConfig, key: str) -> None:
    """A source that reads what ``data.dataset`` reads would add its identities twice, as other people."""
    primary = _loader_identity(cfg, "data.dataset")
    if primary[0] is None:
        return
    for name in OmegaConf.select(cfg, key):
        if _loader_identity(cfg, f"{key}.{name}") == primary:
            target, root = primary
            raise ConfigValueError(
                f"{key}: {name!r} is data.dataset itself ({target} on {root}), whose train split is "
                f"trained on already; list the other datasets only, e.g. {key}={_EXAMPLE[key]}"
            )
