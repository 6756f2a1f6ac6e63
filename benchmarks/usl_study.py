"""The USL / UDA study on CPU: Cluster Contrast without target labels against the model it starts from.

Every run adapts a tiny ResNet trained with labels by ``benchmarks/cross_domain_study.py`` (its runs are
the sources: ``<sources>/<source>/seed<k>/checkpoints/last.ckpt``, trained here first when missing) to a
domain whose labels it never sees, by Cluster Contrast (``reid.tasks.cluster_contrast``, the CNN recipe
of ``conf/model/cluster_contrast_r50.yaml`` at CPU size), for the same budget:

* ``uda_bot`` / ``uda_ibn`` / ``uda_snr``: UDA A -> B (``experiment=uda{,_ibn,_snr}_demo_a2b``) from the
  BoT / IBN-a / SNR models trained on the synthetic Market people (A), clustering the synthetic Duke
  people (B);
* ``usl_b2a``: USL on A (``experiment=usl_demo_b2a``) from the model trained on B (the study's in-domain
  reference), no label of A used: the issue's "demo's model trained on another synthetic domain";
* ``uda_bot_plain`` / ``usl_b2a_plain``: the same with the official clustering, without the per-camera
  centring of the features (``model.clustering.camera_centering=false``) the demo experiments use;
* ``uda_bot_infomap`` / ``usl_b2a_infomap``: ``uda_bot`` / ``usl_b2a`` with Infomap on the kNN graph
  instead of DBSCAN on the Jaccard distance (``model/clustering=knn_infomap``, its official eps 0.5,
  k1 15, k2 4; centred as well); ``uda_bot_infomap_plain`` / ``usl_b2a_infomap_plain``: Infomap
  without the centring.

Each run evaluates its start (``evaluate_before_fit=true``: the source backbone, direct transfer) and
its last epoch on the same query/gallery, so the two compare like for like. It writes the ``usl_study``
section of ``docs/usl.md``: per run the start and the end (mAP / R1 / mINP on the target), the gain, the
final pseudo-label counts and their agreement with the hidden identities (adjusted Rand index), each
variant's mean and the command.

    python benchmarks/usl_study.py [--epochs E] [--seeds 0 1] [--jobs 2] [--reuse-data data]

Runs live in ``--out`` (``outputs/usl_study/<variant>/seed<k>``); finished ones (with a ``results.json``)
are read, not retrained, unless ``--rerun``; ``--report-only`` trains nothing.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import cross_domain_study
import numpy as np
from hydra.utils import instantiate
from omegaconf import OmegaConf
from sklearn.metrics import adjusted_rand_score
from study_runs import (
    ROOT,
    Job,
    add_study_arguments,
    mean,
    placeholder_overrides,
    read_metrics,
    run_dir,
    threads_per_job,
    train_all,
    write_report,
)

from reid.config import CONFIG_DIR, register_resolvers
from reid.results import by_target
from reid.tasks.cluster_contrast import STATE_KEY
from reid.training.checkpoint_io import AtomicCheckpointIO

DOC = ROOT / "docs" / "usl.md"
SECTION = "usl_study"
METRICS = ("mAP", "R1", "mINP")
EPOCHS = int(OmegaConf.load(CONFIG_DIR / "experiment" / "uda_demo_a2b.yaml").trainer.max_epochs)
CHECKPOINT = Path("checkpoints") / "last.ckpt"


@dataclass(frozen=True)
class Variant:
    name: str
    label: str
    experiment: str
    source: str  # the cross_domain_study variant it starts from
    target: str  # the dataset it clusters and is scored on
    overrides: tuple[str, ...] = ()


PLAIN = ("model.clustering.camera_centering=false",)
INFOMAP = ("model/clustering=knn_infomap",)
VARIANTS = (
    Variant(
        "uda_bot_plain",
        "UDA A->B from BoT, official clustering",
        "uda_demo_a2b",
        "bot",
        "synthetic_duke",
        PLAIN,
    ),
    Variant("uda_bot", "UDA A->B from BoT", "uda_demo_a2b", "bot", "synthetic_duke"),
    Variant("uda_ibn", "UDA A->B from BoT + IBN-a", "uda_ibn_demo_a2b", "ibn", "synthetic_duke"),
    Variant("uda_snr", "UDA A->B from BoT + SNR", "uda_snr_demo_a2b", "snr", "synthetic_duke"),
    Variant(
        "usl_b2a_plain",
        "USL on A from B's model, official clustering",
        "usl_demo_b2a",
        "oracle",
        "synthetic",
        PLAIN,
    ),
    Variant("usl_b2a", "USL on A from the model trained on B", "usl_demo_b2a", "oracle", "synthetic"),
    Variant(
        "uda_bot_infomap",
        "UDA A->B from BoT, Infomap clustering",
        "uda_demo_a2b",
        "bot",
        "synthetic_duke",
        INFOMAP,
    ),
    Variant(
        "usl_b2a_infomap",
        "USL on A from B's model, Infomap clustering",
        "usl_demo_b2a",
        "oracle",
        "synthetic",
        INFOMAP,
    ),
    Variant(
        "uda_bot_infomap_plain",
        "UDA A->B from BoT, Infomap clustering, no centring",
        "uda_demo_a2b",
        "bot",
        "synthetic_duke",
        INFOMAP + PLAIN,
    ),
    Variant(
        "usl_b2a_infomap_plain",
        "USL on A from B's model, Infomap clustering, no centring",
        "usl_demo_b2a",
        "oracle",
        "synthetic",
        INFOMAP + PLAIN,
    ),
)


def source_checkpoint(sources: Path, variant: Variant, seed: int) -> Path:
    return run_dir(sources, variant.source, seed) / CHECKPOINT


def common_overrides(seed: int, epochs: int) -> list[str]:
    """What every run of the study shares besides its experiment and source."""
    return [
        f"seed={seed}",
        f"trainer.max_epochs={epochs}",
        "evaluate_before_fit=true",
        "data.num_workers=0",  # load in the run's own thread: two jobs share two cores
        "callbacks.progress_bar=null",
    ]


def jobs(names: Sequence[str], seeds: Sequence[int], epochs: int, out: Path, sources: Path) -> list[Job]:
    chosen = [v for v in VARIANTS if v.name in names]
    return [
        Job(
            v.name,
            seed,
            run_dir(out, v.name, seed),
            (
                f"experiment={v.experiment}",
                f"model.weights={source_checkpoint(sources, v, seed).resolve()}",
                *v.overrides,
                *common_overrides(seed, epochs),
            ),
        )
        for v in chosen
        for seed in seeds
    ]


def missing_sources(names: Sequence[str], seeds: Sequence[int], epochs: int, sources: Path) -> list[Job]:
    """The cross-domain study's runs the chosen variants start from that have no checkpoint yet."""
    needed = sorted({v.source for v in VARIANTS if v.name in names})
    return [
        job
        for job in cross_domain_study.jobs(needed, seeds, epochs, sources)
        if not (job.folder / CHECKPOINT).exists()
    ]


