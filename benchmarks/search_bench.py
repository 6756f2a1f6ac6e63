"""Recall, query time and build time of the FAISS gallery indexes against exact search.

    python benchmarks/search_bench.py [--rows 100000] [--dim 256] [--queries 1000] [--ids 5000] [--threads 2]
    python benchmarks/search_bench.py --rows 1000000 --nlist 4096      # a gallery of a million (minutes)

Features: L2-normalised synthetic re-id features, ``rows / ids`` gallery images per identity around its
identity centre; the centres lie in a 32-d subspace (re-id features have a low intrinsic dimension, so
identities crowd each other) and the within-identity noise is of the centres' scale, so an image's
nearest rows are its identity's and then neighbouring identities'. Queries are further images of the
gallery's identities. The metric is cosine, as the features of a run with ``eval.normalize`` rank.

Recall@k: the share of the exact top-k gallery rows (``reid.search.exact_top_k``) that an index returns in
its own top-k, over all queries (k = 1 and 10). Build: index construction (k-means training included);
query: wall time per query of a batch of all queries; size: the serialised index. Each approximate kind
is built once and queried at several search settings (``nprobe``, ``ef_search``). The table goes to
docs/benchmarks.md between the search_bench markers (``--no-doc`` only prints it).
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from doc_section import write_section  # noqa: E402

from reid.search import TopK, exact_top_k  # noqa: E402
from reid.search.faiss_index import (  # noqa: E402
    FlatSpec,
    HNSWSpec,
    IndexSpec,
    IVFFlatSpec,
    IVFPQSpec,
    build_index,
    import_faiss,
)

KS = (1, 10)


@dataclass
class Row:
    kind: str
    settings: str
    build_s: float
    query_ms: float
    size_mb: float
    recall: dict[int, float]


SUBSPACE = 32


def clustered_features(rows: int, queries: int, dim: int, ids: int, seed: int = 0):
    """``(queries, gallery)`` float32, L2-normalised: identity centre + noise (module docstring)."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(ids, SUBSPACE, generator=g) @ torch.randn(SUBSPACE, dim, generator=g)
    centres /= SUBSPACE**0.5  # each coordinate of unit variance, as the noise's

    def images(count: int) -> torch.Tensor:
        out = torch.empty(count, dim)
        for start in range(0, count, 65536):
            n = min(65536, count - start)
            who = torch.randint(0, ids, (n,), generator=g)
            out[start : start + n] = F.normalize(centres[who] + torch.randn(n, dim, generator=g), dim=1)
        return out

    return images(queries), images(rows)


def recall_at(found: torch.Tensor, exact: torch.Tensor, k: int) -> float:
    """|index top-k ∩ exact top-k| / k, averaged over queries (-1 slots, rows not found, never count)."""
    hits = (found[:, :k, None] == exact[:, None, :k]).any(dim=2).sum()
    return float(hits) / exact[:, :k].numel()


def timed(function, *args):
    start = time.perf_counter()
    result = function(*args)
    return result, time.perf_counter() - start


def measure(
    kind: str, settings: str, top: TopK, seconds: float, exact: TopK, build: float, size: float
) -> Row:
    queries = len(exact.indices)
    recall = {k: recall_at(top.indices, exact.indices, k) for k in KS}
    return Row(kind, settings, build, 1000 * seconds / queries, size, recall)


def sweep(
    query, gallery, exact: TopK, spec: IndexSpec, settings: list[dict[str, int]], train_sample: int
) -> list[Row]:
    """Build ``spec`` once (IVF k-means on ``train_sample`` rows), then query it at each ``settings``."""
    index, build = timed(lambda: build_index(gallery, spec, "cosine", train_sample=train_sample))
    size = import_faiss().serialize_index(index.index).nbytes / 2**20
    rows = []
    for changes in settings:
        tuned = index.tuned(**changes)
        top, seconds = timed(tuned.search, query, max(KS))
        shown = {**{k: v for k, v in vars(spec).items() if k not in changes}, **changes}
        text = ", ".join(f"{k} {v}" for k, v in shown.items()) or "-"
        rows.append(measure(spec.kind, text, top, seconds, exact, build, size))
        print(f"{spec.kind:>6} {text:<40} recall@1 {rows[-1].recall[1]:.3f} @10 {rows[-1].recall[10]:.3f}")
    return rows


