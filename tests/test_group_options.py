"""Every option of every config group composes and builds on its own, with no experiment applied.

`conf/run.yaml` has no default experiment, so a group option picked by hand is exactly its own file
(nothing of the demo leaks in), and it builds over the tiny defaults (`tests/conftest.py` TINY_RUN):
a data or model option trains one `fast_dev_run` step (datasets read tiny trees in their release
layouts, `tests/data/trees.py`), an eval option evaluates the tiny model, and the trainer, logger,
callbacks and paths options are built and checked. Pretraining options (multi-crop data, DINO/PASS
tasks) fit only each other: alone they fail at composition with an error that names the experiments
pairing them, and they build with their partner. Only sizes are overridden (images, batches, depth,
head widths, synthetic tree sizes), never structure.
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from lightning.pytorch.strategies import DDPStrategy
from omegaconf import DictConfig, OmegaConf, open_dict

from reid.config import CONFIG_DIR
from reid.config_store import hydra_context
from reid.run import OptionMismatchError, check_options_fit
from reid.tasks.from_config import build_task
from tests.conftest import TINY_MARKET, TINY_RUN, TINY_SSL_DATA
from tests.data import trees

GROUPS = ("data", "data/dataset", "model", "trainer", "logger", "callbacks", "eval", "paths")


def _group_options() -> list[tuple[str, str]]:
    """Every option Hydra offers in each group: the files of conf/ and what the ConfigStore holds (the
    registered datasets); ``_``-prefixed bases are not options."""
    GlobalHydra.instance().clear()
    with hydra_context():
        loader = GlobalHydra.instance().config_loader()
        return [
            (group, option)
            for group in GROUPS
            for option in sorted(loader.get_group_options(group))
            if not option.startswith("_")
        ]


OPTIONS = _group_options()
BASE = [item for item in TINY_RUN if not item.startswith("data=")]  # data: the run.yaml default
SMALL_DATA = ["data.image_size=[64,32]", "data.batch_size=4", "data.num_instances=2", "data.num_workers=0"]
SMALL_SYNTHETIC = [f"data.dataset.{key}={value}" for key, value in TINY_MARKET.items()]
SMALL_SYNTHETIC.append("data.dataset.root=${paths.data_dir}/synthetic_tiny")
SMALL_DUKE_KEYS = ("num_train_ids", "num_test_ids", "images_per_id", "num_distractors")  # 8 cameras, no junk
SMALL_DUKE = [f"data.dataset.{key}={value}" for key, value in TINY_MARKET.items() if key in SMALL_DUKE_KEYS]
SMALL_DUKE.append("data.dataset.root=${paths.data_dir}/synthetic_duke_tiny")  # = dataset/synthetic_duke_tiny
SMALL_SSL = ["data.batch_size=4", "data.num_workers=0", "data.augment.num_local=2"]
SMALL_SSL += ["data.augment.locals_per_region=1", "data.augment.global_size=[64,32]"]
SMALL_SSL += ["data.augment.local_size=[32,16]"]
SMALL_HEAD = ["model.out_dim=256", "model.hidden_dim=64", "model.bottleneck_dim=32", "model.warmup_epochs=0"]


def _params(options: list[tuple[str, str]]) -> list:
    return [pytest.param(group, option, id=f"{group}={option}") for group, option in options]


def _override(group: str, option: str) -> str:
    return f"{group}={option}"


def _options(*groups: str) -> list[tuple[str, str]]:
    return [(group, option) for group, option in OPTIONS if group in groups]


@functools.cache
def _composed_alone(group: str, option: str) -> dict:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return OmegaConf.to_container(
            OmegaConf.select(compose(config_name=f"{group}/{option}"), group.replace("/", "."))
        )


def _alone(group: str, option: str) -> dict:
    """The option's own file, composed as a primary config (its defaults list applied, nothing else)."""
    return copy.deepcopy(_composed_alone(group, option))


def _target(group: str, option: str) -> str:
    """The option's ``_target_``, as it composes on its own."""
    return str(_composed_alone(group, option).get("_target_", ""))