@dataclass(frozen=True)
class Result:
    """One run on its target: the metrics at the start and after adaptation, the last clustering."""

    start: dict[str, float]
    end: dict[str, float]
    clusters: float | None
    outliers: float | None
    ari: float | None = None


def _on_target(metrics: dict | None, target: str) -> dict[str, float]:
    found = by_target(metrics)
    return found.get(target, found.get("", {}))


def pseudo_label_agreement(folder: Path, data: Path) -> float | None:
    """Adjusted Rand index of the run's last pseudo labels (its checkpoint) with the identities the
    training never saw (outliers left out), or None without a checkpoint. A diagnostic of the study only:
    the synthetic trees, like the real datasets, carry the identities the unlabelled datamodule drops."""
    checkpoint = folder / CHECKPOINT
    if not checkpoint.exists():
        return None
    labels = AtomicCheckpointIO().load_checkpoint(checkpoint)[STATE_KEY]["pseudo_labels"].numpy()
    register_resolvers()
    cfg = OmegaConf.load(folder / ".hydra" / "config.yaml")
    cfg.paths.data_dir, cfg.paths.output_dir = str(data.resolve()), str(folder)
    pids = np.array([record.pid for record in instantiate(cfg.data.dataset)().train])
    keep = labels >= 0
    return float(adjusted_rand_score(pids[keep], labels[keep])) if keep.any() else None


