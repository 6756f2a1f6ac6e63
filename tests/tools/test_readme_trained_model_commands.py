"""Every command of README.md's "Using a trained model" section runs as written, on a project folder laid
out as `make demo` leaves it: the demo's synthetic dataset in `data/synthetic` and runs in `outputs/<name>/`.

`tests/test_readme_commands.py` checks that each README command's module and flags exist; this runs them.
Before, the section's first command named `data/synthetic/Market-1501-v15.09.15/query`, which the demo
never writes, and no test noticed. The runs are the tiny trained runs of `tests/tools/conftest.py` (the
demo's ViT family, and the SNR family for the cross-domain study's `visualize ranked`), copied where the
README expects them; `<run>` is their folder name. Each command is run in process from the project
folder through its module's `main`, as `python -m` would.
"""

from __future__ import annotations

import importlib
import re
import shlex
import shutil
from pathlib import Path

import pytest

from reid.config import CONFIG_DIR
from reid.data.synthetic import load_synthetic
from tests.test_readme_commands import MODULE, readme_commands

README = CONFIG_DIR.parent / "README.md"
SECTION = "## Using a trained model"
RUN_NAME = "run"
RUN_OF_FOLDER = {"demo": "vit", "snr_demo_a2b": "snr", "transreid_market": "transreid"}
"""Which tiny family stands in for the runs of each `outputs/<name>/` folder the section names."""


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
        family = RUN_OF_FOLDER.get(Path(folder).name, "vit")
        shutil.copytree(trained_run(family), root / folder / RUN_NAME)
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