def _is_ssl(group: str, option: str) -> bool:
    """A pretraining option: multi-crop data, a DINO/PASS task, or an unlabelled (LUPerson) dataset."""
    target = _target(group, option)
    return target.endswith(("SSLDataModule", "SSLPretrainTask")) or "luperson" in target


PRETRAINING = [(group, option) for group, option in _options("data", "model") if _is_ssl(group, option)]


def _small_model(option: str) -> list[str]:
    """Size overrides of a model option: a narrow, shallow backbone, a small head, no warmup."""
    backbone = _alone("model", option).get("backbone", {}).get("_target_", "")
    if backbone.startswith("reid.models.vit."):
        small = [
            f"++model.backbone.{key}={value}"
            for key, value in (("depth", 2), ("embed_dim", 32), ("num_heads", 2))
        ]
    elif backbone.startswith("reid.models.resnet."):
        small = ["++model.backbone.widths=[16,32,64,128]"]
    else:
        small = []
    if _is_ssl("model", option):
        return [*small, *SMALL_HEAD]
    warmup = "warmup_epochs" in (_alone("model", option).get("schedule") or {})
    return [*small, *(["model.schedule.warmup_epochs=0"] if warmup else [])]


def _sized(group: str, option: str) -> list[str]:
    """The overrides an option is built with: sizes, and the partner group of a pretraining option."""
    if group == "model" and _is_ssl(group, option):
        return ["data=synthetic_ssl", *TINY_SSL_DATA, *SMALL_SSL, *_small_model(option)]
    if group == "model":  # Cluster Contrast trains on its unlabelled datamodule only
        usl_model = _target(group, option).endswith("ClusterContrastTask")
        return [f"data={'usl_synthetic_tiny' if usl_model else 'synthetic_tiny'}", *_small_model(option)]
    if _is_ssl(group, option):
        partner = ["model=dino_tiny", *_small_model("dino_tiny"), *SMALL_SSL]
        if option == "synthetic_ssl":
            return [*partner, *TINY_SSL_DATA]
        tiny_tree = TINY_SSL_DATA[:4] if option == "synthetic_luperson" else []  # root and tree size
        return ["data=luperson_ssl", *partner, *tiny_tree]
    small = _small_model("vit_tiny")  # the run.yaml default model
    if _target(group, option).endswith("UnlabelledDataModule"):  # clustered by the USL task only
        small = ["model=cluster_contrast_tiny", *_small_model("cluster_contrast_tiny")]
    if group in ("data", "data/dataset"):
        # the synthetic trees at test size, not the demo-size trees (usl_*: the same trees unlabelled)
        trees_at_test_size = {"synthetic": SMALL_SYNTHETIC, "synthetic_duke": SMALL_DUKE}
        synthetic = trees_at_test_size.get(option.removeprefix("usl_"), [])
        return [*small, *SMALL_DATA, *synthetic]
    rerank = ["eval.rerank.k1=20", "eval.rerank.k2=6"] * bool(
        group == "eval" and _alone(group, option)["rerank"]
    )
    return ["data=synthetic_tiny", *small, *rerank]  # k1 below the tiny tree's 46 test images


@pytest.fixture(scope="module")
def data_dir(tiny_data_dir: Path) -> Path:
    """The session's data root (synthetic trees rendered once) plus a tiny tree of every real dataset."""
    root = tiny_data_dir
    trees.write_market1501(root)
    trees.write_dukemtmc(root)
    trees.write_dukemtmc(root, folder_name="Occluded_Duke")
    trees.write_msmt17(root)
    trees.write_veri776(root)
    trees.write_vehicleid(root, train=[7, 7, 3, 3], tests={800: [5, 5, 6, 6]})
    market = trees.MARKET_SPEC
    splits = {"train": market["bounding_box_train"], "query": market["query"]}
    trees.write_named_splits(
        root / "my_reid_data", {**splits, "gallery": market["bounding_box_test"]}, trees.market_name
    )
    trees.write_luperson(root, [f"scene{s}/{i}.jpg" for s in range(2) for i in range(4)])
    cuhk03 = {"bounding_box_train": [(3, 1), (3, 2), (8, 1), (8, 2)], "query": [(700, 1)]}
    trees.write_cuhk03_np(root, {**cuhk03, "bounding_box_test": [(700, 2), (701, 1)]})
    return root


