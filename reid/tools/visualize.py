"""Pictures of a trained run: attention maps of any images, and the ranked lists of its test data again.

    python -m reid.tools.visualize attention outputs/pass_demo_finetune/<run> img1.jpg crops/ --out maps/
    python -m reid.tools.visualize attention outputs/pass_demo/<run> img1.jpg --heads  # each head
    python -m reid.tools.visualize ranked outputs/demo/<run> --worst 8 --best 4 --top-k 15

``attention``: per image, ``attention_<name>_epoch<k>.png`` (``k``: the epochs the checkpoint holds; the
checkpoint the run's test scored, as its ranked lists) with the image, the [CLS] map and one map per part
token of a ViT block (``reid.visualization.attention``: the last, or ``--layer``; heads averaged, or
``--head``), a colour bar, and a line per image with each part token's share of attention inside its band
(PASS: top / middle / bottom half; an even spread scores 0.5), which says whether the part tokens look at
their regions. ``--heads`` draws the [CLS] map of every head side by side instead
(``attention_heads_*.png``, DINO's picture). The run may be a self-supervised pretraining run (DINO,
PASS: its teacher) or a fine-tuned one; a CNN run (BoT, IBN-a, SNR) gets torchreid's activation map
(``activation_*.png``). Images: files, folders (any depth), globs or list files. SIE models are run
camera-free (the mean camera embedding).

``ranked``: rebuilds the run's model (``reid.inference.load_trained_model``: its best checkpoint, else
``last.ckpt``, or ``--checkpoint``) and datamodule (``<run>/.hydra/config.yaml``: its data must be on
disk, where the run read it: a relative ``paths.data_dir`` is of the folder the run started in;
``--data-dir`` replaces it; a missing synthetic dataset is an error, never generated), tests it once
with :class:`RankedListPictures`, and redraws the ranked lists, the CMC curve, ``map_per_epoch.png``
(from ``<run>/csv/metrics.csv``) and ``index.html``.

Both write into ``--out`` (default ``<run>/pictures``) and refresh its ``index.html``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from reid.callbacks.ranked_list import MAP_CURVE, RankedListPictures
from reid.config import register_resolvers
from reid.data.image_dataset import read_image
from reid.data.synthetic import existing_trees_only
from reid.data.transforms import ReIDTransforms
from reid.dataset_options import resolve_dataset_lists
from reid.inference import TrainedModel, add_run_arguments, load_trained_model
from reid.inference.device import parse_device
from reid.inference.image_files import collect_images
from reid.inference.trained_model import find_run_files, read_checkpoint, read_run_config
from reid.tools.export_backbone import build_backbone, extract_backbone
from reid.visualization.attention import (
    activation_map,
    band_fractions,
    band_name,
    block_attention,
    head_attention,
    render_activation,
    render_attention,
    render_head_attention,
)
from reid.visualization.curves import read_map_history, save_map_curve
from reid.visualization.index_html import write_index


@dataclass(frozen=True)
class AttentionReport:
    """One image's picture and, per part token, its share of attention inside its band."""

    image: str
    picture: Path
    band_fractions: tuple[float, ...]


def _run_folder(config: Path) -> Path:
    if config.parent.name != ".hydra":
        raise ValueError(
            f"the run config {config} is not in a run folder (<run>/.hydra/config.yaml): pass --out"
        )
    return config.parent.parent


def _picture_names(paths: Sequence[str], kind: str = "attention", epoch: int | None = None) -> list[str]:
    """``<kind>_<file stem>[_epoch<k>].png``, numbered when two images share a stem."""
    names: list[str] = []
    seen: dict[str, int] = {}
    suffix = f"_epoch{epoch}" if epoch is not None else ""
    for path in paths:
        stem = Path(path).stem
        seen[stem] = seen.get(stem, 0) + 1
        names.append(f"{kind}_{stem}" + (f"_{seen[stem]}" if seen[stem] > 1 else "") + f"{suffix}.png")
    return names


@dataclass(frozen=True)
class ViewedModel:
    """What the pictures are drawn from: a backbone in eval mode and its test transform."""

    backbone: Any  # the trained model's backbone: a ViT (blocks, attention) or a CNN
    transform: Any
    image_size: tuple[int, int]
    checkpoint: Path
    config: Path
    epoch: int


