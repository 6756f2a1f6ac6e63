"""Training throughput: images/s and peak memory per model family, Lightning-step overhead, datamodule
images/s per worker.

    python benchmarks/train_bench.py                 # CPU (batch 4, 3 steps), CUDA bf16 too if present
    python benchmarks/train_bench.py --quick         # CPU smoke run: batch 4, 1 step, no datamodule rows
    python benchmarks/train_bench.py --device cuda --precision bf16-mixed --batch 64 --steps 10
    python benchmarks/train_bench.py --device cuda --models transreid vit_b_ics_384 --dry-run

Families (``--models``, paper sizes): ViT-B TransReID (256x128, stride 12, JPM + SIE), ViT-B+ICS 384x128
(TransReID-SSL), the same with relative position bias in every layer (``vit_b_ics_384_rpe``) and with
the bias plus the stable RPE-triplet term (``vit_b_ics_384_rpe_triplet``), ViT-S (TransReID-SSL),
ResNet-50 BoT, one DINO and one PASS (ViT-S) pretraining step.
Rows are merged into the ``train_bench`` section of docs/benchmarks.md, keyed by device, precision,
batch and family, so a GPU run adds its rows beside the CPU ones instead of replacing them.
"""

from __future__ import annotations

import argparse
import gc
import platform
import sys
import time
import warnings
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, str(Path(__file__).resolve().parent))

from train_bench_doc import write_section

from reid.config import CONFIG_DIR, register_resolvers
from reid.config_store import compose_option
from reid.data.records import DatasetInfo
from reid.evaluation import EvalConfig
from reid.tasks.from_config import build_task

INFO = DatasetInfo(num_classes=751, num_cameras=6, num_views=1)
PRECISIONS = ("32-true", "bf16-mixed", "16-mixed")


@dataclass(frozen=True)
class Family:
    """One benchmarked model: a supervised task from conf/model/<model>.yaml (plus ``overrides``), or an
    SSL step with ``num_parts`` part tokens (0 = DINO, 3 = PASS) when ``model`` is None."""

    label: str
    image_size: tuple[int, int]
    model: str | None = None
    overrides: dict = field(default_factory=dict)
    num_parts: int = 0


# conf/experiment/rpe_market.yaml / rpe_triplet_market.yaml on the vit_b_ics_384 family; the term's warm-up
# is off so every timed step pays for it at full weight.
RPE_BIAS = {"backbone.rel_pos_bias": {"shared": False}}
RPE_TRIPLET = {
    "loss.rpe_triplet": {
        "_target_": "reid.losses.RPETripletTerm",
        "weight": 0.5,
        "num_patches": 8,
        "form": "stable",
        "warmup_steps": 0,
    }
}
FAMILIES = {
    "vit_s": Family("ViT-S/16 baseline (vit_small_lup)", (256, 128), "vit_small_lup"),
    "transreid": Family("ViT-B/16 TransReID s12 JPM+SIE", (256, 128), "transreid"),
    "vit_b_ics_384": Family(
        "ViT-B/16+ICS (TransReID-SSL)", (384, 128), "vit_base_lup", {"backbone.stem": "ics"}
    ),
    "vit_b_ics_384_rpe": Family(
        "ViT-B/16+ICS + RPE bias per layer", (384, 128), "vit_base_lup", {"backbone.stem": "ics", **RPE_BIAS}
    ),
    "vit_b_ics_384_rpe_triplet": Family(
        "ViT-B/16+ICS + RPE bias + RPE-triplet",
        (384, 128),
        "vit_base_lup",
        {"backbone.stem": "ics", **RPE_BIAS, **RPE_TRIPLET},
    ),
    "bot_r50": Family("ResNet-50 BoT (last stride 1)", (256, 128), "bot_r50"),
    "dino": Family("DINO ViT-S (2x256x128 + 8x128x64)", (256, 128), num_parts=0),
    "pass": Family("PASS ViT-S, 3 parts", (256, 128), num_parts=3),
}


