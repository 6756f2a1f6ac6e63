"""Time and peak memory of one Cluster Contrast clustering round at MSMT17 scale, for each clustering.

    python benchmarks/cluster_bench.py [--images 32621] [--identities 1041] [--dim 384] [--no-doc]

One round as the USL task runs it at each epoch start (``reid.tasks.cluster_contrast``), on synthetic
L2-normalised features with identity and camera structure (MSMT17 train: 32,621 images of 1,041
identities, 15 cameras, 384-d ViT-S features):

* ``jaccard_dbscan``: the sparse k-reciprocal Jaccard graph (k1 30, k2 6, pairs within eps stored),
  DBSCAN (eps 0.7, min_samples 4: msmt_usl.sh). The official ``compute_jaccard_distance`` holds dense
  N x N float32 matrices, V and the distances: 2 x 4.3 GB at this scale, plus the N x N DBSCAN input;
* ``knn_infomap``: the cosine 15-NN links within similarity 0.5, Infomap, modules of <= 4 images out
  (the official Infomap script's values);

then the cluster centroids. ARI: agreement of the pseudo labels with the synthetic identities (outliers
as one label). Peak RSS is the process high-water mark (VmHWM, reset through /proc/self/clear_refs once
the features exist). The result is printed and written to docs/benchmarks.md between the cluster_bench
markers (``--no-doc``: printed only).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from sklearn.metrics import adjusted_rand_score

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from doc_section import write_section  # noqa: E402
from process_memory import peak_rss, reset_peak_rss  # noqa: E402

from reid.clustering import (  # noqa: E402
    JaccardDBSCAN,
    KnnInfomap,
    PseudoLabels,
    cluster_centroids,
    dbscan,
    infomap_modules,
    jaccard_graph,
    knn_links,
    module_labels,
)


def synthetic(
    images: int, identities: int, dim: int, cameras: int = 15, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-identity centre + per-camera offset + noise, L2-normalised; identities of ~equal size.
    Returns the features and the identities."""
    g = torch.Generator().manual_seed(seed)
    pid = torch.arange(images) % identities
    cam = torch.randint(cameras, (images,), generator=g)
    centres = torch.randn(identities, dim, generator=g)
    offsets = 0.5 * torch.randn(cameras, dim, generator=g)
    features = centres[pid] + offsets[cam] + 0.8 * torch.randn(images, dim, generator=g)
    return F.normalize(features, dim=1), pid


def dbscan_steps(features: torch.Tensor, config: JaccardDBSCAN) -> tuple[int, Callable[[], PseudoLabels]]:
    """The Jaccard graph (timed as the graph), and DBSCAN on it."""
    graph = jaccard_graph(features, config.k1, config.k2, max_distance=config.eps)
    return graph.nnz, lambda: dbscan(graph, config.eps, config.min_samples)


def infomap_steps(features: torch.Tensor, config: KnnInfomap) -> tuple[int, Callable[[], PseudoLabels]]:
    """The kNN links (timed as the graph), and Infomap on them."""
    links = knn_links(features, config.k1, config.eps)
    return links.source.size, lambda: module_labels(infomap_modules(links), links.has_own_link, config.k2)


def one_round(features: torch.Tensor, identities: torch.Tensor, steps: Callable, config: object) -> dict:
    input_rss = reset_peak_rss()
    tic = time.perf_counter()
    edges, cluster = steps(features, config)
    graph_s = time.perf_counter() - tic
    found = cluster()
    cluster_centroids(features, torch.from_numpy(found.labels))
    return {
        "seconds": time.perf_counter() - tic,
        "graph_seconds": graph_s,
        "peak_rss_gib": peak_rss() / 2**30,
        "input_rss_gib": input_rss / 2**30,
        "edges": edges,
        "clusters": found.num_clusters,
        "outliers": found.num_outliers,
        "ari": adjusted_rand_score(identities.numpy(), found.labels),
    }


ROUNDS = {
    "DBSCAN on the Jaccard graph (k1 30, k2 6, eps 0.7, min_samples 4)": (
        dbscan_steps,
        JaccardDBSCAN(eps=0.7, min_samples=4, k1=30, k2=6),
    ),
    "Infomap on the cosine kNN graph (k1 15, eps 0.5, k2 4)": (
        infomap_steps,
        KnnInfomap(eps=0.5, k1=15, k2=4),
    ),
}


def report(rows: dict[str, dict], args: argparse.Namespace, machine: str) -> str:
    dense_gib = 2 * 4 * args.images**2 / 2**30
    lines = [
        f"| {name} | {row['seconds']:.1f} ({row['graph_seconds']:.1f}) | {row['peak_rss_gib']:.2f} "
        f"({row['input_rss_gib']:.2f}) | {row['edges']:,} | {row['clusters']:,} / {row['outliers']:,} | "
        f"{row['ari']:.3f} |"
        for name, row in rows.items()
    ]
    return "\n".join(
        [
            "## Cluster Contrast clustering round (`benchmarks/cluster_bench.py`)",
            "",
            f"One pseudo-labelling round on {args.images:,} synthetic {args.dim}-d features of "
            f"{args.identities:,} identities (MSMT17 train: 32,621 of 1,041), then the centroids. CPU, "
            f"{machine}; `{' '.join(['python benchmarks/cluster_bench.py', *sys.argv[1:]])}`. Graph: the "
            "Jaccard pairs within eps, or the kNN links; ARI: the pseudo labels against the identities.",
            "",
            "| clustering | seconds (graph) | peak RSS GiB (input) | graph entries | clusters / outliers "
            "| ARI |",
            "|---|---|---|---|---|---|",
            *lines,
            "",
            f"For the DBSCAN row, the official dense `compute_jaccard_distance` holds V and the distances as "
            f"N x N float32: {dense_gib:.1f} GiB at this N before DBSCAN.",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=32621)
    parser.add_argument("--identities", type=int, default=1041)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--no-doc", action="store_true", help="print only; leave docs/benchmarks.md as it is")
    args = parser.parse_args()
    load = os.getloadavg()[0]
    machine = f"{platform.machine()}, {torch.get_num_threads()} torch threads, load {load:.1f} at start"
    features, identities = synthetic(args.images, args.identities, args.dim)
    rows = {name: one_round(features, identities, steps, config) for name, (steps, config) in ROUNDS.items()}
    text = report(rows, args, machine)
    print(text)
    if not args.no_doc:
        write_section("cluster_bench", text)


if __name__ == "__main__":
    main()
