"""Every command of README.md's "Using a trained model" section runs as written, on a project folder laid
out as `make demo` leaves it: the demo's synthetic dataset in `data/synthetic` and runs in `outputs/<name>/`.

`tests/test_readme_commands.py` checks that each README command's module and flags exist; this runs them.
Before, the section's first command named `data/synthetic/Market-1501-v15.09.15/query`, which the demo
never writes, and no test noticed. The runs are the tiny trained runs of `tests/tools/conftest.py` (the
demo's ViT family, and the SNR family for the cross-domain study's `visualize ranked`), copied where the
README expects them; `<run>` is their folder name. Each command is run in process from the project
folder through its module's `main`, as `python -m` would. Two stand-ins are untrained run folders of
the right shape instead: an SIE run for the demo's six cameras (`--camids-from-names` refuses a camera the
model was not built for) and a PASS pretraining run (`visualize attention --heads` draws its teacher).
"""

from __future__ import annotations

import importlib
import re
import shlex
import shutil
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from reid.config import CONFIG_DIR
from reid.data.records import DatasetInfo
from reid.data.synthetic import load_synthetic
from tests.test_readme_commands import MODULE, readme_commands
from tests.tools.trained_runs import untrained_run_folder

README = CONFIG_DIR.parent / "README.md"
SECTION = "## Using a trained model"
RUN_NAME = "run"
RUN_OF_FOLDER = {"demo": "vit", "snr_demo_a2b": "snr", "bot_demo_a2b": "bot"}
"""Which tiny family stands in for the runs of each `outputs/<name>/` folder the section names."""
DEMO_CAMERAS = 6
"""conf/data/dataset/synthetic.yaml: the demo's cameras."""


def sie_run_for_the_demo(trained_run, run_dir: Path) -> None:
    """The tiny TransReID (SIE + JPM) built for the demo's cameras, untrained."""
    cfg = OmegaConf.load(trained_run("transreid") / ".hydra" / "config.yaml")
    sie = {"sie": OmegaConf.to_container(cfg.model.sie)}
    untrained_run_folder(cfg, DatasetInfo(8, DEMO_CAMERAS, 1), run_dir, hyper_parameters=sie)


def pretraining_run(trained_run, run_dir: Path) -> None:
    """A tiny PASS pretraining run (teacher and student ViTs with part tokens), untrained."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("run", overrides=["experiment=pass_demo", "model=pass_tiny"])
    untrained_run_folder(cfg, None, run_dir)


STAND_INS = {"transreid_market": sie_run_for_the_demo, "pass_demo": pretraining_run}


def section_commands() -> list[str]:
    text = README.read_text()
    start = text.index(SECTION)
    end = text.index("\n## ", start + len(SECTION))
    return readme_commands(text[start:end])


COMMANDS = section_commands()


@pytest.fixture(scope="module")
def project(tmp_path_factory, trained_run) -> Path:
    """A folder as `make demo` leaves it: the demo's synthetic data (conf/data/synthetic.yaml, which
    load_synthetic's defaults are) and a run under every outputs/<name>/ and multirun/<name>/ the section
    names."""
    root = tmp_path_factory.mktemp("project")
    load_synthetic(root / "data" / "synthetic")
    for folder in sorted({m for c in COMMANDS for m in re.findall(r"((?:outputs|multirun)/[\w.]+)", c)}):
        name = Path(folder).name
        if name in STAND_INS:
            STAND_INS[name](trained_run, root / folder / RUN_NAME)
        else:
            shutil.copytree(trained_run(RUN_OF_FOLDER.get(name, "vit")), root / folder / RUN_NAME)
    return root


def test_the_section_shows_the_tools():
    modules = {MODULE.search(c).group(1) for c in COMMANDS}
    assert {"reid.tools.extract", "reid.tools.export_onnx", "reid.tools.search", "reid.tools.visualize",
            "reid.tools.summarize"} <= modules  # fmt: skip


@pytest.mark.parametrize("command", COMMANDS)
def test_a_command_of_the_section_runs_as_written(command, project, monkeypatch):
    monkeypatch.chdir(project)
    module = MODULE.search(command).group(1)
    argv = shlex.split(command[MODULE.search(command).end() :].replace("<run>", RUN_NAME))
    importlib.import_module(module).main(argv)
