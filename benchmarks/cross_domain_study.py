"""The cross-domain study on CPU: train on synthetic domain A, test on domain B, with and without SNR / IBN.

Every variant trains the tiny ResNet with the BoT recipe (center loss included) from scratch on the
synthetic Market people (domain A, ``data=synthetic``) for the same number of epochs and seeds, and is
tested on the synthetic Duke people (domain B: other cameras, lighting, backgrounds and identities,
``reid/data/synthetic/duke_tree.py``) and on A's own query/gallery, in one run
(``data.test_datasets=[synthetic_duke, synthetic]``):

* ``bot``: ``experiment=bot_demo_a2b`` (plain tiny ResNet);
* ``ibn``: ``experiment=bot_ibn_demo_a2b`` (IBN-a: instance norm in half of the first BN of stages 1-3);
* ``snr``: ``experiment=snr_demo_a2b`` (SNR after each stage + the dual causality loss);
* ``oracle``: the plain model trained and tested on B itself (``data=synthetic_duke``), the in-domain
  reference: how much of B's score the domain shift costs.

It writes the ``cross_domain_study`` section of ``docs/cross_domain.md``: final mAP / R1 / mINP on B and on
A per variant and seed, each variant's mean, and the command.

    python benchmarks/cross_domain_study.py [--epochs E] [--seeds 0 1] [--jobs 2] [--reuse-data data]

Runs live in ``--out`` (``outputs/cross_domain_study/<variant>/seed<k>``); finished ones (with a
``results.json``) are read, not retrained, unless ``--rerun``; ``--report-only`` trains nothing.
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

from omegaconf import OmegaConf
from study_runs import (
    ROOT,
    Job,
    add_study_arguments,
    mean,
    placeholder_overrides,
    run_dir,
    threads_per_job,
    train_all,
    write_report,
)

from reid.config import CONFIG_DIR
from reid.results import by_target

DOC = ROOT / "docs" / "cross_domain.md"
SECTION = "cross_domain_study"
TARGET, SOURCE = "synthetic_duke", "synthetic"
METRICS = ("mAP", "R1", "mINP")
EPOCHS = int(OmegaConf.load(CONFIG_DIR / "experiment" / "bot_demo_a2b.yaml").trainer.max_epochs)


@dataclass(frozen=True)
class Variant:
    name: str
    label: str
    overrides: tuple[str, ...]


VARIANTS = (
    Variant("bot", "BoT (tiny ResNet)", ("experiment=bot_demo_a2b",)),
    Variant("ibn", "BoT + IBN-a", ("experiment=bot_ibn_demo_a2b",)),
    Variant("snr", "BoT + SNR + causality", ("experiment=snr_demo_a2b",)),
    Variant(
        "oracle",
        "BoT trained on B (in-domain)",
        ("experiment=bot_demo_a2b", "data=synthetic_duke", "data.test_datasets=null"),
    ),
)


def common_overrides(seed: int, epochs: int) -> list[str]:
    """What every run of the study shares besides its variant's overrides."""
    return [
        f"seed={seed}",
        f"trainer.max_epochs={epochs}",
        "data.num_workers=0",  # load in the run's own thread: two jobs share two cores
        "callbacks.progress_bar=null",
    ]


def jobs(names: Sequence[str], seeds: Sequence[int], epochs: int, out: Path) -> list[Job]:
    chosen = [v for v in VARIANTS if v.name in names]
    return [
        Job(v.name, seed, run_dir(out, v.name, seed), (*v.overrides, *common_overrides(seed, epochs)))
        for v in chosen
        for seed in seeds
    ]


def read_results(out: Path, seeds: Sequence[int]) -> dict[tuple[str, int], dict[str, dict[str, float]]]:
    """``{(variant, seed): {target: {metric: value}}}`` of the finished runs under ``out``."""
    found = {}
    for variant in VARIANTS:
        for seed in seeds:
            path = run_dir(out, variant.name, seed) / "results.json"
            if path.exists():
                found[(variant.name, seed)] = by_target(json.loads(path.read_text()).get("test"))
    return found


def _cell(value: float | None) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.2f}"


def _row(label: str, seed: str, targets: dict[str, dict[str, float | None]]) -> str:
    b, a = targets.get(TARGET, {}), targets.get(SOURCE, {})
    cells = [_cell(b.get(k)) for k in METRICS] + [_cell(a.get(k)) for k in METRICS[:2]]
    return f"| {label} | {seed} | " + " | ".join(cells) + " |"


def table(results: dict[tuple[str, int], dict[str, dict[str, float]]]) -> str:
    """Markdown: one row per run, then each variant's mean. The oracle is tested on B only (its
    training domain), so its A columns stay empty."""
    lines = [
        "| variant | seed | B mAP | B R1 | B mINP | A mAP | A R1 |",
        "|---|---|---|---|---|---|---|",
    ]
    for variant in VARIANTS:
        runs = [(seed, res) for (name, seed), res in sorted(results.items()) if name == variant.name]
        for seed, res in runs:
            lines.append(_row(variant.label, str(seed), _normalise(res)))
        if runs:
            lines.append(_row(f"**{variant.label}**", "mean", _means([_normalise(r) for _, r in runs])))
    return "\n".join(lines)


def _means(runs: Sequence[dict[str, dict[str, float]]]) -> dict[str, dict[str, float | None]]:
    """Per target and metric, the mean over the runs that have it."""

    def values(target: str, key: str) -> list[float]:
        return [run[target][key] for run in runs if key in run.get(target, {})]

    return {target: {key: mean(values(target, key)) for key in METRICS} for target in (TARGET, SOURCE)}


def _normalise(result: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """A one-target result (the oracle: trained and tested on B) is B's."""
    return {TARGET: result[""]} if set(result) == {""} else result


def report(out: Path, seeds: Sequence[int], argv: Sequence[str], doc: Path = DOC) -> str:
    results = read_results(out, seeds)
    if not results:
        raise SystemExit(f"no finished runs under {out} (expected {out}/<variant>/seed<k>/results.json)")
    overrides = "\n".join(f"- {v.name}: `{' '.join(v.overrides)}`" for v in VARIANTS)
    shared = placeholder_overrides(common_overrides(0, 0))
    return write_report(SECTION, doc, Path(__file__).name, argv, shared, overrides, table(results))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_study_arguments(parser, EPOCHS, ROOT / "outputs" / "cross_domain_study", [v.name for v in VARIANTS])
    args = parser.parse_args(argv)
    argv = list(sys.argv[1:] if argv is None else argv)
    if not args.report_only:
        done = read_results(args.out, args.seeds)
        planned = jobs(args.variants, args.seeds, args.epochs, args.out)
        todo = [job for job in planned if args.rerun or (job.variant, job.seed) not in done]
        train_all(todo, args.jobs, threads_per_job(args.jobs), args.reuse_data)
    report(args.out, args.seeds, argv)


if __name__ == "__main__":
    main()