def machine(threads: int) -> str:
    cpu = platform.processor() or platform.machine()
    load = os.getloadavg()[0]
    faiss = import_faiss()
    return (
        f"{cpu}, {os.cpu_count()} cores ({threads} threads), load {load:.1f} at start, "
        f"torch {torch.__version__}, faiss {faiss.__version__}"
    )


def markdown(rows: list[Row], args: argparse.Namespace, exact_ms: float, where: str) -> str:
    command = " ".join(["python benchmarks/search_bench.py", *sys.argv[1:]])
    lines = [
        "## Gallery search (`benchmarks/search_bench.py`)",
        "",
        f"{args.rows:,} gallery x {args.queries:,} queries, {args.dim}-d L2-normalised features of "
        f"{args.ids:,} identities ({args.rows // args.ids} gallery images each; centres in a {SUBSPACE}-d "
        "subspace, within-identity noise of their scale), cosine distance. IVF k-means on "
        f"{args.train_per_cell} rows per cell; IVF-PQ without re-ranking. Recall@k = share of the exact "
        "top-k found in the index's top-k. Exact search (`reid.search.exact_top_k`, torch, chunked): "
        f"{exact_ms:.2f} ms per query. "
        "Query time: one batch of all queries, per query; build: training + adding every row.",
        "",
        "| index | settings | recall@1 | recall@10 | query ms | build s | size MiB |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row.kind} | {row.settings} | {row.recall[1]:.3f} | {row.recall[10]:.3f} | "
            f"{row.query_ms:.3f} | {row.build_s:.1f} | {row.size_mb:.1f} |"
        )
    lines += ["", f"Machine: {where}. Command: `{command}`."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000, help="gallery size")
    parser.add_argument("--queries", type=int, default=1_000)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--ids", type=int, default=5_000, help="identities (clusters)")
    parser.add_argument("--nlist", type=int, help="IVF cells (default: about 4 sqrt(rows), a power of 2)")
    parser.add_argument(
        "--train-per-cell", type=int, default=64, help="IVF k-means rows per cell (FAISS asks >= 39)"
    )
    parser.add_argument("--pq-m", type=int, default=32, help="IVF-PQ sub-quantisers (must divide --dim)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch and FAISS threads")
    parser.add_argument("--no-doc", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = parser.parse_args()
    nlist = args.nlist or 2 ** round(math.log2(4 * math.sqrt(args.rows)))
    torch.set_num_threads(args.threads)
    import_faiss().omp_set_num_threads(args.threads)
    where = machine(args.threads)
    query, gallery = clustered_features(args.rows, args.queries, args.dim, args.ids)
    exact, exact_s = timed(exact_top_k, query, gallery, max(KS), "cosine")
    print(f"exact: {1000 * exact_s / args.queries:.2f} ms per query")
    sample = args.train_per_cell * nlist
    rows = sweep(query, gallery, exact, FlatSpec(), [{}], sample)
    ivf = IVFFlatSpec(nlist=nlist)
    rows += sweep(query, gallery, exact, ivf, [{"nprobe": p} for p in (1, 4, 16, 64)], sample)
    pq = IVFPQSpec(nlist=nlist, m=args.pq_m, nbits=8)
    rows += sweep(query, gallery, exact, pq, [{"nprobe": p} for p in (16, 64)], sample)
    rows += sweep(query, gallery, exact, HNSWSpec(m=32), [{"ef_search": e} for e in (16, 64)], sample)
    text = markdown(rows, args, 1000 * exact_s / args.queries, where)
    print(text)
    if not args.no_doc:
        write_section("search_bench", text)


if __name__ == "__main__":
    main()
