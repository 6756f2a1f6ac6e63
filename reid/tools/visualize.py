"""Pictures of a trained run: attention maps of any images, and the ranked lists of its test data again.

    python -m reid.tools.visualize attention outputs/pass_demo_finetune/<run> img1.jpg crops/ --out maps/
    python -m reid.tools.visualize ranked outputs/demo/<run> --worst 8 --best 4 --top-k 15

``attention``: per image, ``attention_<name>.png`` with the image, the [CLS] map and one map per part token
of the last ViT block (``reid.visualization.attention``), and a line per image with each part token's
share of attention inside its band (PASS: top / middle / bottom half; an even spread scores 0.5), which
says whether the part tokens look at their regions. Images: files, folders (any depth), globs or list
files. SIE models are run camera-free (the mean camera embedding).

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

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from reid.callbacks.ranked_list import MAP_CURVE, RankedListPictures
from reid.config import register_resolvers
from reid.data.image_dataset import read_image
from reid.data.synthetic import existing_trees_only
from reid.dataset_options import resolve_dataset_lists
from reid.inference import TrainedModel, add_run_arguments, load_trained_model
from reid.inference.image_files import collect_images
from reid.inference.trained_model import read_checkpoint
from reid.visualization.attention import band_fractions, band_name, last_block_attention, render_attention
from reid.visualization.curves import read_map_history, save_map_curve
from reid.visualization.index_html import write_index


@dataclass(frozen=True)
class AttentionReport:
    """One image's picture and, per part token, its share of attention inside its band."""

    image: str
    picture: Path
    band_fractions: tuple[float, ...]


def _run_folder(model: TrainedModel) -> Path:
    config = model.files.config
    if config.parent.name != ".hydra":
        raise ValueError(
            f"the run config {config} is not in a run folder (<run>/.hydra/config.yaml): pass --out"
        )
    return config.parent.parent


def _picture_names(paths: Sequence[str]) -> list[str]:
    """``attention_<file stem>.png``, numbered when two images share a stem."""
    names, seen = [], {}
    for path in paths:
        stem = Path(path).stem
        seen[stem] = seen.get(stem, 0) + 1
        names.append(f"attention_{stem}" + (f"_{seen[stem]}" if seen[stem] > 1 else "") + ".png")
    return names


def attention(model: TrainedModel, images: Sequence[str], out: Path) -> list[AttentionReport]:
    """Draw and print the attention of each image (module docstring); refreshes ``out/index.html``."""
    backbone = model.task.net.backbone
    if not hasattr(backbone, "num_prefix_tokens"):
        raise ValueError(
            f"{model.files.checkpoint}: attention maps need a ViT backbone (reid.models.vit), this run's is "
            f"{type(backbone).__name__}"
        )
    transform, (height, width) = model.test_transform(), model.image_size
    device = next(model.task.parameters()).device
    out.mkdir(parents=True, exist_ok=True)
    reports = []
    for path, name in zip(images, _picture_names(images), strict=True):
        image = read_image(path)
        maps = last_block_attention(backbone, transform(image)[None].to(device))
        parts = maps.parts[0].cpu()
        shares = band_fractions(parts[None], height)[0] if parts.shape[0] else torch.zeros(0)
        picture = render_attention(
            image.resize((width, height)), maps.cls[0].cpu(), parts, shares, height, Path(path).name
        )
        picture.save(out / name)
        reports.append(AttentionReport(path, out / name, tuple(float(v) for v in shares)))
        described = ", ".join(
            f"part {r + 1} ({band_name(r, len(shares), height)}) {float(v):.2f}" for r, v in enumerate(shares)
        )
        print(f"{path}: {described or 'no part tokens ([CLS] only)'} -> {out / name}")
    write_index(out)
    return reports


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
    register_resolvers()
    cfg = OmegaConf.load(model.files.config)
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
        else:
            sub.add_argument("--worst", type=int, default=4, help="lowest-AP queries drawn")
            sub.add_argument("--best", type=int, default=4, help="highest-AP queries drawn")
            sub.add_argument("--top-k", type=int, default=10, help="gallery images per query")
            sub.add_argument("--data-dir", help="replaces the run config's paths.data_dir")
        sub.add_argument("--out", type=Path, help="pictures folder (default: <run>/pictures)")
        sub.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    return parser


def main(argv: Sequence[str] | None = None) -> list[AttentionReport] | list[Path]:
    args = _parser().parse_args(argv)
    model = load_trained_model(args.run, args.checkpoint, device=args.device)
    out = args.out if args.out is not None else _run_folder(model) / "pictures"
    if args.command == "attention":
        images = [path for source in args.images for path in collect_images(source)]
        return attention(model, images, out)
    return ranked(model, out, args.worst, args.best, args.top_k, args.data_dir)


if __name__ == "__main__":
    from reid.tools.cli import run_tool

    run_tool(main, "python -m reid.tools.visualize")
