"""Entry point: ``python -m reid.run [experiment=NAME] [overrides...]``.

Composes ``conf/run.yaml``, builds the datamodule, the task (LightningModule), callbacks, loggers
and trainer from their ``_target_``s, then fits and/or tests. Results are printed as a table and
written to ``<output_dir>/results.json``. Returns ``optimized_metric`` for Hydra sweepers.
With several evaluation targets (``data.test_datasets=[dukemtmc,msmt17]``, ``reid.dataset_options``)
``results.json`` holds ``"test": {"dukemtmc": {...}, "msmt17": {...}}`` (one entry per target, in
order) and the table one row per target; with one target (or none: the training dataset) ``"test"``
is the flat ``{"mAP": ...}`` as before. Logged ``val/mAP`` / ``test/mAP`` are the first target's.
A run folder that already holds a run's results is not written over unless the run resumes it
(``ckpt_path``) or is told to (``overwrite=true``); a resumed run appends to its ``csv/metrics.csv``.
A ``ckpt_path`` must be a checkpoint of a run of the same model (else: use ``model.weights``).
There is no default experiment: every group option composes on its own over the defaults of
``conf/run.yaml``, and options of two groups that do not fit together (pretraining data under a
supervised model) fail before anything is built, naming the experiments that pair them.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import InterpolationKeyError

from reid.config import CONFIG_DIR, register_resolvers
from reid.config_checks import (
    ConfigValueError,
    RecordRunSettings,
    check_config,
    run_settings,
    warn_on_changed_settings,
)
from reid.config_store import check_group_keys, store_configs
from reid.dataset_options import resolve_dataset_lists
from reid.models.weights_checks import check_finite, state_differences
from reid.results import by_target
from reid.tasks.from_config import build_task
from reid.training.checkpoint_io import AtomicCheckpointIO
from reid.training.csv_logger import ResumableCSVLogger
from reid.training.preemption import Preempted
from reid.training.run_lock import RunFolderLock, is_first_process

log = logging.getLogger("reid")
register_resolvers()


def _not_a_tip(record: logging.LogRecord) -> bool:
    return "litlogger" not in str(record.msg)


def quiet_lightning() -> None:
    """Silence what is not the user's business: Lightning's LitLogger advert at every Trainer start and
    torch's ``LeafSpec`` deprecation, raised by Lightning's own pytree helper (idempotent)."""
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_not_a_tip)


quiet_lightning()


def _instantiate_dict(section: DictConfig | None) -> list[Any]:
    """Instantiate every entry of a ``name: {_target_: ...}`` mapping, skipping nulls."""
    if not section:
        return []
    return [instantiate(entry) for entry in section.values() if entry is not None and "_target_" in entry]


def resolve_ckpt_path(ckpt_path: str | None, output_dir: str | Path) -> str | None:
    """``"last"`` means ``<output_dir>/checkpoints/last.ckpt``; a named file must exist.

    ``None`` in a SLURM job that was requeued (``SLURM_RESTART_COUNT`` > 0) resumes from that
    ``last.ckpt`` when it exists: the requeued job runs the same command as the preempted one.
    """
    last = Path(output_dir) / "checkpoints" / "last.ckpt"
    if ckpt_path is None:
        if int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0) > 0 and last.is_file():
            log.warning("requeued SLURM job: resuming from %s", last)
            return str(last)
        return None
    path = last if ckpt_path == "last" else Path(ckpt_path)
    if not path.is_file():
        hint = " (resume a run by re-using its folder: hydra.run.dir=<run folder> ckpt_path=last)"
        raise FileNotFoundError(f"ckpt_path={ckpt_path!r}: no checkpoint at {path}{hint}")
    return str(path)


_RESULTS = ("results.json", "checkpoints", "csv/metrics.csv")
"""What a run leaves in its folder; a new run into a folder holding any of them would overwrite it."""


def check_output_dir(output_dir: str | Path, ckpt_path: str | None, overwrite: bool) -> None:
    """Refuse to start a new run in a folder that holds another run's results (``overwrite``: remove them).

    A run that resumes or evaluates a checkpoint (``ckpt_path`` set) writes into its folder on purpose.
    """
    out = Path(output_dir)
    found = [name for name in _RESULTS if (out / name).is_file() or any((out / name).glob("*.ckpt"))]
    if not found or ckpt_path is not None:
        return
    if not overwrite:
        raise FileExistsError(
            f"run folder {out} already holds the results of a run ({', '.join(found)}); resume that run with "
            f"`hydra.run.dir={out} ckpt_path=last`, or replace its results with `overwrite=true` (a run "
            "without hydra.run.dir gets a new folder)"
        )
    log.warning("overwrite=true: removing the results of the previous run in %s (%s)", out, ", ".join(found))
    for name in ("results.json", "csv/metrics.csv"):
        (out / name).unlink(missing_ok=True)
    for ckpt in (out / "checkpoints").glob("*.ckpt"):
        ckpt.unlink()


def _checkpoint_step(checkpoint: Mapping[str, Any]) -> int:
    """The step the loggers had reached when ``checkpoint`` was saved (Lightning logs at batches stepped)."""
    epoch_loop = checkpoint.get("loops", {}).get("fit_loop", {}).get("epoch_loop.state_dict", {})
    return int(epoch_loop.get("_batches_that_stepped", checkpoint.get("global_step", 0)))


def check_run_checkpoint(path: str, model: L.LightningModule, resume: bool) -> Mapping[str, Any]:
    """Read ``ckpt_path``: a Lightning checkpoint of a run; when resuming, of a run of this very model.

    A plain state dict, exported weights or another experiment's checkpoint is refused with a pointer
    to ``model.weights``, which initialises a new run from weights; one holding NaN/Inf weights is
    refused naming them. Returns the checkpoint.
    """
    checkpoint = AtomicCheckpointIO().load_checkpoint(path)
    use_weights = f"to start a new run from its weights, set model.weights={path} (and ckpt_path=null)"
    if not isinstance(checkpoint, Mapping) or not {"state_dict", "pytorch-lightning_version"} <= set(
        checkpoint
    ):
        raise ValueError(
            f"ckpt_path={path} is not a checkpoint of a run (a plain state dict or exported weights, no "
            f"trainer state); ckpt_path resumes or evaluates a run of this project; {use_weights}"
        )
    check_finite(checkpoint["state_dict"], f"ckpt_path={path}")
    differences = state_differences(checkpoint["state_dict"], model.state_dict()) if resume else []
    if differences:
        raise ValueError(
            f"ckpt_path={path} is a checkpoint of another experiment: its tensors do not fit this model "
            f"({'; '.join(differences)}); resuming needs the run's own config (its .hydra/overrides.yaml); "
            + use_weights
        )
    return checkpoint


class OptionMismatchError(ValueError):
    """Two group options that do not fit together (an SSL data option under a supervised model)."""


def experiment_choices(config_dir: Path = CONFIG_DIR) -> dict[str, dict[str, str]]:
    """``{experiment: {group: option}}`` from each ``conf/experiment/*.yaml`` defaults list, with the
    ``override /group: option`` entries of the experiments it extends applied first."""
    files = {path.stem: path for path in sorted((config_dir / "experiment").glob("*.yaml"))}

    def choices(name: str, seen: tuple[str, ...] = ()) -> dict[str, str]:
        found: dict[str, str] = {}
        experiment = OmegaConf.load(files[name])
        for entry in (experiment.get("defaults") if isinstance(experiment, DictConfig) else None) or []:
            if isinstance(entry, str) and entry in files and entry not in seen:
                found |= choices(entry, (*seen, name))
            elif isinstance(entry, Mapping):
                found |= {k.split("/", 1)[1]: str(v) for k, v in entry.items() if k.startswith("override /")}
        return found

    return {name: choices(name) for name in files}


RENAMED_GROUPS = {"dataset": "data/dataset"}
"""Config groups that moved (old name -> new): the loaders became a sub-group of ``data`` (issue 32)."""


def check_renamed_groups(overrides: Sequence[str]) -> None:
    """A command-line override of a group that moved raises :class:`ConfigValueError` with the override
    to write instead (Hydra's own message would only say the old group does not exist)."""
    for override in overrides:
        group = override.lstrip("+~").split("=", 1)[0].split("@", 1)[0]
        if group in RENAMED_GROUPS:
            new = RENAMED_GROUPS[group]
            # the new group's default package (data/dataset -> data.dataset) needs no @ in the override
            default_package = f"{group}@{new.replace('/', '.')}="
            fixed = (
                override.replace(default_package, f"{new}=", 1)
                if default_package in override
                else override.replace(group, new, 1)
            )
            raise ConfigValueError(
                f"{override}: the '{group}' group is now '{new}' (conf/{new}/); write {fixed}"
            )


def check_options_fit(cfg: DictConfig, choices: Mapping[str, Any]) -> None:
    """Resolve every interpolation of ``cfg`` now. A key one group option reads from another group
    (``${model.num_parts}`` in an SSL data option) that the chosen option of that group lacks raises
    :class:`OptionMismatchError` naming both options and the experiments that use the reading one."""
    try:
        for key in [key for key in cfg if key != "hydra"]:
            value = cfg[key]  # a scalar resolves on access, a node with to_container
            if OmegaConf.is_config(value):
                OmegaConf.to_container(value, resolve=True)
    except InterpolationKeyError as error:
        missing = re.search(r"Interpolation key '([^']+)' not found", str(error))
        if missing is None or str(error.full_key).split(".")[0] == missing.group(1).split(".")[0]:
            raise  # not a key read across groups
        message = _mismatch_message(str(error.full_key), missing.group(1), choices)
        raise OptionMismatchError(message) from error


def _mismatch_message(full_key: str, missing: str, choices: Mapping[str, Any]) -> str:
    reader, lacking = full_key.split(".")[0], missing.split(".")[0]
    option, other = f"{reader}={choices.get(reader)}", f"{lacking}={choices.get(lacking)}"
    users = [
        f"experiment={name} ({lacking}={picked.get(lacking, choices.get(lacking))})"
        for name, picked in experiment_choices().items()
        if picked.get(reader) == choices.get(reader)
    ]
    used = f"; experiments with {option}: {', '.join(users)}" if users else ""
    return (
        f"{option} does not fit {other}: {full_key} reads ${{{missing}}}, which {other} does not define. "
        f"Pick a {lacking} option that defines it, or an experiment that pairs them{used}"
    )


def _metrics(
    results: Sequence[Mapping[str, float]], prefix: str, targets: Sequence[str] = ()
) -> dict[str, Any]:
    """The ``prefix*`` metrics of an evaluation with the prefix stripped: ``{metric: value}``, or with
    several ``targets`` ``{target: {metric: value}}`` from the ``prefix<target>/*`` names (every
    dataloader's result holds the metrics logged at the epoch's end, so the first one is read)."""
    found = {key: float(value) for key, value in (results[0] if results else {}).items()}
    if len(targets) > 1:
        return {target: _metrics(results, f"{prefix}{target}/") for target in targets}
    return {key.removeprefix(prefix): v for key, v in found.items() if key.startswith(prefix)}


def _target_names(datamodule: Any) -> list[str]:
    """The datamodule's evaluation targets, in dataloader order (none for a datamodule without them)."""
    return [target.name for target in getattr(datamodule, "evaluation_targets", None) or ()]


def _rows(label: str, values: Mapping[str, Any]) -> list[tuple[str, Mapping[str, float]]]:
    """``(row label, metrics)``: one row, or one per target of a ``{target: metrics}`` result."""
    targets = by_target(values).items()
    return [(f"{label} {target}".strip(), metrics) for target, metrics in targets if metrics]


def _print_comparison(untrained: Mapping[str, Any], final: Mapping[str, Any], label: str) -> None:
    """The results table: one row per evaluation and target, with the valid / all query counts it
    rests on."""
    rows = [*_rows("untrained", untrained), *_rows(label, final)]
    if not rows:
        return
    keys = [k for k in ("mAP", "R1", "R5", "R10", "mINP") if k in rows[-1][1]]
    width = max(12, *(len(name) + 2 for name, _ in rows))
    lines = ["", f"{'':<{width}}" + "".join(f"{k:>8}" for k in keys) + f"{'valid / all queries':>22}"]
    for name, values in rows:
        valid, total = values.get("num_valid_queries", math.nan), values.get("num_queries", math.nan)
        counts = f"{valid:.0f} / {total:.0f}"
        row = "".join(f"{values.get(k, math.nan):>8.2f}" for k in keys)
        lines.append(f"{name:<{width}}{row}{counts:>22}")
    print("\n".join(lines))


def _summary_input(model: L.LightningModule, cfg: DictConfig) -> None:
    """An example image batch for the model summary of a supervised task, so that its FLOPs column counts
    a forward pass (Lightning prints FLOPs 0 for every layer without one)."""
    from reid.tasks import TransReIDTask

    size = OmegaConf.select(cfg, "data.image_size")
    if isinstance(model, TransReIDTask) and cfg.trainer.get("enable_model_summary") and size is not None:
        model.example_input_array = torch.zeros(1, 3, *size)


def _load_for_test(model: L.LightningModule, ckpt: str) -> str | None:
    """Test-only evaluation of a run's checkpoint: a task with ``load_for_evaluation`` loads it here,
    leaving out an ID classifier trained for other identities (``data=<another dataset>``), and
    Lightning gets ``None``; other tasks get ``ckpt`` back for ``trainer.test`` to load."""
    checkpoint = check_run_checkpoint(ckpt, model, resume=False)
    load_for_evaluation = getattr(model, "load_for_evaluation", None)  # the self-supervised task's
    if not callable(load_for_evaluation):
        return ckpt
    load_for_evaluation(checkpoint, ckpt)
    return None


def _final_label(cfg: DictConfig, trainer: L.Trainer, ckpt: str | None) -> str:
    """What the final row rests on: ``trained`` only when this run took optimiser steps; else the
    checkpoint it evaluated, the ``model.weights`` it started from, or a random initialisation."""
    if cfg.train and trainer.global_step > 0:
        return "trained"
    if ckpt is not None and not cfg.train:  # a run without steps tests its own (untrained) last.ckpt
        return "checkpoint"
    if cfg.model.get("weights"):
        return "weights"
    why = "no training step ran (trainer.limit_train_batches=0?)" if cfg.train else "train=false"
    log.warning("%s and no model.weights or ckpt_path: the test row is of a randomly initialised model", why)
    return "random init"


def run(cfg: DictConfig) -> dict[str, Any]:
    """Fit and/or test as ``cfg`` says; returns the summary written to ``results.json``. The run folder is
    locked for the run's duration (``reid.training.run_lock``): a second run into it fails at start."""
    check_config(cfg)
    check_group_keys(cfg)
    resolve_dataset_lists(cfg)
    lock = RunFolderLock(cfg.paths.output_dir)
    if is_first_process():
        lock.acquire()
    try:
        return _run_locked(cfg)
    finally:
        lock.release()


def _run_locked(cfg: DictConfig) -> dict[str, Any]:
    output_dir = Path(cfg.paths.output_dir)
    L.seed_everything(cfg.seed, workers=True)
    datamodule = instantiate(cfg.data)
    evaluation = instantiate(cfg.eval)
    data_info = datamodule.info
    targets = _target_names(datamodule)
    log.info("data: %s", data_info)
    model = build_task(cfg.model, data_info, evaluation)
    _summary_input(model, cfg)
    trainer: L.Trainer = instantiate(
        cfg.trainer,
        callbacks=[*_instantiate_dict(cfg.get("callbacks")), RecordRunSettings(run_settings(cfg))],
        logger=_instantiate_dict(cfg.get("logger")) or False,
    )
    if trainer.is_global_zero:
        check_output_dir(output_dir, cfg.ckpt_path, bool(cfg.get("overwrite", False)))
    summary: dict[str, Any] = {"output_dir": str(output_dir)}
    if cfg.get("evaluate_before_fit"):  # on the test split, as the final row: the two compare like for like
        summary["untrained"] = _metrics(trainer.test(model, datamodule=datamodule), "test/", targets)
    if cfg.train:
        resume = resolve_ckpt_path(cfg.ckpt_path, output_dir)
        if resume is not None:
            checkpoint = check_run_checkpoint(resume, model, resume=True)
            warn_on_changed_settings(checkpoint, cfg, resume)
            _resume_loggers(trainer, checkpoint)
        _fit(trainer, model, datamodule, resume, output_dir)
        summary["tested_weights"] = tested_weights(trainer, cfg.get("test_weights", "last"))
        summary["last_logged"] = last_logged(trainer)
    ckpt = None
    if cfg.test:
        if cfg.train:
            ckpt = summary["tested_weights"]["checkpoint"]
        else:
            ckpt = resolve_ckpt_path(cfg.ckpt_path, output_dir)
            summary["tested_weights"] = {"selection": "ckpt_path", "checkpoint": ckpt}
        test_ckpt = _load_for_test(model, ckpt) if ckpt is not None and not cfg.train else ckpt
        results = _test(trainer, model, datamodule, test_ckpt, output_dir)
        summary["test"] = _metrics(results, "test/", targets)
        summary["test_label"] = _final_label(cfg, trainer, ckpt)
        summary["last_logged"] = summary.get("last_logged", {}) | last_logged(trainer)
    if trainer.is_global_zero:
        _print_comparison(
            summary.get("untrained", {}), summary.get("test", {}), summary.get("test_label", "")
        )
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "results.json").write_text(json.dumps(summary, indent=2))
        log.info("results written to %s", output_dir / "results.json")
    metric = trainer.callback_metrics.get(cfg.get("optimized_metric") or "", None)
    summary["optimized_metric"] = float(metric) if metric is not None else None
    _finish_loggers(trainer)
    return summary


def _fit(
    trainer: L.Trainer, model: L.LightningModule, datamodule: Any, ckpt_path: str | None, output_dir: Path
) -> None:
    """``trainer.fit``; SIGTERM (Lightning stops at the step boundary, or in a validation) raises
    :class:`Preempted`, naming the checkpoint that holds the last completed step and the step it holds."""
    try:
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
    except SIGTERMException as stop:
        _preempted(trainer, output_dir, "training", stop)


def _test(
    trainer: L.Trainer, model: L.LightningModule, datamodule: Any, ckpt_path: str | None, output_dir: Path
) -> list[Mapping[str, float]]:
    """``trainer.test``; SIGTERM there stops the run too (exit status 143, no results.json)."""
    try:
        return trainer.test(model, datamodule=datamodule, ckpt_path=ckpt_path)
    except SIGTERMException as stop:
        _preempted(trainer, output_dir, "the final test", stop)


def _preempted(trainer: L.Trainer, output_dir: Path, during: str, stop: BaseException) -> NoReturn:
    callback = trainer.checkpoint_callback
    saved = getattr(callback, "last_saved_step", None)
    last = getattr(callback, "last_model_path", "")
    state = (
        f"{last} holds step {saved}"
        if last and saved is not None
        else "no checkpoint holds it (none is configured)"
    )
    message = (
        f"preempted (SIGTERM) during {during} at step {trainer.global_step}: {state}; resume with "
        f"`python -m reid.run <same overrides> hydra.run.dir={output_dir} ckpt_path=last`"
    )
    log.error(message)
    _finish_loggers(trainer)
    raise Preempted(message) from stop


def _resume_loggers(trainer: L.Trainer, checkpoint: Mapping[str, Any]) -> None:
    """CSV logs keep their rows up to the checkpoint's step; the resumed run logs the rest again."""
    for logger in trainer.loggers:
        if isinstance(logger, ResumableCSVLogger) and trainer.is_global_zero:
            logger.resume_at(_checkpoint_step(checkpoint))


def _finish_loggers(trainer: L.Trainer) -> None:
    """Close wandb runs so each job of a multirun gets its own run record."""
    for logger in trainer.loggers:
        experiment = getattr(logger, "_experiment", None)
        if experiment is not None and hasattr(experiment, "finish"):
            experiment.finish()


def last_logged(trainer: L.Trainer) -> dict[str, float]:
    """The last value of every scalar the run logged (train/*, val/*, test/*): diagnostics such as
    ``train/rpe_triplet/diverged_step`` or ``val/rpe/auc`` that ``reid.tools.summarize`` reads."""
    return {
        name: float(value)
        for name, value in sorted(trainer.callback_metrics.items())
        if isinstance(value, torch.Tensor) and value.numel() == 1
    }


def tested_weights(trainer: L.Trainer, selection: str) -> dict[str, Any]:
    """Which weights the final test scores, for ``results.json``: ``selection`` (``test_weights``) with the
    checkpoint file, the epochs and steps trained, and for ``best`` the chosen ``val/mAP``.

    ``last`` is the last epoch's state (``last.ckpt``; the weights in memory when no checkpoint is
    configured), as the official code reports. ``best`` is the best checkpoint of ``val/mAP`` on the
    held-out identities (``selection=best``; :func:`reid.config_checks.check_config` refuses it without
    them); with no validation run, the last state is tested and ``selection`` says so.
    """
    callback = trainer.checkpoint_callback
    record: dict[str, Any] = {"selection": selection, "epochs": int(trainer.current_epoch)}
    record["global_step"] = int(trainer.global_step)
    best = getattr(callback, "best_model_path", "") if selection == "best" else ""
    if best:
        score = getattr(callback, "best_model_score", None)
        return record | {"checkpoint": best, "val/mAP": float(score) if score is not None else None}
    if selection == "best":
        log.warning("selection=best: no validation chose a checkpoint; the test scores the last state")
        record["selection"] = "last (no best checkpoint)"
    return record | {"checkpoint": getattr(callback, "last_model_path", "") or None}


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="run")
def main(cfg: DictConfig) -> float | None:
    """The command line: bad input ends a single run with one line naming it (``--debug``: the
    traceback); in a sweep (``-m``) Hydra reports each failed job."""
    from hydra.types import RunMode

    from reid.tools.cli import bad_input_exits

    log.debug("config:\n%s", OmegaConf.to_yaml(cfg))
    if HydraConfig.get().mode == RunMode.MULTIRUN:
        check_options_fit(cfg, HydraConfig.get().runtime.choices)
        return run(cfg)["optimized_metric"]
    with bad_input_exits("python -m reid.run"):
        check_options_fit(cfg, HydraConfig.get().runtime.choices)
        return run(cfg)["optimized_metric"]


if __name__ == "__main__":
    import sys

    from reid.tools.cli import bad_input_exits, take_debug_flag

    sys.argv[1:] = take_debug_flag(sys.argv[1:])
    with bad_input_exits("python -m reid.run"):  # a dataset module that cannot be imported: one line
        check_renamed_groups(sys.argv[1:])
        store_configs()  # the group schemas and the registered datasets, before Hydra composes
    main()
