"""Every command README.md shows runs as written: a README line that cannot run is a failing test.

The commands are the lines of its ```bash blocks and its inline `code` spans that run a `reid`
module (`python -m reid.run ...`, `torchrun ... -m reid.run ...`, `python -m reid.tools.X ...`).
A `reid.run` line is composed with Hydra's compose API as `python -m reid.run` composes it (a
multirun at the first value of each sweep, `<placeholders>` and `...` filled with a tmp path) and its
options are checked to fit together; any other module's `--help` must exit 0 and list every `--flag`
the line passes. Inline group picks (`data=msmt17`, `eval=fastreid`) must compose too.
"""

from __future__ import annotations

import ast
import functools
import importlib
import re
import shlex
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf, open_dict

from reid.config import CONFIG_DIR
from reid.run import check_options_fit

README = CONFIG_DIR.parent / "README.md"
MODULE = re.compile(r"(?:^|\s)-m\s+(reid(?:\.\w+)+)")
PLACEHOLDER = re.compile(r"<[^<>]*>")
GROUP_PICK = re.compile(r"^\+?(?:hydra/)?([\w/]+)(?:@[\w.]+)?=\w+$")  # data=msmt17, +data/dataset@data.x=duke


def readme_commands(text: str) -> list[str]:
    """The command lines of a README that run a `reid` module: ```bash block lines (comments
    stripped, `\\` continuations joined) and inline `code` spans outside the blocks."""
    commands, in_block, pending = [], False, ""
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            in_block = not in_block
            continue
        if in_block:
            code = pending + re.sub(r"(^|\s)#.*$", "", line).strip()
            pending = code[:-1] + " " if code.endswith("\\") else ""
            if not pending and code:
                commands.append(code)
        else:
            commands += re.findall(r"`([^`]+)`", line)
    return [" ".join(command.split()) for command in commands if MODULE.search(command)]


def run_overrides(command: str, placeholder: str) -> list[str]:
    """The overrides a `reid.run` command line passes, as one job: `-m` dropped, each sweep at its first
    value, `<placeholders>` replaced by ``placeholder`` and `...` (more of the same) dropped."""
    arguments = shlex.split(PLACEHOLDER.sub(placeholder, command[MODULE.search(command).end() :]))
    overrides = [arg for arg in arguments if arg not in ("-m", "--multirun", "...")]
    jobs = []
    for override in OverridesParser.create().parse_overrides(overrides):
        if override.is_sweep_override():
            key = override.input_line.split("=", 1)[0]
            jobs.append(f"{key}={next(iter(override.sweep_string_iterator()))}")
        else:
            jobs.append(override.input_line)
    return jobs


COMMANDS = readme_commands(README.read_text())
RUN_COMMANDS = [c for c in COMMANDS if MODULE.search(c).group(1) == "reid.run"]
TOOL_COMMANDS = [c for c in COMMANDS if MODULE.search(c).group(1) != "reid.run"]
GROUP_PICKS = sorted(
    {
        span
        for span in re.findall(r"`([^`\s]+)`", README.read_text())
        if GROUP_PICK.match(span) and (CONFIG_DIR / GROUP_PICK.match(span).group(1)).is_dir()
    }
)


def _compose_and_check(overrides: list[str], output_dir: Path) -> None:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("run", overrides=overrides, return_hydra_config=True)
    choices = OmegaConf.to_container(cfg.hydra.runtime.choices)
    with open_dict(cfg):
        del cfg["hydra"]
        cfg.paths.output_dir = str(output_dir)
    check_options_fit(cfg, choices)


def test_the_parser_finds_block_inline_continued_and_torchrun_commands():
    text = "\n".join(
        [
            "Run `python -m reid.run data=msmt17` or `make demo`.",
            "```bash",
            "python -m reid.run experiment=demo   # the demo",
            "python -m reid.run -m model=transreid_tiny \\",
            "    model.jpm.shift=1,2",
            "# python -m reid.run commented=out",
            "```",
            "Multi-node: `torchrun --nnodes 2 -m reid.run trainer=ddp ...`.",
        ]
    )
    assert readme_commands(text) == [
        "python -m reid.run data=msmt17",
        "python -m reid.run experiment=demo",
        "python -m reid.run -m model=transreid_tiny model.jpm.shift=1,2",
        "torchrun --nnodes 2 -m reid.run trainer=ddp ...",
    ]
    assert run_overrides(readme_commands(text)[2], "/tmp/x") == ["model=transreid_tiny", "model.jpm.shift=1"]
    assert run_overrides("python -m reid.run hydra.run.dir=<run folder> ...", "/tmp/x") == [
        "hydra.run.dir=/tmp/x"
    ]


