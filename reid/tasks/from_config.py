"""A task from its ``model`` config: the one way ``reid.run``, the tools and the tests build one.

Every node of the config is built first (``instantiate`` with ``_convert_="all"``, recursively): a node with
a ``_target_`` becomes its object (a schedule, the cluster memory, a pooling layer), a ``_partial_`` node a
``functools.partial`` the task completes with what only it knows (the backbone gets the data's cameras, the
net the identity count, the optimiser the parameter groups, a loss term the model's sizes), and a node a
typed schema gave a dataclass ``_target_`` (``model.jpm``, ``model.sie``, ``model.param_groups``;
``reid.config_schema``) that dataclass. The task class is then called with those objects and the arguments
only the code has (``data_info``, ``evaluation``), so a task receives built objects, the same ones a user
of the Python API passes by hand (``TransReIDTask(..., optimizer=functools.partial(torch.optim.SGD,
lr=0.008))``). The class is called directly rather than through ``instantiate(..., data_info=...)``, which
would merge those arguments into the config and hand the task a config node in place of a ``DatasetInfo``
or an ``EvalConfig``.

The node is first merged into its task's schema (``reid.config_schema.typed_node``): a config edited after
composition, or a run folder's saved config from an older version, is checked and typed as a composed one
is, and its dataclass nodes get their ``_target_``, as do those inside other nodes
(``reid.config_schema.with_settings_targets``: ``model.backbone.rel_pos_bias``). The resolved, typed config
is recorded as the task's hyper-parameters (plain containers: a checkpoint loads with
``torch.load(weights_only=True)``; loggers show the run's model settings).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import lightning as L
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf

from reid.config_schema import HYDRA_KEYS, typed_node, with_settings_targets
from reid.data.records import DatasetInfo
from reid.evaluation import EvalConfig


def build_task(
    model: DictConfig | Mapping[str, Any],
    data_info: DatasetInfo | None,
    evaluation: EvalConfig | None,
    **overrides: Any,
) -> L.LightningModule:
    """The task ``model._target_`` names, built from the objects of ``model``'s nodes (module docstring);
    ``overrides`` replace config values (``weights=None``) and are passed as they are."""
    node = model if isinstance(model, DictConfig) else OmegaConf.create(dict(model))
    resolved = OmegaConf.to_container(node, resolve=True)
    assert isinstance(resolved, dict)  # a model node is a mapping
    target = resolved.get("_target_")
    if not isinstance(target, str):
        raise ValueError(f"model._target_: expected the task class to build, got {target!r}")
    task_class = get_class(target)
    typed = typed_node({str(key): value for key, value in resolved.items()}, "model")
    plain = with_settings_targets(OmegaConf.to_container(typed, throw_on_missing=True))
    assert isinstance(plain, dict)  # a mapping merged into its schema
    settings = {key: value for key, value in plain.items() if key not in HYDRA_KEYS and key not in overrides}
    built = instantiate(OmegaConf.create(settings), _convert_="all")
    task = task_class(data_info=data_info, evaluation=evaluation, **built, **overrides)
    task.save_hyperparameters(plain | overrides)
    return task
