"""Time and peak memory of one Cluster Contrast clustering round at MSMT17 scale.

    python benchmarks/cluster_bench.py [--images 32621] [--identities 1041] [--dim 384] [--no-doc]

One round as the USL task runs it at each epoch start (``reid.tasks.cluster_contrast``): the sparse
k-reciprocal Jaccard graph (k1 30, k2 6, pairs within eps stored), DBSCAN (eps 0.7, min_samples 4:
msmt_usl.sh) and the cluster centroids, on synthetic L2-normalised features with identity and camera
structure (MSMT17 train: 32,621 images of 1,041 identities, 15 cameras, 384-d ViT-S features). The
official ``compute_jaccard_distance`` holds dense N x N float32 matrices, V and the distances: 2 x
4.3 GB at this scale, plus the N x N DBSCAN input. Peak RSS is the process high-water mark (VmHWM,
reset through /proc/self/clear_refs once the features exist). The result is printed and written to
docs/benchmarks.md between the cluster_bench markers (``--no-doc``: printed only).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from doc_section import write_section  # noqa: E402

from reid.clustering import ClusteringConfig, cluster_centroids, dbscan, jaccard_graph  # noqa: E402


def synthetic(images: int, identities: int, dim: int, cameras: int = 15, seed: int = 0) -> torch.Tensor:
    """Per-identity centre + per-camera offset + noise, L2-normalised; identities of ~equal size."""
    g = torch.Generator().manual_seed(seed)
    pid = torch.arange(images) % identities
    cam = torch.randint(cameras, (images,), generator=g)
    centres = torch.randn(identities, dim, generator=g)
    offsets = 0.5 * torch.randn(cameras, dim, generator=g)
    return F.normalize(centres[pid] + offsets[cam] + 0.8 * torch.randn(images, dim, generator=g), dim=1)


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def one_round(features: torch.Tensor, config: ClusteringConfig) -> dict:
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    input_rss = _status("VmRSS:")
    tic = time.perf_counter()
    graph = jaccard_graph(features, config.k1, config.k2, max_distance=config.eps)
    jaccard_s = time.perf_counter() - tic
    found = dbscan(graph, config.eps, config.min_samples)
    cluster_centroids(features, torch.from_numpy(found.labels))
    return {
        "seconds": time.perf_counter() - tic,
        "jaccard_seconds": jaccard_s,
        "peak_rss_gib": _status("VmHWM:") / 2**30,
        "input_rss_gib": input_rss / 2**30,
        "stored_pairs": graph.nnz,
        "clusters": found.num_clusters,
        "outliers": found.num_outliers,
    }


def report(row: dict, args: argparse.Namespace, machine: str) -> str:
    dense_gib = 2 * 4 * args.images**2 / 2**30
    return "\n".join(
        [
            "## Cluster Contrast clustering round (`benchmarks/cluster_bench.py`)",
            "",
            f"One pseudo-labelling round on {args.images:,} synthetic {args.dim}-d features of "
            f"{args.identities:,} identities (MSMT17 train: 32,621 of 1,041): sparse Jaccard graph (k1 30, "
            "k2 6), DBSCAN (eps 0.7, min_samples 4), centroids. CPU, "
            f"{machine}; `{' '.join(['python benchmarks/cluster_bench.py', *sys.argv[1:]])}`.",
            "",
            "| seconds (Jaccard) | peak RSS GiB (input) | stored pairs | clusters / outliers |",
            "|---|---|---|---|",
            f"| {row['seconds']:.1f} ({row['jaccard_seconds']:.1f}) | {row['peak_rss_gib']:.2f} "
            f"({row['input_rss_gib']:.2f}) | {row['stored_pairs']:,} | "
            f"{row['clusters']:,} / {row['outliers']:,} |",
            "",
            f"The official dense `compute_jaccard_distance` holds V and the distances as N x N float32: "
            f"{dense_gib:.1f} GiB at this N before DBSCAN.",
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
    features = synthetic(args.images, args.identities, args.dim)
    row = one_round(features, ClusteringConfig(eps=0.7, min_samples=4, k1=30, k2=6))
    text = report(row, args, machine)
    print(text)
    if not args.no_doc:
        write_section("cluster_bench", text)


if __name__ == "__main__":
    main()