def _compose(data_dir: Path | None, output_dir: Path | None, *overrides: str) -> tuple[DictConfig, dict]:
    """(run config without the hydra node, the group choices) for ``overrides`` over no experiment;
    the paths are set where given."""
    paths = [f"paths.data_dir={data_dir}"] if data_dir else []
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("run", overrides=[*overrides, *paths], return_hydra_config=True)
    choices = OmegaConf.to_container(cfg.hydra.runtime.choices)
    with open_dict(cfg):
        del cfg["hydra"]
        if output_dir:
            cfg.paths.output_dir = str(output_dir)
    return cfg, choices


def _sized_config(group: str, option: str, data_dir: Path, output_dir: Path) -> DictConfig:
    """The option over the tiny defaults at test size, checked as `python -m reid.run` checks it."""
    cfg, choices = _compose(data_dir, output_dir, *BASE, *_sized(group, option), _override(group, option))
    check_options_fit(cfg, choices)
    return cfg


def _instantiate_all(section: DictConfig | None) -> list:
    return [
        instantiate(entry) for entry in (section or {}).values() if entry is not None and "_target_" in entry
    ]


def _task(cfg: DictConfig):
    """Datamodule and task, built as `reid.run.run` builds them."""
    datamodule = instantiate(cfg.data)
    model = build_task(cfg.model, datamodule.info, instantiate(cfg.eval))
    return datamodule, model


def test_a_bare_run_is_the_tiny_vit_on_the_synthetic_people_with_no_experiment():
    cfg, choices = _compose(None, None)
    assert choices["experiment"] is None
    assert (choices["data"], choices["model"], choices["trainer"]) == ("synthetic", "vit_tiny", "cpu")
    assert cfg.task_name == "reid" and cfg.evaluate_before_fit is False
    assert OmegaConf.to_container(cfg.model) == _alone("model", "vit_tiny")
    assert cfg.trainer.max_epochs == 120  # conf/trainer/default.yaml, not the demo's 10


@pytest.mark.parametrize(("group", "option"), _params(OPTIONS))
def test_an_option_picked_by_hand_is_its_own_file(group, option):
    cfg, choices = _compose(None, None, _override(group, option))
    assert choices["experiment"] is None and cfg.task_name == "reid"
    node = OmegaConf.select(cfg, group.replace("/", "."))
    assert OmegaConf.to_container(node) == _alone(group, option)


@pytest.mark.parametrize(("group", "option"), _params(_options("data", "model")))
def test_a_data_or_model_option_trains_one_step(group, option, data_dir, tmp_path):
    cfg = _sized_config(group, option, data_dir, tmp_path)
    if group == "model":
        assert cfg.model._target_ == _alone(group, option)["_target_"]
    with open_dict(cfg):
        cfg.trainer.fast_dev_run = 1
    datamodule, model = _task(cfg)
    loggers = _instantiate_all(cfg.logger)
    trainer = instantiate(cfg.trainer, callbacks=_instantiate_all(cfg.callbacks), logger=loggers)
    trainer.fit(model, datamodule=datamodule)
    assert trainer.global_step == 1
    assert torch.isfinite(trainer.callback_metrics["train/loss"])


@pytest.mark.parametrize(("group", "option"), _params(_options("data/dataset")))
def test_a_dataset_option_parses_its_tree_inside_a_datamodule(group, option, data_dir, tmp_path):
    cfg = _sized_config(group, option, data_dir, tmp_path)
    datamodule = instantiate(cfg.data)
    datamodule.setup()
    train = datamodule.train_records if _is_ssl(group, option) else datamodule.train_data.train
    assert train and all(Path(record.path).is_relative_to(data_dir) for record in train)
    assert all(record.pid == -1 for record in train) == _is_ssl(group, option)


