"""Peak training memory and step time with and without activation checkpointing of the ViT blocks.

    python benchmarks/memory_bench.py [--model vit_b_ics_384] [--batch 4] [--steps 2] [--device cpu]
        [--no-doc]

One training step of the task from conf/model (``vit_b_ics_384``: ViT-B/16+ICS at 384x128, the
TransReID-SSL recipe, as ``benchmarks/train_bench.py`` builds it; ``vit_tiny`` for tests): the task's own
``training_step`` (forward, objective), backward, SGD step with momentum, on a P x K batch of random
images, once with ``model.backbone.grad_checkpointing=false`` and once with ``true``. Each setting runs in
a fresh process, so one setting's freed allocations cannot hide the other's peak.

Peak memory above the model's own: the model, its gradients and the SGD momentum are allocated first (a
zero-gradient optimiser step) and their memory is the baseline; then ``--steps`` steps run and the peak
above the baseline is reported (on CPU the RSS high-water mark, VmHWM, reset through /proc/self/clear_refs;
with ``--device cuda`` ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``). Step time is
the mean over the steps after the first. The table is printed and written to docs/benchmarks.md between
the memory_bench markers (``--no-doc``: printed only).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from doc_section import write_section
from process_memory import peak_rss, reset_peak_rss
from train_bench import FAMILIES, Family, pk_batch, supervised_task

MODELS = {
    "vit_b_ics_384": FAMILIES["vit_b_ics_384"],
    "vit_tiny": Family("ViT-tiny (tests)", (64, 32), "vit_tiny"),
}
MIB = 2**20


class _Meter:
    """Memory now and the peak since ``reset``: process RSS on CPU, allocated tensors on CUDA."""

    def __init__(self, device: str) -> None:
        self.device = device

    def sync(self) -> None:
        if self.device == "cuda":
            torch.cuda.synchronize()

    def reset(self) -> int:
        self.sync()
        if self.device == "cuda":
            torch.cuda.reset_peak_memory_stats()
            return torch.cuda.memory_allocated()
        return reset_peak_rss()  # the reset mark itself: the peak read later can only be at or above it

    def peak(self) -> int:
        self.sync()
        return torch.cuda.max_memory_allocated() if self.device == "cuda" else peak_rss()


def measure(model: str, checkpointing: bool, batch: int, steps: int, device: str) -> dict:
    """Peak bytes above the model + gradients + momentum, and mean seconds per step, for one setting."""
    family = MODELS[model]
    torch.manual_seed(0)
    task = supervised_task(
        family.model, family.image_size, **family.overrides, **{"backbone.grad_checkpointing": checkpointing}
    )
    task = task.to(device).train()
    params = [p for p in task.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=1e-6, momentum=0.9)
    for p in params:  # gradients and momentum exist before the baseline, as in any step after the first
        p.grad = torch.zeros_like(p)
    opt.step()
    inputs = {k: v.to(device) for k, v in pk_batch(batch, family.image_size).items()}
    meter = _Meter(device)
    baseline = meter.reset()
    times = []
    for _ in range(steps):
        meter.sync()
        start = time.perf_counter()
        opt.zero_grad(set_to_none=False)  # gradients stay allocated: part of the baseline
        task.training_step(inputs, 0).backward()
        opt.step()
        meter.sync()
        times.append(time.perf_counter() - start)
    own = sum(p.numel() * p.element_size() for p in task.parameters()) + 2 * sum(
        p.numel() * p.element_size() for p in params
    )
    return {
        # the kernel's RSS counters are approximate by a page or so: a peak within that of the baseline is 0
        "peak_above_mib": max(0, meter.peak() - baseline) / MIB,
        "own_mib": own / MIB,
        "step_s": sum(times[1:]) / max(len(times) - 1, 1),
        "checkpointing": checkpointing,
    }


def measure_in_fresh_process(model: str, checkpointing: bool, batch: int, steps: int, device: str) -> dict:
    command = [sys.executable, __file__, "--worker", "--model", model, "--batch", str(batch)]
    command += ["--steps", str(steps), "--device", device] + (["--checkpointing"] if checkpointing else [])
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"memory_bench worker {' '.join(command[1:])} failed:\n{result.stderr[-4000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def report(rows: list[dict], args: argparse.Namespace, machine: str, command: list[str]) -> str:
    family = MODELS[args.model]
    plain, checkpointed = rows
    lines = [
        f"| {'on' if row['checkpointing'] else 'off'} | {row['peak_above_mib']:,.0f} | "
        f"{row['own_mib']:,.0f} | {row['step_s']:.2f} |"
        for row in rows
    ]
    saved = 1 - checkpointed["peak_above_mib"] / plain["peak_above_mib"]
    slower = checkpointed["step_s"] / plain["step_s"]
    where = "peak RSS above the baseline" if args.device == "cpu" else "max_memory_allocated above it"
    return "\n".join(
        [
            "## Activation checkpointing (`benchmarks/memory_bench.py`)",
            "",
            f"One training step (task `training_step`, backward, SGD with momentum) of {family.label} at "
            f"{family.image_size[0]}x{family.image_size[1]}, batch {args.batch}, fp32, "
            f"`model.backbone.grad_checkpointing` off / on, each in a fresh process; {args.device}, "
            f"{machine}; `{' '.join(['python benchmarks/memory_bench.py', *command])}`. Peak: {where} "
            f"(model, gradients and momentum allocated first) over {args.steps} steps; step: mean of the "
            f"{args.steps - 1} after the first.",
            "",
            "| checkpointing | peak above model MiB | model + grads + momentum MiB | step s |",
            "|---|---|---|---|",
            *lines,
            "",
            f"Checkpointing keeps {saved:.0%} less memory above the model at {slower:.2f}x the step time.",
        ]
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=list(MODELS), default="vit_b_ics_384")
    parser.add_argument("--batch", type=int, default=4, help="images per step (P x K, K = 2 or 4)")
    parser.add_argument("--steps", type=int, default=2, help="steps per setting; timing skips the first")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--no-doc", action="store_true", help="print only; leave docs/benchmarks.md as it is")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)  # one setting, JSON out
    parser.add_argument("--checkpointing", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.batch < 2 or args.batch % 2:
        parser.error(
            f"--batch must be an even number >= 2 (P identities x K = 2 instances), got {args.batch}"
        )
    if args.steps < 2:
        parser.error(f"--steps must be >= 2 (the first step is not timed), got {args.steps}")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    return args


def main(argv: list[str] | None = None) -> str:
    args = parse_args(argv)
    if args.worker:
        row = measure(args.model, args.checkpointing, args.batch, args.steps, args.device)
        print(json.dumps(row))
        return json.dumps(row)
    load = os.getloadavg()[0]
    machine = f"{platform.machine()}, {torch.get_num_threads()} torch threads, load {load:.1f} at start"
    machine += f", torch {torch.__version__}"
    rows = [
        measure_in_fresh_process(args.model, on, args.batch, args.steps, args.device) for on in (False, True)
    ]
    text = report(rows, args, machine, sys.argv[1:] if argv is None else list(argv))
    print(text)
    if not args.no_doc:
        write_section("memory_bench", text)
    return text


if __name__ == "__main__":
    main()
