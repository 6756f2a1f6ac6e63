"""The LUPerson index at full scale: its size, what loader workers copy of it, and keep-list to first batch.

    python benchmarks/index_bench.py [--entries 4180243] [--workers 8] [--no-doc]

A LUPerson-like tree whose 4,180,243 keep-list entries are distinct paths to a few real files: one folder
of 1,000 real JPEG crops (128 x 64) and 4,181 folder symlinks to it, so entry ``s<f>/p<j>.jpg`` exists for
every f and j and the loader, the sampler and the workers see a keep-list of LUPerson's length. Measured,
in one run, for the index the project holds (:class:`reid.data.record_table.RecordTable`) and for the list
of :class:`~reid.data.records.Record` it replaced:

* the index in the main process: the growth of the resident set while it is built from the keep-list,
  and the arrays' bytes (a list's objects have no such count);
* the loader workers: ``--workers`` processes forked from the main process as DataLoader workers are, each
  reading every record once (``records[i]``, what ``__getitem__`` does before decoding); the growth of each
  worker's unique (USS: private pages) and proportional (PSS) set sizes, from /proc/<pid>/smaps_rollup;
* keep-list to first batch: ``load_luperson`` on the keep-list, the pretraining datamodule
  (``data=luperson_ssl``, DINO's 2 + 8 crops, batch 64, 2 loader workers, the header check off) and its
  first batch;
* the header check of the first 126,441 entries (MSMT17's size: ``reid.data.image_dataset.
  check_image_headers``, run before supervised training), and of all of them extrapolated.

Written to docs/benchmarks.md between the index_bench markers (``--no-doc``: printed only).
"""

from __future__ import annotations

import argparse
import gc
import multiprocessing
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from doc_section import write_section  # noqa: E402
from process_memory import status_bytes  # noqa: E402

from reid.data.datasets.luperson import load_luperson  # noqa: E402
from reid.data.image_dataset import check_image_headers  # noqa: E402
from reid.data.record_table import RecordTable  # noqa: E402
from reid.data.records import Record  # noqa: E402

LUPERSON = 4_180_243
MSMT17 = 126_441
PER_FOLDER = 1_000
MIB = 2**20
GOALS = {"index": 250 * MIB, "worker": 20 * MIB, "first_batch": 30.0}


def build_tree(root: Path, entries: int) -> Path:
    """``root/LUPerson/real/p<j>.jpg`` (1,000 crops), folder symlinks ``s<f> -> real``, and the keep-list
    of ``entries`` distinct paths; returns the keep-list."""
    folder = root / "LUPerson"
    real = folder / "real"
    real.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for j in range(PER_FOLDER):
        Image.fromarray(rng.integers(0, 256, (128, 64, 3), dtype=np.uint8)).save(real / f"p{j:04d}.jpg")
    folders = -(-entries // PER_FOLDER)
    for f in range(folders):
        (folder / f"s{f:04d}").symlink_to("real", target_is_directory=True)
    keep = root / "keep.txt"
    with keep.open("w") as handle:
        for index in range(entries):
            handle.write(f"s{index // PER_FOLDER:04d}/p{index % PER_FOLDER:04d}.jpg\n")
    return keep


def memory(pid: int | str = "self") -> dict[str, int]:
    """USS (private pages) and PSS of a process, bytes, from /proc/<pid>/smaps_rollup."""
    fields = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        name, value, *_ = line.split()
        fields[name.rstrip(":")] = int(value) * 1024
    return {"uss": fields["Private_Clean"] + fields["Private_Dirty"], "pss": fields["Pss"]}


def _touch_every_record(records: Sequence[Record], queue: multiprocessing.Queue, barrier: Any) -> None:
    barrier.wait()  # every worker exists: PSS divides the shared pages by the same count before and after
    before = memory()
    for index in range(len(records)):
        _ = records[index]  # what a worker's __getitem__ does before it decodes the image
    barrier.wait()
    after = memory()
    queue.put({k: after[k] - before[k] for k in before})
    barrier.wait()  # no worker exits (and changes the others' PSS) before all have measured


def worker_growth(records: Sequence[Record], workers: int) -> list[dict[str, int]]:
    """Each of ``workers`` forked processes reads every record once; their USS / PSS growth."""
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    barrier = context.Barrier(workers)
    processes = [
        context.Process(target=_touch_every_record, args=(records, queue, barrier)) for _ in range(workers)
    ]
    for process in processes:
        process.start()
    found = [queue.get() for _ in processes]
    for process in processes:
        process.join()
    return found


def measured_build(build: Callable[[], Sequence[Record]]) -> tuple[Sequence[Record], int, float]:
    """The index ``build`` returns, the growth of the resident set it caused, and its seconds."""
    gc.collect()
    before = status_bytes("VmRSS:")
    start = time.perf_counter()
    index = build()
    seconds = time.perf_counter() - start
    gc.collect()
    return index, status_bytes("VmRSS:") - before, seconds


def first_batch_seconds(root: Path, keep: Path) -> tuple[float, float]:
    """Seconds from the keep-list to the first pretraining batch, and of the setup part alone."""
    from hydra import compose
    from hydra.utils import instantiate

    from reid.config_store import hydra_context

    overrides = [
        "experiment=dino_lup",
        f"data.dataset.root={root}",
        f"data.dataset.keep_list={keep}",
        "data.check_images=false",
        "data.num_workers=2",
    ]
    with hydra_context():
        cfg = compose("run", overrides=overrides)
    start = time.perf_counter()
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    setup = time.perf_counter() - start
    next(iter(datamodule.train_dataloader()))
    return time.perf_counter() - start, setup


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f} at start"


