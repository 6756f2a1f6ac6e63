"""``python -m reid.tools.summarize <runs...> --report out.md``: one markdown row per run and target, the
published result of the run's experiment config beside the target it was published for.

The run folders are fabricated as ``reid.run`` leaves them: ``.hydra/config.yaml`` (for the TransReID
run, the composed ``experiment=transreid_market`` config itself, so its ``published`` values come from
conf/experiment/transreid_market.yaml untouched), ``.hydra/hydra.yaml`` where Hydra ran, ``results.json``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from reid.config import CONFIG_DIR, register_resolvers
from reid.tools.summarize import collect_report, main, report_markdown

MARKET = {"_target_": "reid.data.datasets.market1501.load_market1501", "root": "${paths.data_dir}/M"}
SYNTHETIC = {"_target_": "reid.data.synthetic.load_synthetic", "root": "${paths.data_dir}/s"}


def experiment(name: str) -> dict:
    register_resolvers()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return OmegaConf.to_container(compose(config_name="run", overrides=[f"experiment={name}"]))


def published_in_file(name: str) -> dict:
    return yaml.safe_load((Path(CONFIG_DIR) / "experiment" / f"{name}.yaml").read_text())["published"]


def fake_run(
    folder: Path,
    config: dict,
    test: dict | None,
    choices: dict | None = None,
    overrides: list[str] | None = None,
) -> Path:
    """A run folder; ``overrides`` -> ``.hydra/overrides.yaml`` (None: the file is missing)."""
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    if overrides is not None:
        (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    if choices is not None:
        (folder / ".hydra" / "hydra.yaml").write_text(
            yaml.safe_dump({"hydra": {"runtime": {"choices": choices}}})
        )
    if test is not None:
        tested = {"selection": "last", "checkpoint": str(folder / "checkpoints" / "last.ckpt"), "epochs": 120}
        (folder / "results.json").write_text(json.dumps({"test": test, "tested_weights": tested}))
    return folder


@pytest.fixture
def runs(tmp_path: Path) -> list[Path]:
    transreid = fake_run(
        tmp_path / "outputs" / "transreid_market" / "2026-01-01",
        experiment("transreid_market"),
        {"mAP": 88.04, "R1": 94.86, "R5": 98.0, "mINP": 60.12},
        {"experiment": "transreid_market", "data/dataset": "market1501", "model": "transreid"},
        ["experiment=transreid_market", "paths.data_dir=/data", "trainer.precision=16-mixed", "seed=3"],
    )
    cross = {  # no hydra.yaml: the training dataset is found by its loader
        "task_name": "bot_r50_market2duke",
        "data": {"dataset": MARKET, "test_datasets": ["dukemtmc", "market1501"]},
        "published": {"dataset": "market1501", "mAP": 85.9, "R1": 94.5, "source": "BoT"},
    }
    two = fake_run(
        tmp_path / "outputs" / "cross",
        cross,
        {"dukemtmc": {"mAP": 30.0, "R1": 50.5}, "market1501": {"mAP": 84.0}},
        overrides=["experiment=bot_r50_market2duke", "data.dataset.root=/data/M"],
    )
    sweep = tmp_path / "multirun" / "reid" / "2026-01-02"
    demo = {"task_name": "demo", "data": {"dataset": SYNTHETIC, "test_datasets": None}, "published": None}
    for job in (10, 2):  # job order is numeric
        fake_run(
            sweep / str(job), {**demo, "seed": job}, {"mAP": 40.0 + job, "R1": 50.0, "mINP": 10.0}, None, []
        )
    fake_run(sweep / "3", demo, None, None, [])  # still running: no results.json
    changed = fake_run(
        tmp_path / "outputs" / "changed",
        experiment("transreid_market"),
        {"mAP": 87.0, "R1": 94.0},
        {
            "experiment": "transreid_market",
            "dataset@data.dataset": "market1501",
            "model": "transreid",
        },  # older
        ["experiment=transreid_market", "model.optimizer.lr=0.01", "selection=best"],
    )
    return [transreid, two, sweep, changed]


def test_report_rows_put_the_published_numbers_beside_their_target(runs) -> None:
    transreid, cross, sweep, _ = runs
    rows = collect_report([transreid, cross, sweep])
    table = [(r.experiment, r.train, r.target, r.metrics.get("mAP"), r.published is not None) for r in rows]
    assert table == [
        ("transreid_market", "market1501", "market1501", 88.04, True),
        ("bot_r50_market2duke", "market1501", "dukemtmc", 30.0, False),  # published for Market only
        ("bot_r50_market2duke", "market1501", "market1501", 84.0, True),
        ("demo", "synthetic", "synthetic", 42.0, False),
        ("demo", "synthetic", "(no results.json test)", None, False),
        ("demo", "synthetic", "synthetic", 50.0, False),
    ]
    assert [r.run for r in rows[3:]] == [str(sweep / job) for job in ("2", "3", "10")]
    stated = published_in_file("transreid_market")
    assert rows[0].published.metrics == {"mAP": stated["mAP"], "R1": stated["R1"]}
    assert rows[0].published.source == stated["source"]


def test_report_markdown_and_cli(runs, tmp_path: Path, capsys) -> None:
    out = tmp_path / "report" / "results.md"
    main([*map(str, runs), "--report", str(out)])
    text = out.read_text()
    assert capsys.readouterr().out == text
    lines = text.splitlines()
    assert lines[0] == (
        "| run | experiment | train | target | mAP | R1 | mINP | tested | recipe | published mAP "
        "| published R1 | source |"
    )
    assert lines[1] == "|---|---|---|---|---:|---:|---:|---|---|---:|---:|---|"
    source = published_in_file("transreid_market")["source"]
    assert lines[2] == (
        f"| `{runs[0]}` | transreid_market | market1501 | market1501 | 88.0 | 94.9 | 60.1 | last (epoch 120) "
        f"| as the experiment | 89.0 | 95.1 | {source} |"
    )
    assert lines[3] == (
        f"| `{runs[1]}` | bot_r50_market2duke | market1501 | dukemtmc | 30.0 | 50.5 | – | last (epoch 120) "
        "| as the experiment | – | – |  |"
    )
    assert lines[4].endswith(
        "| market1501 | 84.0 | – | – | last (epoch 120) | as the experiment | 85.9 | 94.5 | BoT |"
    )
    assert lines[-3] == (  # the recipe changed: no published number beside it
        f"| `{runs[3]}` | transreid_market | market1501 | market1501 | 87.0 | 94.0 | – | last (epoch 120) "
        "| changed: `model.optimizer.lr=0.01`, `selection=best` | – | – |  |"
    )
    assert text == report_markdown(collect_report(runs))


def test_only_overrides_that_change_the_recipe_count() -> None:
    from reid.tools.summarize import recipe_changes

    same = ["experiment=x", "paths.data_dir=/d", "data.dataset.root=/r", "data.num_workers=4", "seed=2"]
    same += ["logger=wandb", "+callbacks.recorder.path=/p", "trainer.precision=16-mixed", "model.weights=/w"]
    assert recipe_changes(same) == ()
    changed = ["model=transreid_tiny", "model.optimizer.lr=0.01", "trainer.max_epochs=60", "selection=best"]
    changed += ["data.batch_size=128", "data/transforms=bot"]
    same += ["trainer=ddp", "trainer.devices=4", "trainer.num_nodes=2"]  # N processes train as one
    assert recipe_changes(same + changed) == tuple(changed)


def test_a_run_without_its_overrides_file_shows_no_published_number(tmp_path: Path) -> None:
    run = fake_run(
        tmp_path / "run", experiment("transreid_market"), {"mAP": 88.0}, {"experiment": "transreid_market"}
    )
    (row,) = collect_report([run])
    assert row.published is None and row.changes == ("(no .hydra/overrides.yaml: recipe unknown)",)


def test_a_malformed_published_key_names_the_run_config(tmp_path: Path) -> None:
    bad = {"task_name": "x", "data": {"dataset": MARKET}, "published": {"dataset": "market1501", "map": 89.0}}
    run = fake_run(tmp_path / "run", bad, {"mAP": 1.0})
    with pytest.raises(ValueError, match=r"run/\.hydra/config\.yaml: published .*unknown keys \['map'\]"):
        collect_report([run])
    with pytest.raises(FileNotFoundError, match="no runs"):
        collect_report([tmp_path / "run" / ".hydra"])