def model_node(name: str) -> DictConfig:
    """conf/model/<name>.yaml as Hydra composes it (its bases and schema applied)."""
    return compose_option("model", name)


def supervised_task(model: str, image_size: tuple[int, int] = (256, 128), **overrides) -> L.LightningModule:
    """A task from conf/model/<model>.yaml at ``image_size`` for Market-sized data."""
    register_resolvers()
    cfg = OmegaConf.create({"data": {"image_size": list(image_size)}, "model": model_node(model)})
    cfg.model.weights = None
    for key, value in overrides.items():
        OmegaConf.update(cfg.model, key, value, force_add=True)
    return build_task(cfg.model, INFO, EvalConfig())


def pk_batch(batch: int, image_size: tuple[int, int] = (256, 128)) -> dict[str, torch.Tensor]:
    k = 4 if batch >= 8 and batch % 4 == 0 else 2
    pid = torch.arange(batch // k).repeat_interleave(k)
    return {
        "image": torch.randn(batch, 3, *image_size),
        "pid": pid,
        "camid": pid % 6,
        "viewid": torch.zeros_like(pid),
        "index": torch.arange(batch),
    }


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def raw_step_time(task: L.LightningModule, batch: dict, device: str, precision: str, steps: int) -> float:
    """Seconds per step of a plain loop around the task's ``training_step``: forward, objective, backward,
    SGD step."""
    task = task.to(device).train()
    opt = torch.optim.SGD(task.parameters(), lr=1e-4, momentum=0.9)
    batch = {k: v.to(device) for k, v in batch.items()}

    def loss() -> torch.Tensor:  # the task's own step (its self.log calls are no-ops without a trainer)
        return task.training_step(batch, 0)

    return mean_step_seconds(loss, opt, device, precision, steps)


def mean_step_seconds(
    loss: Callable[[], torch.Tensor], opt: torch.optim.Optimizer, device: str, precision: str, steps: int
) -> float:
    """Mean seconds of ``steps`` plain-loop steps (loss under autocast, backward, optimiser step),
    after one untimed warm-up step. ``16-mixed`` scales the loss (GradScaler) as Lightning does."""
    dtype = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(precision)
    scaler = torch.amp.GradScaler(device, enabled=precision == "16-mixed")
    times = []
    for _ in range(steps + 1):
        _sync(device)
        start = time.perf_counter()
        with torch.autocast(device, dtype=dtype) if dtype else nullcontext():
            value = loss()
        opt.zero_grad(set_to_none=True)
        scaler.scale(value).backward()
        scaler.step(opt)
        scaler.update()
        _sync(device)
        times.append(time.perf_counter() - start)
    return sum(times[1:]) / steps


class _Repeat(Dataset):
    def __init__(self, batch: dict, n: int) -> None:
        self.batch, self.n = batch, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        return self.batch


class _StepTimer(L.Callback):
    def __init__(self, device: str) -> None:
        self.device, self.times, self._start = device, [], 0.0

    def on_train_batch_start(self, *args) -> None:
        _sync(self.device)
        self._start = time.perf_counter()

    def on_train_batch_end(self, *args) -> None:
        _sync(self.device)
        self.times.append(time.perf_counter() - self._start)


def lightning_step_time(
    task: L.LightningModule, batch: dict, device: str, precision: str, steps: int
) -> float:
    """Seconds per step of ``trainer.fit`` on the same model, SGD and (pre-collated) batch."""
    task.configure_optimizers = lambda: torch.optim.SGD(task.parameters(), lr=1e-4, momentum=0.9)
    timer = _StepTimer(device)
    trainer = L.Trainer(
        accelerator=device,
        devices=1,
        precision=precision,
        max_steps=steps + 1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[timer],
        num_sanity_val_steps=0,
        limit_val_batches=0,
    )
    loader = DataLoader(_Repeat(batch, steps + 1), batch_size=None)
    trainer.fit(task, train_dataloaders=loader)
    return sum(timer.times[1:]) / steps


def dino_step_time(device: str, precision: str, batch: int, steps: int, num_parts: int) -> float:
    """Seconds per DINO (num_parts 0) / PASS (3) step: ViT-S, 2 x 256x128 globals + 8 x 128x64 locals."""
    from functools import partial

    from reid.models.vit import vit_small
    from reid.tasks.ssl_pretrain import SSLPretrainTask

    task = SSLPretrainTask(
        partial(vit_small, img_size=(256, 128)), partial(torch.optim.AdamW), num_parts=num_parts
    )
    task = task.to(device).train()
    opt = torch.optim.AdamW(task.student.parameters(), lr=1e-5)
    crops = [torch.randn(batch, 3, 256, 128, device=device) for _ in range(2)]
    crops += [torch.randn(batch, 3, 128, 64, device=device) for _ in range(8)]
    regions = torch.arange(8, device=device) % 3

    def loss() -> torch.Tensor:
        return task.compute_loss(crops, regions, 0.04)["loss"]

    return mean_step_seconds(loss, opt, device, precision, steps)


def datamodule_rate(workers: int, data_dir: Path, max_batches: int) -> float:
    """Training images/s the ReIDDataModule delivers (demo synthetic data, 256x128, full augmentation)."""
    register_resolvers()
    dataset = OmegaConf.load(CONFIG_DIR / "dataset" / "synthetic.yaml")
    dataset.root = str(data_dir / "synthetic")
    module = instantiate(
        {
            "_target_": "reid.data.reid_datamodule.ReIDDataModule",
            "dataset": dataset,
            "image_size": [256, 128],
            "batch_size": 64,
            "num_instances": 4,
            "num_workers": workers,
            "transforms": OmegaConf.to_container(
                OmegaConf.load(CONFIG_DIR / "data" / "transforms" / "transreid.yaml")
            ),
        }
    )
    loader = module.train_dataloader()
    iterator, count = iter(loader), 0
    next(iterator)  # worker start-up excluded
    start = time.perf_counter()
    for i, batch in enumerate(iterator):
        count += batch["image"].shape[0]
        if i + 1 >= max_batches:
            break
    return count / (time.perf_counter() - start)


def _reset_peak(device: str) -> None:
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    elif Path("/proc/self/clear_refs").exists():
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM back to the current RSS


def _peak_gib(device: str) -> float | None:
    """CUDA: peak allocated by torch; CPU: the process's resident high-water mark (VmHWM)."""
    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**30
    status = Path("/proc/self/status")
    for line in status.read_text().splitlines() if status.exists() else []:
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 2**20
    return None


def measure_family(name: str, device: str, precision: str, batch: int, steps: int) -> dict:
    """images/s and peak memory of one family's training step."""
    family = FAMILIES[name]
    torch.manual_seed(0)
    gc.collect()
    _reset_peak(device)
    if family.model is None:
        seconds = dino_step_time(device, precision, batch, steps, family.num_parts)
    else:
        task = supervised_task(family.model, family.image_size, **family.overrides)
        seconds = raw_step_time(task, pk_batch(batch, family.image_size), device, precision, steps)
    return {
        "device": device,
        "precision": precision,
        "batch": batch,
        "family": name,
        "images_per_s": batch / seconds,
        "peak_gib": _peak_gib(device),
    }


def overhead(device: str, precision: str, batch: int, steps: int) -> dict:
    torch.manual_seed(0)
    raw = raw_step_time(supervised_task("vit_small_lup"), pk_batch(batch), device, precision, steps)
    torch.manual_seed(0)
    lit = lightning_step_time(supervised_task("vit_small_lup"), pk_batch(batch), device, precision, steps)
    return {"device": device, "precision": precision, "batch": batch, "raw": raw, "lightning": lit}


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    gpu = f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return f"{cpu}, {torch.get_num_threads()} torch threads{gpu}, torch {torch.__version__}"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--device", choices=["auto", "cpu", "cuda"], default="auto", help="auto: CPU, then CUDA if present"
    )
    parser.add_argument("--precision", choices=PRECISIONS, help="default: 32-true on CPU, bf16-mixed on CUDA")
    parser.add_argument("--batch", type=int, help="images per step (default: 4 on CPU, 64 on CUDA)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps after one warm-up step")
    parser.add_argument("--models", nargs="*", choices=list(FAMILIES), default=list(FAMILIES))
    parser.add_argument("--no-overhead", action="store_true", help="skip the Lightning-overhead row")
    parser.add_argument(
        "--workers", type=int, nargs="*", default=[0, 1, 2], help="datamodule rows (none: skip)"
    )
    parser.add_argument(
        "--data-dir", type=Path, default=Path("data"), help="where the demo synthetic set lives"
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: batch 4, 1 step, no datamodule rows")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and exit (no model is built)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md as is")
    args = parser.parse_args(argv)
    if args.quick:
        args.batch, args.steps, args.workers = args.batch or 4, 1, []
    if args.steps < 1 or (args.batch is not None and args.batch < 4):
        parser.error(
            "--steps must be >= 1 and --batch >= 4 (two identities for the triplet loss), "
            f"got --steps {args.steps} --batch {args.batch}"
        )
    return args