def read_results(
    out: Path, seeds: Sequence[int], data: Path = ROOT / "data"
) -> dict[tuple[str, int], Result]:
    """``{(variant, seed): Result}`` of the finished runs under ``out`` (``data``: their data root)."""
    found = {}
    for variant in VARIANTS:
        for seed in seeds:
            folder = run_dir(out, variant.name, seed)
            if not (folder / "results.json").exists():
                continue
            summary = json.loads((folder / "results.json").read_text())
            series = read_metrics(folder / "csv" / "metrics.csv") if (folder / "csv").exists() else {}
            last = {
                key: series[key][1][-1]
                for key in ("train/num_clusters", "train/num_outliers")
                if key in series
            }
            found[(variant.name, seed)] = Result(
                _on_target(summary.get("untrained"), variant.target),
                _on_target(summary.get("test"), variant.target),
                last.get("train/num_clusters"),
                last.get("train/num_outliers"),
                pseudo_label_agreement(folder, data),
            )
    return found


def _cell(value: float | None, signed: bool = False, digits: int = 2) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def _count(value: float | None) -> str:
    return "-" if value is None else str(round(value))


def _row(label: str, seed: str, result: Result) -> str:
    start, end = result.start, result.end
    gain = end["mAP"] - start["mAP"] if "mAP" in end and "mAP" in start else None
    cells = [_cell(start.get("mAP")), _cell(end.get("mAP")), _cell(gain, signed=True)]
    cells += [_cell(start.get("R1")), _cell(end.get("R1")), _cell(start.get("mINP")), _cell(end.get("mINP"))]
    cells += [_count(result.clusters), _count(result.outliers), _cell(result.ari, digits=3)]
    return f"| {label} | {seed} | " + " | ".join(cells) + " |"


def _mean_result(runs: Sequence[Result]) -> Result:
    def average(values: Sequence[float | None]) -> float | None:
        return mean([v for v in values if v is not None])

    def metrics(which: str) -> dict[str, float]:
        rows = [getattr(run, which) for run in runs]
        means = {key: average([row.get(key) for row in rows]) for key in METRICS}
        return {key: value for key, value in means.items() if value is not None}

    return Result(
        metrics("start"),
        metrics("end"),
        average([run.clusters for run in runs]),
        average([run.outliers for run in runs]),
        average([run.ari for run in runs]),
    )


def table(results: dict[tuple[str, int], Result]) -> str:
    """Markdown: one row per run, then each variant's mean."""
    lines = [
        "| variant | seed | start mAP | end mAP | gain | start R1 | end R1 | start mINP | end mINP "
        "| clusters | outliers | ARI |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for variant in VARIANTS:
        runs = [(seed, res) for (name, seed), res in sorted(results.items()) if name == variant.name]
        for seed, res in runs:
            lines.append(_row(f"{variant.label} ({variant.target})", str(seed), res))
        if runs:
            lines.append(_row(f"**{variant.label}**", "mean", _mean_result([r for _, r in runs])))
    return "\n".join(lines)


def report(
    out: Path, seeds: Sequence[int], argv: Sequence[str], doc: Path = DOC, data: Path = ROOT / "data"
) -> str:
    results = read_results(out, seeds, data)
    if not results:
        raise SystemExit(f"no finished runs under {out} (expected {out}/<variant>/seed<k>/results.json)")
    overrides = "\n".join(
        f"- {v.name}: `experiment={v.experiment} model.weights=<sources>/{v.source}/seed<k>/{CHECKPOINT}"
        + "".join(f" {o}" for o in v.overrides)
        + "`"
        for v in VARIANTS
    )
    shared = placeholder_overrides(common_overrides(0, 0))
    return write_report(SECTION, doc, Path(__file__).name, argv, shared, overrides, table(results))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_study_arguments(parser, EPOCHS, ROOT / "outputs" / "usl_study", [v.name for v in VARIANTS])
    parser.add_argument(
        "--sources",
        type=Path,
        default=ROOT / "outputs" / "cross_domain_study",
        help="benchmarks/cross_domain_study.py's runs (missing ones are trained there first)",
    )
    parser.add_argument("--source-epochs", type=int, default=cross_domain_study.EPOCHS)
    args = parser.parse_args(argv)
    argv = list(sys.argv[1:] if argv is None else argv)
    data = args.reuse_data or ROOT / "data"
    if not args.report_only:
        threads = threads_per_job(args.jobs)
        sources = missing_sources(args.variants, args.seeds, args.source_epochs, args.sources)
        train_all(sources, args.jobs, threads, args.reuse_data)
        done = read_results(args.out, args.seeds, data)
        planned = jobs(args.variants, args.seeds, args.epochs, args.out, args.sources)
        todo = [job for job in planned if args.rerun or (job.variant, job.seed) not in done]
        train_all(todo, args.jobs, threads, args.reuse_data)
    report(args.out, args.seeds, argv, data=data)


if __name__ == "__main__":
    main()