def view_model(run: str, checkpoint: str | None, device: str) -> ViewedModel:
    """The backbone of a run: a retrieval run's (``load_trained_model``: the checkpoint its test scored),
    or the teacher of a self-supervised pretraining run (DINO, PASS; its crops' normalisation)."""
    files = find_run_files(run, checkpoint)
    register_resolvers()
    cfg = OmegaConf.load(files.config)
    epoch = int(read_checkpoint(files.checkpoint).get("epoch", -1)) + 1
    if str(OmegaConf.select(cfg, "model._target_", default="")).endswith("SSLPretrainTask"):
        state = extract_backbone(read_checkpoint(files.checkpoint)["state_dict"], "teacher")
        height, width = (int(v) for v in OmegaConf.select(cfg, "data.augment.global_size"))
        size = (height, width)
        backbone = build_backbone(state, size).to(device).eval()
        mean = tuple(float(v) for v in OmegaConf.select(cfg, "data.augment.mean", default=[0.5] * 3))
        std = tuple(float(v) for v in OmegaConf.select(cfg, "data.augment.std", default=[0.5] * 3))
        transform = ReIDTransforms(test_interpolation="bicubic", erasing=None).test(size, mean, std)
        return ViewedModel(backbone, transform, size, files.checkpoint, files.config, epoch)
    model = load_trained_model(run, checkpoint, device=device)
    return ViewedModel(
        model.task.net.backbone,
        model.test_transform(),
        model.image_size,
        files.checkpoint,
        files.config,
        epoch,
    )


def attention(
    model: ViewedModel,
    images: Sequence[str],
    out: Path,
    layer: int = -1,
    head: int | None = None,
    per_head: bool = False,
) -> list[AttentionReport]:
    """Draw and print the attention of each image (module docstring); refreshes ``out/index.html``."""
    backbone, transform = model.backbone, model.transform
    (height, width) = model.image_size
    device = next(backbone.parameters()).device
    is_vit = hasattr(backbone, "num_prefix_tokens")
    if not is_vit and (per_head or head is not None or layer != -1):
        raise ValueError(
            f"{model.checkpoint}: --layer/--head/--heads choose ViT attention; this run's backbone "
            f"({type(backbone).__name__}) is drawn as its activation map"
        )
    out.mkdir(parents=True, exist_ok=True)
    kind = "activation" if not is_vit else ("attention_heads" if per_head else "attention")
    reports = []
    for path, name in zip(images, _picture_names(images, kind, model.epoch), strict=True):
        image = read_image(path)
        batch = transform(image)[None].to(device)
        shown = image.resize((width, height))
        shares = torch.zeros(0)
        header = f"{Path(path).name}: {model.checkpoint.name} (epoch {model.epoch})"
        if not is_vit:
            picture = render_activation(
                shown, activation_map(backbone, batch)[0].cpu(), f"{header}, last stage"
            )
        elif per_head:
            block = _block_name(backbone, layer)
            picture = render_head_attention(
                shown, head_attention(backbone, batch, layer)[0].cpu(), f"{header}, {block}"
            )
        else:
            maps = block_attention(backbone, batch, layer=layer, head=head)
            parts = maps.parts[0].cpu()
            shares = band_fractions(parts[None], height)[0] if parts.shape[0] else shares
            heads = backbone.blocks[layer].attn.num_heads
            chosen = f"head {head}" if head is not None else f"mean of {heads} heads"
            header = f"{header}, {_block_name(backbone, layer)}, {chosen}"
            picture = render_attention(shown, maps.cls[0].cpu(), parts, shares, height, header)
        picture.save(out / name)
        reports.append(AttentionReport(path, out / name, tuple(float(v) for v in shares)))
        described = ", ".join(
            f"part {r + 1} ({band_name(r, len(shares), height)}) {float(v):.2f}" for r, v in enumerate(shares)
        )
        what = described or ("activation map" if not is_vit else "no part tokens ([CLS] only)")
        print(f"{path}: {what} -> {out / name}")
    write_index(out)
    return reports


def _block_name(backbone: Any, layer: int) -> str:
    depth = len(backbone.blocks)
    return f"block {layer % depth + 1} of {depth}"


