"""``<run>/pictures/index.html``: every PNG of a run's pictures folder on one page, captioned.

Self-contained: images by relative path (the folder can be moved or zipped), inline CSS, no script or
external asset. At the top, when the folder is a run's ``pictures/``: the run's test metrics per target
(``results.json``, with the weights they score) and its config summary (the experiment and the
command-line overrides of ``.hydra/``); then the sections: curves (CMC, mAP per epoch), ranked lists,
attention maps, other pictures; in each, files in natural order (epoch 9 before epoch 10).
"""

from __future__ import annotations

import html
import json
import re
from pathlib import Path
from typing import Any

import yaml

from reid.results import by_target

INDEX_NAME = "index.html"
SECTIONS = (
    ("Curves", re.compile(r"^(cmc|map)_")),
    ("Ranked lists", re.compile(r"^ranked_")),
    ("Attention and activation maps", re.compile(r"^(attention|activation)_")),
    ("Other pictures", re.compile(r"")),
)
_RANKED = re.compile(r"^ranked_(?P<stage>val|test)(?:_(?P<target>.+?))?_epoch(?P<epoch>\d+)$")
_CMC = re.compile(r"^cmc_(?P<stage>val|test)_epoch(?P<epoch>\d+)$")
STYLE = (
    "body{font-family:sans-serif;margin:1.5em;color:#222}figure{margin:1em 0 2em}"
    "img{max-width:100%;border:1px solid #ccc}figcaption{font-size:0.9em;margin-top:0.3em}"
    "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:0.2em 0.6em;text-align:right}"
    "code{background:#f4f4f4;padding:0 0.2em}"
)
SUMMARY_METRICS = ("mAP", "R1", "R5", "R10", "mINP")


def caption(name: str) -> str:
    """What the picture named ``name`` (file stem) shows, from the names the project writes."""
    if match := _RANKED.match(name):
        target = f" on {match['target']}" if match["target"] else ""
        return (
            f"Ranked lists of the {match['stage']} evaluation{target} after epoch {match['epoch']}: the "
            "worst and the best queries by AP, each with its nearest gallery images. Frames: green a true "
            "match, red a wrong identity, grey a same-camera image of the query's identity (not scored)."
        )
    if match := _CMC.match(name):
        return f"CMC curve of the {match['stage']} evaluation after epoch {match['epoch']}, per target."
    if name == "map_per_epoch":
        return "mAP after each epoch: validation (lines) and test (squares) rows of csv/metrics.csv."
    if name.startswith("activation_"):
        return (
            f"{name.removeprefix('activation_')}: activation map of the CNN's last stage (sum of squares "
            "over channels, torchreid's visactmap), relative to its maximum (colour bar)."
        )
    if name.startswith("attention_heads_"):
        return (
            f"{name.removeprefix('attention_heads_')}: attention of [CLS] over the image, one panel per head "
            "(DINO's picture), each relative to its maximum (colour bar)."
        )
    if name.startswith("attention_"):
        return (
            f"{name.removeprefix('attention_')}: attention of [CLS] and of each part token over the image in "
            "the last block (heads averaged); the outlined band is the part's region, its share of the "
            "part's attention in the title."
        )
    return name


def run_summary(run_dir: Path) -> str:
    """HTML of the run's test metrics per target and its config summary (empty outside a run folder)."""
    parts = []
    results = run_dir / "results.json"
    if results.is_file():
        summary = json.loads(results.read_text())
        tested = by_target(summary.get("test"))
        if tested:
            weights = (summary.get("tested_weights") or {}).get("selection", "")
            parts.append(f"<h2>Test metrics</h2><p>weights: {html.escape(str(weights or 'as tested'))}</p>")
            rows = ["<tr><th>target</th>" + "".join(f"<th>{m}</th>" for m in SUMMARY_METRICS) + "</tr>"]
            for target, metrics in tested.items():
                cells = "".join(
                    f"<td>{metrics[m]:.2f}</td>" if m in metrics else "<td>–</td>" for m in SUMMARY_METRICS
                )
                rows.append(f"<tr><td>{html.escape(target or 'test')}</td>{cells}</tr>")
            parts.append("<table>" + "".join(rows) + "</table>")
    overrides_file = run_dir / ".hydra" / "overrides.yaml"
    hydra_file = run_dir / ".hydra" / "hydra.yaml"
    if overrides_file.is_file() or hydra_file.is_file():
        overrides = (
            [str(o) for o in yaml.safe_load(overrides_file.read_text()) or []]
            if overrides_file.is_file()
            else []
        )
        choices = {}
        if hydra_file.is_file():
            runtime = (yaml.safe_load(hydra_file.read_text()) or {}).get("hydra", {}).get("runtime", {})
            choices = {k: v for k, v in (runtime.get("choices") or {}).items() if v is not None}
        shown = [f"{k}={choices[k]}" for k in ("experiment", "model", "data") if k in choices]
        parts.append(
            "<h2>Config</h2><p>" + " ".join(f"<code>{html.escape(x)}</code>" for x in shown) + "</p>"
        )
        command = "python -m reid.run " + " ".join(overrides) if overrides else "python -m reid.run"
        parts.append(f"<p>command: <code>{html.escape(command)}</code></p>")
    return "\n".join(parts)


def _natural(name: str) -> list[Any]:
    return [int(piece) if piece.isdigit() else piece for piece in re.split(r"(\d+)", name)]


def write_index(pictures_dir: str | Path, title: str | None = None) -> Path:
    """Write ``pictures_dir/index.html`` showing every ``*.png`` there (module docstring); returns it."""
    folder = Path(pictures_dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no pictures folder")
    names = sorted((p.name for p in folder.glob("*.png")), key=_natural)
    title = title or f"Pictures of {folder.resolve().parent.name}"
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"]
    parts += [f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>"]
    summary = run_summary(folder.resolve().parent)
    if summary:
        parts.append(summary)
    placed: set[str] = set()
    for section, pattern in SECTIONS:
        members = [n for n in names if n not in placed and pattern.match(n)]
        if not members:
            continue
        placed.update(members)
        parts.append(f"<h2>{section}</h2>")
        for name in members:
            src, text = html.escape(name, quote=True), html.escape(caption(Path(name).stem))
            parts.append(f"<figure><img src='{src}' alt='{src}'><figcaption>{text}</figcaption></figure>")
    if not names:
        parts.append("<p>No pictures yet.</p>")
    parts.append("</body></html>\n")
    path = folder / INDEX_NAME
    path.write_text("\n".join(parts), encoding="utf-8")
    return path
