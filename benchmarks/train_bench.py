"""Training throughput: images/s per model family, Lightning-step overhead, datamodule images/s per worker.

    python benchmarks/train_bench.py                 # CPU (small batch, few steps), CUDA bf16 too if present
    python benchmarks/train_bench.py --steps 20 --batch 64 --device cuda

Writes its section between the ``train_bench`` markers of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch.utils.data import DataLoader, Dataset

from reid.config import CONFIG_DIR, register_resolvers
from reid.data.records import DatasetInfo
from reid.evaluation import EvalConfig

DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
START, END = "<!-- train_bench:start -->", "<!-- train_bench:end -->"
INFO = DatasetInfo(num_classes=751, num_cameras=6, num_views=1)


def supervised_task(model: str) -> L.LightningModule:
    """A task from conf/model/<model>.yaml at 256 x 128 for Market-sized data."""
    register_resolvers()
    cfg = OmegaConf.create(
        {"data": {"image_size": [256, 128]}, "model": OmegaConf.load(CONFIG_DIR / "model" / f"{model}.yaml")}
    )
    if "defaults" in cfg.model:
        base = OmegaConf.load(CONFIG_DIR / "model" / f"{cfg.model.defaults[0]}.yaml")
        cfg.model = OmegaConf.merge(base, {k: v for k, v in cfg.model.items() if k != "defaults"})
    cfg.model.weights = None
    return instantiate(cfg.model, data_info=INFO, evaluation=EvalConfig(), _recursive_=False)


def pk_batch(batch: int, device: str) -> dict[str, torch.Tensor]:
    k = 4 if batch >= 8 and batch % 4 == 0 else 2
    pid = torch.arange(batch // k).repeat_interleave(k)
    return {
        "image": torch.randn(batch, 3, 256, 128),
        "pid": pid,
        "camid": pid % 6,
        "viewid": torch.zeros_like(pid),
        "index": torch.arange(batch),
    }


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def raw_step_time(task: L.LightningModule, batch: dict, device: str, precision: str, steps: int) -> float:
    """Seconds per step of a plain loop: forward, objective, backward, SGD step."""
    task = task.to(device).train()
    opt = torch.optim.SGD(task.parameters(), lr=1e-4, momentum=0.9)
    batch = {k: v.to(device) for k, v in batch.items()}

    def loss() -> torch.Tensor:
        out = task.net(batch["image"], batch["camid"], batch["viewid"])
        return task.objective(out.feats, out.logits, batch["pid"], task.net.branch_weights).total

    return mean_step_seconds(loss, opt, device, precision, steps)


def mean_step_seconds(
    loss: Callable[[], torch.Tensor], opt: torch.optim.Optimizer, device: str, precision: str, steps: int
) -> float:
    """Mean seconds of ``steps`` plain-loop steps (loss under autocast, backward, optimiser step),
    after one untimed warm-up step."""
    autocast = torch.autocast(device, dtype=torch.bfloat16) if precision == "bf16-mixed" else nullcontext()
    times = []
    for _ in range(steps + 1):
        _sync(device)
        start = time.perf_counter()
        with autocast:
            value = loss()
        opt.zero_grad(set_to_none=True)
        value.backward()
        opt.step()
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
    cfg = OmegaConf.load(CONFIG_DIR / "data" / "synthetic.yaml")
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
            "augment": OmegaConf.to_container(
                OmegaConf.load(CONFIG_DIR / "data" / "_reid_base.yaml").augment
            ),
        }
    )
    del cfg
    loader = module.train_dataloader()
    iterator, count = iter(loader), 0
    next(iterator)  # worker start-up excluded
    start = time.perf_counter()
    for i, batch in enumerate(iterator):
        count += batch["image"].shape[0]
        if i + 1 >= max_batches:
            break
    return count / (time.perf_counter() - start)


def measure(device: str, precision: str, batch: int, steps: int) -> list[tuple[str, float]]:
    rows = []
    for label, model in (
        ("ViT-S/16 baseline (vit_small_lup)", "vit_small_lup"),
        ("ViT-B/16 TransReID s12 JPM+SIE", "transreid"),
        ("ResNet-50 BoT (last stride 1)", "bot_r50"),
    ):
        torch.manual_seed(0)
        seconds = raw_step_time(supervised_task(model), pk_batch(batch, device), device, precision, steps)
        rows.append((label, batch / seconds))
    for label, parts in (("DINO ViT-S (2x256x128 + 8x128x64)", 0), ("PASS ViT-S, 3 parts", 3)):
        rows.append((label, batch / dino_step_time(device, precision, batch, steps, parts)))
    return rows


def overhead(device: str, precision: str, batch: int, steps: int) -> tuple[float, float]:
    torch.manual_seed(0)
    raw = raw_step_time(supervised_task("vit_small_lup"), pk_batch(batch, device), device, precision, steps)
    torch.manual_seed(0)
    lit = lightning_step_time(
        supervised_task("vit_small_lup"), pk_batch(batch, device), device, precision, steps
    )
    return raw, lit


def write_section(text: str) -> None:
    doc = DOC.read_text() if DOC.exists() else "# Benchmarks\n"
    section = f"{START}\n{text.strip()}\n{END}"
    if START in doc and END in doc:
        doc = doc[: doc.index(START)] + section + doc[doc.index(END) + len(END) :]
    else:
        doc = doc.rstrip() + "\n\n" + section + "\n"
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text(doc)


def _timed(fn: Callable[[], object]) -> object:
    return fn()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=4, help="images per step (CPU default 4; use 64 on GPU)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps after one warm-up step")
    parser.add_argument(
        "--data-dir", type=Path, default=Path("data"), help="where the demo synthetic set lives"
    )
    parser.add_argument("--workers", type=int, nargs="*", default=[0, 1, 2])
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    targets = [("cpu", "32-true", args.batch)]
    if torch.cuda.is_available():
        targets.append(("cuda", "bf16-mixed", max(args.batch, 64)))
    lines = ["## Training throughput (`benchmarks/train_bench.py`)", ""]
    lines.append(
        f"Command: `python benchmarks/train_bench.py --batch {args.batch} --steps {args.steps}`; "
        f"host: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
        f"torch {torch.__version__}. One warm-up step, then the mean of {args.steps} steps "
        "(forward, loss, backward, optimiser step) at the paper input sizes (256x128)."
    )
    lines += ["", "| device | precision | batch | model | images/s |", "|---|---|---|---|---|"]
    for device, precision, batch in targets:
        for label, rate in measure(device, precision, batch, args.steps):
            print(f"{device} {precision} {label}: {rate:.2f} img/s", flush=True)
            lines.append(f"| {device} | {precision} | {batch} | {label} | {rate:.2f} |")
    lines += [
        "",
        "LightningModule step vs a raw PyTorch loop (same ViT-S TransReID task, SGD, batch):",
        "",
        "| device | precision | raw s/step | Lightning s/step | overhead |",
        "|---|---|---|---|---|",
    ]
    for device, precision, batch in targets:
        raw, lit = overhead(device, precision, batch, args.steps)
        print(
            f"{device} overhead: raw {raw:.4f}s lightning {lit:.4f}s ({100 * (lit / raw - 1):+.1f}%)",
            flush=True,
        )
        lines.append(f"| {device} | {precision} | {raw:.4f} | {lit:.4f} | {100 * (lit / raw - 1):+.1f}% |")
    lines += [
        "",
        "ReIDDataModule training images/s (256x128, flip + pad/crop + erasing, batch 64, demo synthetic "
        "JPEG/PNG files), to size `data.num_workers`:",
        "",
        "| workers | images/s | per worker |",
        "|---|---|---|",
    ]
    for workers in args.workers:
        rate = datamodule_rate(workers, args.data_dir, max_batches=6)
        print(f"datamodule workers={workers}: {rate:.1f} img/s", flush=True)
        lines.append(f"| {workers} | {rate:.1f} | {rate / max(workers, 1):.1f} |")
    if not torch.cuda.is_available():
        lines += [
            "",
            "No CUDA device was available for this run: the CUDA bf16 rows are added by running the "
            "same command on a GPU machine.",
        ]
    if not args.no_write:
        write_section("\n".join(lines))


if __name__ == "__main__":
    main()