def run_data_dir(cfg: DictConfig, config: Path) -> str:
    """The run's ``paths.data_dir`` as an absolute path: a relative one (the default ``./data``) is of the
    folder the run was started from (``hydra.runtime.cwd`` in ``<run>/.hydra/hydra.yaml``), not of the
    folder the tool runs in."""
    data_dir = Path(str(OmegaConf.select(cfg, "paths.data_dir", default="data")))
    if data_dir.is_absolute():
        return str(data_dir)
    hydra_file = config.parent / "hydra.yaml"
    started = (
        OmegaConf.select(OmegaConf.load(hydra_file), "hydra.runtime.cwd") if hydra_file.is_file() else None
    )
    if started is None:
        raise ValueError(
            f"{config}: paths.data_dir={data_dir} is relative and {hydra_file} does not say which folder the "
            "run started in; pass --data-dir"
        )
    return str((Path(started) / data_dir).resolve())


def ranked(
    model: TrainedModel, out: Path, worst: int, best: int, top_k: int, data_dir: str | None
) -> list[Path]:
    """Test the run's model on its test data with the ranked-list callback; the pictures written."""
    cfg = read_run_config(model.files.config)
    with open_dict(cfg):
        cfg.paths.data_dir = data_dir if data_dir is not None else run_data_dir(cfg, model.files.config)
    resolve_dataset_lists(cfg)
    with existing_trees_only():  # a tool reads the run's data; it never renders a synthetic set
        datamodule = instantiate(cfg.data)
        datamodule.setup("test")
    start = time.time()
    # a checkpoint is written at the end of (or inside) epoch `epoch`, 0-based: epoch + 1 are (being) done
    checkpoint_epoch = int(read_checkpoint(model.files.checkpoint).get("epoch", -1)) + 1
    device = next(model.task.parameters()).device
    trainer = L.Trainer(
        accelerator="gpu" if device.type == "cuda" else "cpu",
        devices=1,
        logger=False,
        callbacks=[RankedListPictures(out, worst=worst, best=best, top_k=top_k, epoch=checkpoint_epoch)],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.test(model.task, datamodule=datamodule, verbose=False)  # the task holds the checkpoint's weights
    run_config = model.files.config
    metrics = run_config.parent.parent / "csv" / "metrics.csv" if run_config.parent.name == ".hydra" else None
    history = read_map_history(metrics) if metrics is not None and metrics.is_file() else {}
    if history:
        save_map_curve(history, out / MAP_CURVE)
    write_index(out)
    written = sorted(p for p in out.glob("*.png") if p.stat().st_mtime >= start - 1.0)
    for path in written:
        print(path)
    return written


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m reid.tools.visualize", description=__doc__.split("\n\n")[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for name, text in (("attention", "attention maps of images"), ("ranked", "ranked lists of the test set")):
        sub = commands.add_parser(name, help=text)
        add_run_arguments(sub, moved_checkpoints=False)
        if name == "attention":
            sub.add_argument("images", nargs="+", help="images: files, folders, globs (quoted) or list files")
            sub.add_argument("--layer", type=int, default=-1, help="ViT block (0-based; -1: the last)")
            sub.add_argument("--head", type=int, help="one attention head (default: the mean of all)")
            sub.add_argument(
                "--heads",
                action="store_true",
                help="the [CLS] map of every head side by side (DINO's picture)",
            )
        else:
            sub.add_argument("--worst", type=int, default=4, help="lowest-AP queries drawn")
            sub.add_argument("--best", type=int, default=4, help="highest-AP queries drawn")
            sub.add_argument("--top-k", type=int, default=10, help="gallery images per query")
            sub.add_argument("--data-dir", help="replaces the run config's paths.data_dir")
        sub.add_argument("--out", type=Path, help="pictures folder (default: <run>/pictures)")
        sub.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    return parser


def main(argv: Sequence[str] | None = None) -> list[AttentionReport] | list[Path]:
    args = _parser().parse_args(argv)
    parse_device(args.device)  # before anything is read
    if args.command == "attention":
        images = [path for source in args.images for path in collect_images(source)]  # checked first
        viewed = view_model(args.run, args.checkpoint, args.device)
        out = args.out if args.out is not None else _run_folder(viewed.config) / "pictures"
        return attention(viewed, images, out, args.layer, args.head, args.heads)
    model = load_trained_model(args.run, args.checkpoint, device=args.device)
    out = args.out if args.out is not None else _run_folder(model.files.config) / "pictures"
    return ranked(model, out, args.worst, args.best, args.top_k, args.data_dir)


if __name__ == "__main__":
    from reid.tools.cli import run_tool

    run_tool(main, "python -m reid.tools.visualize")