def test_the_readme_shows_training_pretraining_and_tool_commands():
    assert len(RUN_COMMANDS) >= 15 and len(TOOL_COMMANDS) >= 3
    assert "python -m reid.run experiment=demo" in RUN_COMMANDS or "python -m reid.run" in RUN_COMMANDS
    assert {MODULE.search(c).group(1) for c in TOOL_COMMANDS} >= {
        "reid.tools.cfs_filter",
        "reid.tools.summarize",
    }


@pytest.mark.parametrize("command", RUN_COMMANDS)
def test_a_readme_run_command_composes(command, tmp_path):
    _compose_and_check(
        [*run_overrides(command, str(tmp_path)), f"paths.data_dir={tmp_path}"], tmp_path / "run"
    )


SUB_GROUP_PARENTS = {"model/clustering": "model=cluster_contrast"}
"""A sub-group option composes under a parent option that has the sub-group (the default data option has
``data/dataset``; the default model, a supervised one, has no ``model/clustering``)."""


@pytest.mark.parametrize("span", GROUP_PICKS)
def test_a_group_option_named_in_the_readme_composes(span, tmp_path):
    parent = SUB_GROUP_PARENTS.get(GROUP_PICK.match(span).group(1))
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        compose("run", overrides=[parent, span] if parent else [span], return_hydra_config=True)


@pytest.mark.parametrize("command", TOOL_COMMANDS)
def test_a_readme_tool_command_has_its_module_and_flags(command, capsys):
    name = MODULE.search(command).group(1)
    module = importlib.import_module(name)
    main = getattr(module, "main", None) or importlib.import_module(f"{name}.__main__").main
    words = shlex.split(command[MODULE.search(command).end() :])
    # the help of the command's subcommand (visualize attention, search build-index) names its flags;
    # another first word (a run folder) is parsed before --help prints the tool's own help
    first = words[:1] if words and not words[0].startswith("-") else []
    with pytest.raises(SystemExit) as exit_:
        main([*first, "--help"])
    assert exit_.value.code == 0
    usage = capsys.readouterr().out
    flags = {
        arg.split("=", 1)[0] for arg in shlex.split(re.sub(r"[][]", " ", command)) if arg.startswith("--")
    }
    assert all(re.search(rf"{re.escape(flag)}\b", usage) for flag in flags), (flags, usage)


BENCHMARK = re.compile(r"python (benchmarks/\w+\.py)((?: +[^\s`#|\"]+)*)")
DOCS = [README, *sorted((CONFIG_DIR.parent / "docs").glob("*.md"))]


def benchmark_commands() -> list[tuple[str, str, tuple[str, ...]]]:
    """``(document, script, flags)`` of every ``python benchmarks/<script>.py ...`` in the README and the docs
    (continuation lines joined; the generated "Command:" lines of the studies included)."""
    found = []
    for doc in DOCS:
        text = doc.read_text().replace("\\\n", " ")
        for match in BENCHMARK.finditer(text):
            flags = tuple(a.split("=", 1)[0] for a in match.group(2).split() if a.startswith("--"))
            found.append((doc.name, match.group(1), flags))
    return sorted(set(found))


@functools.cache
def _benchmark_flags(script: str) -> frozenset[str]:
    """The ``--flags`` a benchmark script's parser declares: the string arguments of the ``add_argument``
    calls in its source and in the benchmark modules it imports (``study_runs``' shared flags), read as
    text (running ``--help`` would import torch in a process per script)."""
    path = CONFIG_DIR.parent / script
    tree = ast.parse(path.read_text())
    flags = {
        arg.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "add_argument"
        for arg in node.args
        if isinstance(arg, ast.Constant) and isinstance(arg.value, str) and arg.value.startswith("--")
    }
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and (path.parent / f"{node.module}.py").is_file():
            flags |= _benchmark_flags(str(Path(script).parent / f"{node.module}.py"))
    return frozenset(flags)


@pytest.mark.parametrize(("doc", "script", "flags"), benchmark_commands())
def test_a_documented_benchmark_command_has_its_script_and_flags(doc, script, flags):
    """Before, README showed `rpe_study.py --naive-weight 50` long after the flag had become `--weight`."""
    assert (CONFIG_DIR.parent / script).is_file(), f"{doc}: {script} does not exist"
    missing = sorted(set(flags) - _benchmark_flags(script))
    assert not missing, f"{doc}: python {script} has no {missing}"
