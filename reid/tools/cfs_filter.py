"""Conditional filtering (CFS) of a pretraining set (TransReID-SSL, Luo et al. 2021, Sec. 3.2).

    python -m reid.tools.cfs_filter --source-ckpt lup_dino.safetensors --target-ckpt market_ft.ckpt \
        --images data/LUPerson --keep 2508146 --out data/LUPerson/cfs_keep.txt

Every source image x_i is embedded by a source proxy model theta_s (pretrained on the source set,
e.g. LUPerson) and a target proxy model theta_t (fine-tuned on the target set); its score is

    c_i = cos(theta_s(x_i), theta_t(x_i))

and the N images with the highest scores are kept: those the target-adapted model still sees the
way the source model does. The keep-list holds one path per line relative to the image folder, best
first, the format ``load_luperson(root, keep_list=...)`` reads. The official repository ships only
the resulting list; this is the procedure as code. Features are the backbones' [CLS] tokens.
Checkpoints are exported backbones (``reid.tools.export_backbone``), SSL checkpoints (teacher), or
supervised checkpoints whose backbone sits under ``--target-prefix``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader

from reid.data.datasets.luperson import load_luperson, resolve_folder
from reid.data.image_dataset import ImageDataset
from reid.data.transforms import ReIDTransforms
from reid.models.vit import VisionTransformer
from reid.tools.export_backbone import build_backbone, extract_backbone, load_state


def cfs_scores(source: Tensor, target: Tensor) -> Tensor:
    """c_i = cos(source_i, target_i) for feature rows [N, D] of the two proxy models."""
    if source.shape != target.shape:
        raise ValueError(
            f"cfs_scores: source features {tuple(source.shape)} and target features {tuple(target.shape)} "
            "must have the same shape (use proxy models with the same feature size)"
        )
    return F.cosine_similarity(source.double(), target.double(), dim=1)


def top_n(scores: Tensor, n: int) -> list[int]:
    """Indices of the ``n`` highest scores, best first; ties keep the original order."""
    if not 0 < n <= scores.numel():
        raise ValueError(f"cfs_filter: --keep must lie in [1, {scores.numel()}] (number of images), got {n}")
    order = torch.sort(scores, descending=True, stable=True).indices
    return order[:n].tolist()


def load_proxy(
    path: str | Path, prefix: str | None, img_size: Sequence[int], stride: int | None
) -> VisionTransformer:
    """A ViT proxy model from a checkpoint; ``prefix`` selects its backbone keys (None: auto)."""
    state = load_state(path)
    if prefix:
        state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        if not state:
            raise ValueError(f"cfs_filter: no keys with prefix {prefix!r} in {path}")
    return build_backbone(extract_backbone(state), img_size, stride).eval()


@torch.no_grad()
def embed_pairs(
    source: VisionTransformer, target: VisionTransformer, loader: DataLoader, device: torch.device
) -> tuple[Tensor, Tensor]:
    """[CLS] features of both proxies for every image of ``loader``, in loader order."""
    source, target = source.to(device), target.to(device)
    feats_s, feats_t = [], []
    for batch in loader:
        images = batch["image"].to(device, non_blocking=True)
        feats_s.append(source.forward_features(images)[:, 0].float().cpu())
        feats_t.append(target.forward_features(images)[:, 0].float().cpu())
    return torch.cat(feats_s), torch.cat(feats_t)


def run(args: argparse.Namespace) -> list[str]:
    """Score the images of ``args.images`` and write the keep-list; returns the kept relative paths."""
    folder = resolve_folder(args.images)
    records = load_luperson(args.images).train
    img_size = tuple(args.img_size)
    source = load_proxy(args.source_ckpt, args.source_prefix, img_size, args.stride)
    target = load_proxy(args.target_ckpt, args.target_prefix, img_size, args.stride)
    transform = ReIDTransforms().test(img_size, args.pixel_mean, args.pixel_std)
    loader = DataLoader(
        ImageDataset(records, transform), batch_size=args.batch_size, num_workers=args.num_workers
    )
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    scores = cfs_scores(*embed_pairs(source, target, loader, device))
    kept_index = top_n(scores, args.keep)
    kept = [Path(records[i].path).relative_to(folder).as_posix() for i in kept_index]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(f"{p}\n" for p in kept))
    lowest = scores[kept_index[-1]].item()
    print(f"cfs_filter: kept {len(kept)} of {len(records)} images (scores >= {lowest:.4f}) -> {out}")
    return kept


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m reid.tools.cfs_filter", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--source-ckpt", required=True, help="source proxy (e.g. DINO on LUPerson)")
    parser.add_argument("--target-ckpt", required=True, help="target proxy (fine-tuned on the target set)")
    parser.add_argument("--source-prefix", default=None, help="key prefix of the source backbone (auto)")
    parser.add_argument(
        "--target-prefix", default=None, help="key prefix of the target backbone, e.g. model.backbone."
    )
    parser.add_argument("--images", required=True, help="image folder (LUPerson root)")
    parser.add_argument("--keep", type=int, required=True, help="number of images to keep")
    parser.add_argument("--out", required=True, help="keep-list file to write")
    parser.add_argument("--img-size", type=int, nargs=2, default=(256, 128), metavar=("H", "W"))
    parser.add_argument("--stride", type=int, default=None, help="patch stride of both proxies (inferred)")
    parser.add_argument("--pixel-mean", type=float, nargs=3, default=(0.5, 0.5, 0.5))
    parser.add_argument("--pixel-std", type=float, nargs=3, default=(0.5, 0.5, 0.5))
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--num-workers", type=int, default=8)
    parser.add_argument("--device", default=None, help="cpu / cuda (default: cuda when available)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    run(parse_args(argv))


if __name__ == "__main__":
    from reid.tools.cli import run_tool

    run_tool(main, "python -m reid.tools.cfs_filter")
