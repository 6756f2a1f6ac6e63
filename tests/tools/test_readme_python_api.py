"""README.md's Python API snippet runs as written on a project laid out as `make demo` leaves it, and gives
the numbers the command lines give (reid.tools.search's metrics, reid.tools.extract's features)."""

from __future__ import annotations

import contextlib
import io
import re

import numpy as np
import torch

from reid.config import CONFIG_DIR
from reid.tools.extract import main as extract
from reid.tools.search import main as search_tool
from tests.tools.test_readme_trained_model_commands import RUN_NAME, project  # noqa: F401  (fixture)

README = CONFIG_DIR.parent / "README.md"


def snippet() -> str:
    text = README.read_text()
    start = text.index("## Python API")
    return re.search(r"```python\n(.*?)```", text[start:], re.S).group(1)


def test_the_readme_snippet_runs_and_gives_the_command_lines_numbers(project, monkeypatch):  # noqa: F811
    monkeypatch.chdir(project)
    code = snippet().replace("<run>", RUN_NAME)
    printed = io.StringIO()
    namespace: dict = {}
    with contextlib.redirect_stdout(printed):
        exec(compile(code, "README.md", "exec"), namespace)
    lines = printed.getvalue().splitlines()
    metrics = eval(lines[0])  # the printed dict
    assert set(metrics) == {"mAP", "R1", "R5", "R10", "mINP"} and 0 < metrics["mAP"] <= 100
    assert len(lines) == 3 and all(line.startswith("/") for line in lines[1:])  # two hits: absolute paths
    extracted = extract([f"outputs/demo/{RUN_NAME}", "data/synthetic/query", "q.npy", "--no-progress"])
    assert namespace["query"].paths == extracted.paths
    torch.testing.assert_close(namespace["query"].features, extracted.features, atol=1e-6, rtol=0)
    with contextlib.redirect_stdout(io.StringIO()) as out:
        search_tool([f"outputs/demo/{RUN_NAME}", "--query", "data/synthetic/query", "--gallery",
                     "data/synthetic/bounding_box_test", "--top-k", "5", "--no-progress"])  # fmt: skip
    line = next(line for line in out.getvalue().splitlines() if line.startswith("metrics"))
    assert f"mAP {metrics['mAP']:.2f}" in line
    hits = namespace["search"](namespace["model"], namespace["query"], namespace["gallery"], top_k=5)
    assert len(hits) == len(extracted.paths) and np.all(np.diff(hits[0].distances) >= 0)