@pytest.mark.parametrize(("group", "option"), _params(_options("eval")))
def test_an_eval_option_evaluates_the_tiny_model(group, option, data_dir, tmp_path):
    cfg = _sized_config(group, option, data_dir, tmp_path)
    datamodule, model = _task(cfg)
    trainer = instantiate(cfg.trainer, logger=False, enable_progress_bar=False)
    (result,) = trainer.test(model, datamodule=datamodule, verbose=False)
    assert 0.0 <= result["test/mAP"] <= 100.0 and 0.0 <= result["test/R1"] <= 100.0


@pytest.mark.parametrize(("group", "option"), _params(_options("trainer")))
def test_a_trainer_option_builds(group, option, data_dir, tmp_path):
    """trainer=gpu/ddp are built on CPU (no CUDA needed, nor as many GPUs as `devices`): strategy,
    precision and world size still hold."""
    cfg = _sized_config(group, option, data_dir, tmp_path)
    wanted = OmegaConf.to_container(cfg.trainer)
    with open_dict(cfg):
        if wanted["accelerator"] == "gpu":
            cfg.trainer.accelerator = "cpu"
    trainer = instantiate(cfg.trainer, callbacks=_instantiate_all(cfg.callbacks), logger=False)
    assert isinstance(trainer.strategy, DDPStrategy) == (wanted["strategy"] == "ddp")
    assert (trainer.precision, trainer.num_nodes) == (wanted["precision"], wanted["num_nodes"])
    assert trainer.num_devices == wanted["devices"] and trainer.max_epochs == 2  # TINY_RUN's


@pytest.mark.parametrize(("group", "option"), _params(_options("logger", "callbacks")))
def test_a_logger_or_callbacks_option_builds_each_entry(group, option, data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    cfg = _sized_config(group, option, data_dir, tmp_path)
    built = _instantiate_all(cfg[group])
    targets = [str(entry._target_) for entry in (cfg[group] or {}).values() if entry is not None]
    assert [type(x).__name__ for x in built] == [target.rsplit(".", 1)[1] for target in targets]
    if group == "logger":
        assert all(Path(x.save_dir) == tmp_path for x in built)
        assert all(x._offline for x in built if hasattr(x, "_offline"))  # wandb: offline without a key


@pytest.mark.parametrize(("group", "option"), _params(_options("paths")))
def test_a_paths_option_reads_the_data_root_from_the_environment(group, option, tmp_path, monkeypatch):
    monkeypatch.delenv("REID_DATA", raising=False)
    monkeypatch.setenv("REID_ROOT", str(tmp_path))
    assert _compose(None, None, _override(group, option))[0].paths.data_dir == f"{tmp_path}/data"
    monkeypatch.setenv("REID_DATA", "/datasets")
    assert _compose(None, None, _override(group, option))[0].paths.data_dir == "/datasets"


@pytest.mark.parametrize(("group", "option"), _params(PRETRAINING))
def test_a_pretraining_option_alone_names_the_experiments_that_pair_it(group, option, tmp_path):
    cfg, choices = _compose(None, tmp_path, *TINY_RUN, _override(group, option))
    with pytest.raises(OptionMismatchError, match=f"{group}={option} does not fit"):
        check_options_fit(cfg, choices)


@pytest.mark.parametrize(
    ("override", "named"),
    [
        (
            "data=synthetic_ssl",
            ["model=vit_tiny", "experiment=dino_demo (model=dino_tiny)", "experiment=pass_demo"],
        ),
        ("model=dino", ["data=synthetic_tiny", "${data.augment.global_size}", "experiment=dino_lup"]),
    ],
)
def test_the_mismatch_error_names_the_key_and_the_experiments(override, named, tmp_path):
    cfg, choices = _compose(None, tmp_path, *TINY_RUN, override)
    with pytest.raises(OptionMismatchError) as error:
        check_options_fit(cfg, choices)
    assert all(text in str(error.value) for text in named), str(error.value)
