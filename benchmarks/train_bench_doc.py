"""The ``train_bench`` section of docs/benchmarks.md: rows merged by key, rendered as three tables.

The rows are kept as JSON in a comment at the end of the section, so a GPU run adds its rows beside the
CPU ones; a section written before that comment existed is parsed back from its tables.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path

import doc_section
from doc_section import DOC, read_section


def _legacy_rows(section: str, families: Mapping) -> dict[str, list[dict]]:
    """Rows of a section written before the data comment existed (its tables, parsed back)."""
    labels = {family.label: name for name, family in families.items()}
    found = re.search(r"Command: `([^`]*)`; host: ([^,]*), (\d+) torch threads, torch ([^ ]*)\.", section)
    command, machine = (
        (found.group(1), f"{found.group(2)}, {found.group(3)} torch threads, torch {found.group(4)}")
        if found
        else ("", "")
    )
    batch = re.search(r"--batch (\d+)", command)
    where = {"machine": machine, "command": command}
    data: dict[str, list[dict]] = {"throughput": [], "overhead": [], "datamodule": []}
    for cells in (line.strip("|").split("|") for line in section.splitlines() if line.startswith("| ")):
        cells = [c.strip() for c in cells]
        if len(cells) == 5 and cells[3] in labels:
            row = {
                "device": cells[0],
                "precision": cells[1],
                "batch": int(cells[2]),
                "family": labels[cells[3]],
            }
            data["throughput"].append({**row, "images_per_s": float(cells[4]), "peak_gib": None, **where})
        elif len(cells) == 5 and cells[4].endswith("%"):
            row = {"device": cells[0], "precision": cells[1], "batch": int(batch.group(1)) if batch else None}
            data["overhead"].append({**row, "raw": float(cells[2]), "lightning": float(cells[3]), **where})
        elif len(cells) == 3 and cells[0].isdigit():
            data["datamodule"].append({"workers": int(cells[0]), "rate": float(cells[1]), **where})
    return data


KEYS = {
    "throughput": ("device", "precision", "batch", "family"),
    "overhead": ("device", "precision", "batch"),
    "datamodule": ("workers",),
}


def merge(old: dict[str, list[dict]], new: dict[str, list[dict]], families: Mapping) -> dict[str, list[dict]]:
    """``old`` rows updated by ``new`` ones with the same key (see KEYS); order: device, then family."""
    order = list(families)
    merged = {}
    for table, key in KEYS.items():
        rows = {tuple(r.get(k) for k in key): r for r in old.get(table, []) + new.get(table, [])}
        merged[table] = sorted(
            rows.values(),
            key=lambda r: tuple(order.index(r[k]) if k == "family" else str(r.get(k)) for k in key),
        )
    return merged


def render(data: dict[str, list[dict]], families: Mapping) -> str:
    """The section's markdown: three tables and the data comment they are rebuilt from."""
    lines = [
        "## Training throughput (`benchmarks/train_bench.py`)",
        "",
        "One warm-up step, then the mean of `--steps` steps (forward, loss, backward, optimiser step) on "
        "random images at each family's paper input size. Peak: CUDA memory allocated by torch, or on "
        "CPU the process's resident high-water mark. Re-running the script replaces only its own rows.",
        "",
        "| device | precision | batch | model | input | images/s | peak GiB | machine | command |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in data["throughput"]:
        family = families[r["family"]]
        peak = "" if r["peak_gib"] is None else f"{r['peak_gib']:.2f}"
        size = "x".join(map(str, family.image_size))
        lines.append(
            f"| {r['device']} | {r['precision']} | {r['batch']} | {family.label} | {size} | "
            f"{r['images_per_s']:.2f} | {peak} | {r['machine']} | `{r['command']}` |"
        )
    lines += [
        "",
        "LightningModule step vs a raw PyTorch loop (same ViT-S TransReID task, SGD, batch):",
        "",
        "| device | precision | batch | raw s/step | Lightning s/step | overhead | command |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in data["overhead"]:
        lines.append(
            f"| {r['device']} | {r['precision']} | {r['batch'] or ''} | {r['raw']:.4f} | "
            f"{r['lightning']:.4f} | {100 * (r['lightning'] / r['raw'] - 1):+.1f}% | `{r['command']}` |"
        )
    lines += [
        "",
        "ReIDDataModule training images/s (256x128, flip + pad/crop + erasing, batch 64, demo synthetic "
        "JPEG/PNG files), to size `data.num_workers`:",
        "",
        "| workers | images/s | per worker | machine |",
        "|---|---|---|---|",
    ]
    for r in data["datamodule"]:
        lines.append(
            f"| {r['workers']} | {r['rate']:.1f} | {r['rate'] / max(r['workers'], 1):.1f} | {r['machine']} |"
        )
    if not any(r["device"] == "cuda" for r in data["throughput"]):
        lines += ["", "No CUDA rows yet: `bash benchmarks/gpu_check.sh` on a GPU machine adds them."]
    return "\n".join([*lines, "", f"<!-- train_data: {json.dumps(data)} -->"])


def write_section(rows: dict[str, list[dict]], families: Mapping, doc_path: Path = DOC) -> None:
    """Merge ``rows`` into the section between the train_bench markers of ``doc_path``; ``families``
    maps a family name to an object with ``label`` and ``image_size`` (train_bench.FAMILIES)."""
    section = read_section("train_bench", doc_path)
    old: dict[str, list[dict]] = {}
    if section is not None:
        found = re.search(r"<!-- train_data: (.*?) -->", section, re.S)
        old = json.loads(found.group(1)) if found else _legacy_rows(section, families)
    doc_section.write_section("train_bench", render(merge(old, rows, families), families), doc_path)