def targets(args: argparse.Namespace, cuda: bool) -> list[tuple[str, str, int]]:
    """(device, precision, batch) to measure; ``--device cuda`` without CUDA is an error."""
    if args.device == "cuda" and not cuda and not args.dry_run:
        raise SystemExit("train_bench.py --device cuda: torch.cuda.is_available() is False on this machine")
    devices = {"auto": ["cpu", "cuda"] if cuda else ["cpu"], "cpu": ["cpu"], "cuda": ["cuda"]}[args.device]
    default_batch = {"cpu": 4, "cuda": 64}
    default_precision = {"cpu": "32-true", "cuda": "bf16-mixed"}
    return [(d, args.precision or default_precision[d], args.batch or default_batch[d]) for d in devices]


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    warnings.filterwarnings("ignore", message=r".*self\.log\(\)` but the `self\.trainer` reference")
    plan = targets(args, torch.cuda.is_available())
    command = "python benchmarks/train_bench.py " + " ".join(sys.argv[1:] if argv is None else argv)
    if args.dry_run:
        for device, precision, batch in plan:
            for name in args.models:
                family = FAMILIES[name]
                print(f"plan: {device} {precision} batch {batch} {args.steps} steps {name}: {family.label} "
                      f"{family.image_size[0]}x{family.image_size[1]}")  # fmt: skip
            extras = f"overhead {'no' if args.no_overhead else 'yes'}; datamodule workers {args.workers}"
            print(f"plan: {device} {extras}")
        return
    where = {"machine": machine(), "command": command.strip()}
    rows: dict[str, list[dict]] = {"throughput": [], "overhead": [], "datamodule": []}
    for device, precision, batch in plan:
        for name in args.models:
            row = {**measure_family(name, device, precision, batch, args.steps), **where}
            peak = "" if row["peak_gib"] is None else f", peak {row['peak_gib']:.2f} GiB"
            print(
                f"{device} {precision} {FAMILIES[name].label}: {row['images_per_s']:.2f} img/s{peak}",
                flush=True,
            )
            rows["throughput"].append(row)
        if not args.no_overhead:
            row = {**overhead(device, precision, batch, args.steps), **where}
            print(f"{device} overhead: raw {row['raw']:.4f}s lightning {row['lightning']:.4f}s", flush=True)
            rows["overhead"].append(row)
    for workers in args.workers:
        rate = datamodule_rate(workers, args.data_dir, max_batches=6)
        print(f"datamodule workers={workers}: {rate:.1f} img/s", flush=True)
        rows["datamodule"].append({"workers": workers, "rate": rate, **where})
    if not args.no_write:
        write_section(rows, FAMILIES)


if __name__ == "__main__":
    main()
