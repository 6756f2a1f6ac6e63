"""``data.test_datasets``: the evaluation targets of a run, named by ``conf/dataset`` options.

``python -m reid.run experiment=... data.test_datasets=[dukemtmc,msmt17]`` evaluates the model on the
query and gallery of every target in one run, in the order given. Before the datamodule is built,
:func:`resolve_test_datasets` replaces each option name by that option's loader config, composed by
Hydra (so a ``defaults`` list in the option applies) and placed at ``data.test_datasets.<name>``,
where its interpolations (``${paths.data_dir}``) resolve against the run's config. A mapping
``{name: {_target_: ..., ...}}`` names custom loaders directly and is left as it is; so is what
``+dataset@data.test_datasets.<name>=<option>`` composes. ``null`` (the default) evaluates on the
training dataset.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

from reid.config import CONFIG_DIR
from reid.config_checks import ConfigValueError

KEY = "data.test_datasets"
GROUP = "dataset"


@contextmanager
def _hydra(config_dir: Path) -> Iterator[None]:
    """The running Hydra app's config search path, or ``config_dir`` outside one (tests, tools)."""
    if GlobalHydra.instance().is_initialized():
        yield
        return
    with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
        yield


def dataset_options(config_dir: Path = CONFIG_DIR) -> list[str]:
    """The ``conf/dataset`` option names, sorted."""
    with _hydra(config_dir):
        return sorted(GlobalHydra.instance().config_loader().get_group_options(GROUP))


def compose_dataset_option(name: str, config_dir: Path = CONFIG_DIR) -> DictConfig:
    """The loader config of ``conf/dataset/<name>.yaml`` (interpolations left unresolved)."""
    with _hydra(config_dir):
        return compose(config_name=f"{GROUP}/{name}")[GROUP]


def resolve_test_datasets(cfg: DictConfig, config_dir: Path = CONFIG_DIR) -> None:
    """In place: a list of option names at ``data.test_datasets`` becomes ``{name: loader config}``.

    Raises:
        ConfigValueError: for an unknown or repeated name (listing the dataset options), an entry that
            is not a name, a mapping entry without ``_target_``, or the replaced ``data.test_dataset``.
    """
    if OmegaConf.select(cfg, "data.test_dataset", default=None) is not None:
        raise ConfigValueError(
            "data.test_dataset was replaced by data.test_datasets, a list of conf/dataset options: use "
            "data.test_datasets=[dukemtmc] (or +dataset@data.test_datasets.dukemtmc=dukemtmc)"
        )
    targets = OmegaConf.select(cfg, KEY, default=None)
    if targets is None:
        return
    if isinstance(targets, DictConfig):
        for name, loader in targets.items():
            if not isinstance(loader, DictConfig) or "_target_" not in loader:
                raise ConfigValueError(
                    f"{KEY}.{name}: expected a dataset loader config with _target_ (and _partial_: true), "
                    f"got {OmegaConf.to_container(loader) if OmegaConf.is_config(loader) else loader!r}"
                )
        return
    if not isinstance(targets, ListConfig) or not targets:
        raise ConfigValueError(
            f"{KEY}={targets!r}: expected a non-empty list of conf/dataset options, e.g. "
            f"{KEY}=[dukemtmc,msmt17], a mapping {{name: loader config}}, or null"
        )
    options = dataset_options(config_dir)
    resolved: dict[str, DictConfig] = {}
    for name in targets:
        if not isinstance(name, str) or name not in options:
            raise ConfigValueError(
                f"{KEY}: {name!r} is not a dataset option; expected one of {', '.join(options)} "
                f"(conf/{GROUP}/<name>.yaml)"
            )
        if name in resolved:
            raise ConfigValueError(f"{KEY}: {name!r} is listed twice; each target is evaluated once")
        resolved[name] = compose_dataset_option(name, config_dir)
    with open_dict(cfg):
        cfg.data.test_datasets = resolved
