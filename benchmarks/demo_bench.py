"""Time `make demo` as a newcomer meets it: render the synthetic people, train, evaluate, print.

    python benchmarks/demo_bench.py            # a fresh data folder: rendering is timed too
    python benchmarks/demo_bench.py --reuse-data data

Runs ``python -m reid.run experiment=demo`` in a subprocess with its output going to a file (as under
SLURM or nohup, where only the plain ``[train]`` lines show progress), then reads the run's
``results.json``. Prints the wall time, the untrained and trained metrics and how many progress lines
the log holds, and writes a row to docs/benchmarks.md between the ``demo_bench`` markers. Targets
(issue 13): at most 300 s after install, trained mAP at least 46.4 (the demo before it was sped up).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from doc_section import DOC, write_section

from reid.results import first_target

ROOT = Path(__file__).resolve().parent.parent
TARGET_SECONDS, TARGET_MAP = 300.0, 46.4
KEYS = ("mAP", "R1", "R5", "R10", "mINP")


def run_demo(data_dir: Path, run_dir: Path, overrides: list[str]) -> tuple[float, Path]:
    """Wall seconds of the demo and the path of its log (stdout and stderr, not a terminal)."""
    log = run_dir.parent / "demo.log"
    command = [sys.executable, "-m", "reid.run", "experiment=demo", f"paths.data_dir={data_dir}"]
    command += [f"hydra.run.dir={run_dir}", *overrides]
    start = time.perf_counter()
    with log.open("w") as out:
        done = subprocess.run(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, check=False)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(
            f"demo_bench: the demo failed (exit {done.returncode}); see {log}:\n{log.read_text()[-3000:]}"
        )
    return seconds, log


def row(seconds: float, results: dict, log_text: str, overrides: list[str], fresh_data: bool) -> dict:
    trained, untrained = first_target(results.get("test")), first_target(results.get("untrained"))
    return {
        "seconds": round(seconds, 1),
        "untrained": {k: untrained.get(k) for k in KEYS},
        "trained": {k: trained.get(k) for k in KEYS},
        "progress_lines": sum(line.startswith("[train] epoch") for line in log_text.splitlines()),
        "met": seconds <= TARGET_SECONDS and (trained.get("mAP") or 0.0) >= TARGET_MAP,
        "rendering": "included" if fresh_data else "reused",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f} at start",
        "command": " ".join(["python benchmarks/demo_bench.py", *overrides]),
    }


def _metrics(values: dict) -> str:
    return " / ".join("-" if values.get(k) is None else f"{values[k]:.2f}" for k in KEYS)


def render(entry: dict) -> str:
    """The ``demo_bench`` section: ``entry``'s table."""
    lines = [
        "## The demo (`benchmarks/demo_bench.py`)",
        "",
        "`make demo` after install (`python -m reid.run experiment=demo`, output to a file), from a "
        f"fresh data folder unless noted. Targets: <= {TARGET_SECONDS:.0f} s, trained mAP >= {TARGET_MAP}.",
        "",
        "| wall s | synthetic tree | untrained mAP / R1 / R5 / R10 / mINP "
        "| trained mAP / R1 / R5 / R10 / mINP | [train] lines | met | machine | command |",
        "|---|---|---|---|---|---|---|---|",
        f"| {entry['seconds']} | {entry['rendering']} | {_metrics(entry['untrained'])} | "
        f"{_metrics(entry['trained'])} | {entry['progress_lines']} | {'yes' if entry['met'] else 'no'} | "
        f"{entry['machine']} | `{entry['command']}` |",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--reuse-data", type=Path, help="data folder with the synthetic tree already rendered"
    )
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for the demo (a variant)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="demo_bench_") as tmp:
        data_dir = args.reuse_data.resolve() if args.reuse_data else Path(tmp) / "data"
        seconds, log = run_demo(data_dir, Path(tmp) / "run", args.overrides)
        results = json.loads((Path(tmp) / "run" / "results.json").read_text())
        entry = row(seconds, results, log.read_text(), args.overrides, args.reuse_data is None)
    print(json.dumps(entry, indent=2))
    if not args.no_write:
        write_section("demo_bench", render(entry))
        print(f"written to {DOC}")


if __name__ == "__main__":
    main()