def report(figures: dict, entries: int, workers: int, command: str) -> str:
    table, records = figures["table"], figures["list"]

    def worst(rows: list[dict[str, int]], key: str) -> float:
        return max(row[key] for row in rows) / MIB

    lines = [
        f"LUPerson-length keep-list ({entries:,} distinct entries to 1,000 real 128x64 JPEGs through folder "
        f"symlinks), {workers} forked workers each reading every record once. {machine()}. Command: "
        f"`{command}`.",
        "",
        "| index | build s | main process RSS MiB | arrays MiB | worker USS growth MiB (max) | "
        "worker PSS growth MiB (max) | goal |",
        "|---|---:|---:|---:|---:|---:|---|",
        f"| RecordTable | {table['seconds']:.1f} | {table['rss'] / MIB:.0f} | {table['nbytes'] / MIB:.0f} | "
        f"{worst(table['workers'], 'uss'):.1f} | {worst(table['workers'], 'pss'):.1f} | index <= 250 MiB, "
        "worker <= 20 MiB |",
        f"| list of Record (before) | {records['seconds']:.1f} | {records['rss'] / MIB:.0f} | – | "
        f"{worst(records['workers'], 'uss'):.1f} | {worst(records['workers'], 'pss'):.1f} | |",
        "",
        "Keep-list to first batch (load, datamodule setup, the first DINO batch of 64 x (2 + 8) crops with "
        f"2 loader workers; header check off): {figures['first_batch']:.1f} s, of which setup "
        f"{figures['setup']:.1f} s (goal <= 30 s).",
        "",
        f"Header check (`check_image_headers`, {figures['header_workers']} processes): {MSMT17:,} images "
        f"(MSMT17's size) in {figures['headers']:.1f} s; all {entries:,} would take about "
        f"{figures['headers'] * entries / MSMT17:.0f} s here: the check pretraining runs by default "
        "(`data.check_images=true`) before the first batch above; `false` skips it.",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=LUPERSON)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--no-doc", action="store_true")
    args = parser.parse_args(argv)
    command = "python benchmarks/index_bench.py" + "".join(f" {a}" for a in (argv or sys.argv[1:]))
    figures: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        keep = build_tree(root, args.entries)
        table, rss, seconds = measured_build(lambda: load_luperson(root, keep_list=keep).train)
        assert isinstance(table, RecordTable)
        figures["table"] = {"rss": rss, "seconds": seconds, "nbytes": table.nbytes}
        figures["table"]["workers"] = worker_growth(table, args.workers)
        records, rss, seconds = measured_build(lambda: list(table))
        figures["list"] = {"rss": rss, "seconds": seconds, "workers": worker_growth(records, args.workers)}
        del records
        gc.collect()
        start = time.perf_counter()
        check_image_headers(table[:MSMT17].paths, "MSMT17-sized")
        figures["headers"] = time.perf_counter() - start
        figures["header_workers"] = os.cpu_count() or 1
        figures["first_batch"], figures["setup"] = first_batch_seconds(root, keep)
    text = report(figures, args.entries, args.workers, command)
    print(text)
    if not args.no_doc:
        doc = ROOT / "docs" / "benchmarks.md"
        write_section("index_bench", "## LUPerson index at full scale\n\n" + text, doc)
    return figures


if __name__ == "__main__":
    main()
