"""The prepared GPU check, on CPU: benchmarks/gpu_check.sh --dry-run, train_bench.py's flags and docs
rows, the helpers and data of tests/gpu, and that reid imports without wandb (the GPU image lacks it)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.gpu import test_cuda_paths as gpu

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"
sys.path.insert(0, str(ROOT / "benchmarks"))

import train_bench  # noqa: E402
import train_bench_doc  # noqa: E402

FAMILIES = ["transreid", "vit_b_ics_384", "vit_s", "bot_r50", "dino", "pass"]
RPE_FAMILIES = ["vit_b_ics_384_rpe", "vit_b_ics_384_rpe_triplet"]  # measured in the vit_b_ics_384 step
STEPS = ["install", "imports", "nvidia-smi", "pytest-gpu", *(f"train-{f}" for f in FAMILIES)]
STEPS += ["train-overhead", "eval-msmt17", "eval-rerank-msmt17", "collect"]
WHEELS = [
    "hydra_core-1.3.8-py3-none-any.whl", "omegaconf-2.3.0-py3-none-any.whl",
    "antlr4_python3_runtime-4.9.3-py3-none-any.whl", "setuptools-84.2.1-py3-none-any.whl",
    "rich-15.0.0-py3-none-any.whl", "markdown_it_py-4.3.0-py3-none-any.whl", "mdurl-0.1.2-py3-none-any.whl",
    "pygments-2.21.0-py3-none-any.whl", "pytest-9.2.0-py3-none-any.whl", "pluggy-1.7.0-py3-none-any.whl",
    "iniconfig-2.3.1-py3-none-any.whl", "packaging-26.4-py3-none-any.whl",
]  # fmt: skip
FAKE_PYTHON = """#!/usr/bin/env bash
echo "$@" >> "$CALLS"
case "$*" in *collect-only*) echo "tests/gpu/test_cuda_paths.py::test_a"; echo "tests/gpu/x.py::test_b";; esac
"""


def wheel_dir(tmp_path: Path, names: list[str]) -> Path:
    folder = tmp_path / "wheels"
    folder.mkdir()
    for name in names:
        (folder / name).write_bytes(b"")
    return folder


def dry_run(tmp_path: Path, wheels: Path, python: str, **extra: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "ONLY"}
    env |= {"GPU_WHEELS": str(wheels), "PYTHON": python, "CALLS": str(tmp_path / "calls"), **extra}
    return subprocess.run(
        ["bash", str(SCRIPT), "--dry-run"], env=env, capture_output=True, text=True, timeout=300
    )


def test_dry_run_names_every_step_and_checks_flags_and_collection(tmp_path):
    fake = tmp_path / "python"
    fake.write_text(FAKE_PYTHON)
    fake.chmod(0o755)
    result = dry_run(tmp_path, wheel_dir(tmp_path, WHEELS), str(fake))
    assert result.returncode == 0, result.stderr
    steps = [line.split()[2] for line in result.stdout.splitlines() if line.startswith("[gpu_check] step ")]
    assert steps == STEPS
    train = [
        line for line in result.stdout.splitlines() if "step train-" in line and "train-overhead" not in line
    ]
    assert len(train) == len(FAMILIES)  # (every train step shows --no-overhead: filter on the step name)
    assert all("--device cuda --precision bf16-mixed --batch 64" in line for line in train)
    assert "gpu tests collected: 2" in result.stdout
    calls = (tmp_path / "calls").read_text().splitlines()  # the checks the dry run made with PYTHON
    assert calls[0].endswith(f"--models {' '.join(FAMILIES + RPE_FAMILIES)} --dry-run")
    assert "--device cuda" in calls[0]
    (vit_b,) = [line for line in train if "step train-vit_b_ics_384 " in line]
    assert "(timeout 40s)" in vit_b  # three families in one process
    assert (
        calls[1].startswith("benchmarks/eval_bench.py --device cuda --scale msmt17") and "--help" in calls[1]
    )
    assert calls[2] == "-m pytest --collect-only -q -m gpu tests/gpu -p no:cacheprovider"
    budget = int(result.stdout.split("within ")[1].split("s of step")[0])
    assert budget <= 480


def test_only_selects_the_steps_to_rerun(tmp_path):
    fake = tmp_path / "python"
    fake.write_text(FAKE_PYTHON)
    fake.chmod(0o755)
    result = dry_run(tmp_path, wheel_dir(tmp_path, WHEELS), str(fake), ONLY="train-dino|eval-.*")
    assert result.returncode == 0, result.stderr
    ran = [line.split()[2] for line in result.stdout.splitlines() if "(timeout" in line]
    assert ran == ["install", "train-dino", "eval-msmt17", "eval-rerank-msmt17"]
    assert "step train-pass: skipped" in result.stdout


def test_dry_run_refuses_missing_wheels_and_an_empty_collection(tmp_path):
    result = dry_run(tmp_path, wheel_dir(tmp_path, WHEELS[1:]), "true")
    assert result.returncode != 0
    assert "hydra_core-1.3.8" in result.stderr and "make gpu-wheels" in result.stderr
    fake = tmp_path / "python"
    fake.write_text("#!/usr/bin/env bash\nexit 0\n")
    fake.chmod(0o755)
    (tmp_path / "wheels").joinpath(WHEELS[0]).write_bytes(b"")
    result = dry_run(tmp_path, tmp_path / "wheels", str(fake))
    assert result.returncode != 0 and "collected no test" in result.stderr


@pytest.mark.slow
def test_dry_run_with_the_real_python(tmp_path):
    result = dry_run(tmp_path, wheel_dir(tmp_path, WHEELS), sys.executable)
    assert result.returncode == 0, result.stderr
    assert "gpu tests collected: 18" in result.stdout
    for family in FAMILIES + RPE_FAMILIES:
        assert f"plan: cuda bf16-mixed batch 64 10 steps {family}:" in result.stdout


def test_train_bench_defaults_per_device_and_refuses_cuda_without_it():
    args = train_bench.parse_args(["--device", "cuda"])
    assert train_bench.targets(args, cuda=True) == [("cuda", "bf16-mixed", 64)]
    assert train_bench.targets(train_bench.parse_args([]), cuda=True) == [
        ("cpu", "32-true", 4),
        ("cuda", "bf16-mixed", 64),
    ]
    quick = train_bench.parse_args(["--quick"])
    assert (quick.batch, quick.steps, quick.workers) == (4, 1, [])
    assert train_bench.targets(quick, cuda=False) == [("cpu", "32-true", 4)]
    with pytest.raises(SystemExit, match="torch.cuda.is_available"):
        train_bench.targets(args, cuda=False)
    assert train_bench.FAMILIES["vit_b_ics_384"].image_size == (384, 128)
    assert train_bench.parse_args(["--models"]).models == []


@pytest.mark.parametrize(("model", "precision"), [("transreid_tiny", "16-mixed"), ("bot_tiny", "bf16-mixed")])
def test_train_bench_step_trains_the_task(model: str, precision: str):
    """train_bench times the task's own training step: gradients reach the weights (16-mixed scaled)."""
    task = train_bench.supervised_task(model, (64, 32))
    before = [p.detach().clone() for p in task.parameters()]
    seconds = train_bench.raw_step_time(task, train_bench.pk_batch(8, (64, 32)), "cpu", precision, 1)
    assert 0.0 < seconds < 60.0
    moved = sum(not torch.equal(old, new.detach()) for old, new in zip(before, task.parameters()))
    assert moved >= 0.5 * len(before)


LEGACY = """# Benchmarks

<!-- train_bench:start -->
## Training throughput (`benchmarks/train_bench.py`)

Command: `python benchmarks/train_bench.py --batch 8 --steps 5`; host: x86_64, 2 torch threads, \
torch 2.13.0+cu130. One.

| device | precision | batch | model | images/s |
|---|---|---|---|---|
| cpu | 32-true | 8 | ViT-S/16 baseline (vit_small_lup) | 7.29 |
| cpu | 32-true | 8 | ResNet-50 BoT (last stride 1) | 5.64 |

| device | precision | raw s/step | Lightning s/step | overhead |
|---|---|---|---|---|
| cpu | 32-true | 1.0855 | 1.1158 | +2.8% |

| workers | images/s | per worker |
|---|---|---|
| 2 | 804.1 | 402.1 |
<!-- train_bench:end -->

<!-- eval_bench:start -->
kept
<!-- eval_bench:end -->
"""


def _row(device: str, family: str, rate: float) -> dict:
    where = {"machine": "m", "command": "c"}
    return {"device": device, "precision": "p", "batch": 64, "family": family, "images_per_s": rate,
            "peak_gib": 1.5, **where}  # fmt: skip


def test_cuda_rows_are_added_beside_the_cpu_rows(tmp_path):
    doc = tmp_path / "benchmarks.md"
    doc.write_text(LEGACY)
    new = {"throughput": [_row("cuda", "transreid", 900.0)], "overhead": [], "datamodule": []}
    train_bench_doc.write_section(new, train_bench.FAMILIES, doc)
    text = doc.read_text()
    assert "| cpu | 32-true | 8 | ViT-S/16 baseline (vit_small_lup) | 256x128 | 7.29 |" in text
    assert "| cpu | 32-true | 8 | ResNet-50 BoT (last stride 1) | 256x128 | 5.64 |" in text
    assert "| cuda | p | 64 | ViT-B/16 TransReID s12 JPM+SIE | 256x128 | 900.00 | 1.50 | m | `c` |" in text
    assert "+2.8%" in text and "| 2 | 804.1 | 402.1 |" in text and "kept" in text
    again = {"throughput": [_row("cuda", "transreid", 950.0), _row("cuda", "vit_b_ics_384", 400.0)]}
    train_bench_doc.write_section(again, train_bench.FAMILIES, doc)  # same key: replaced, not repeated
    text = doc.read_text()
    assert "900.00" not in text and text.count("| 950.00 |") == 1 and "| 384x128 | 400.00 |" in text
    assert "7.29" in text and text.count("<!-- train_bench:start -->") == 1


BLOCK_WANDB = """
import importlib, importlib.abc, pkgutil, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "wandb" or name.startswith("wandb."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, Block())
try:
    import wandb
    raise SystemExit("the block failed: wandb imported")
except ModuleNotFoundError:
    pass
import reid
names = [m.name for m in pkgutil.walk_packages(reid.__path__, "reid.")]
for name in names:
    importlib.import_module(name)
from hydra.utils import instantiate
from omegaconf import OmegaConf
from reid.config import CONFIG_DIR
logger = instantiate(OmegaConf.load(CONFIG_DIR / "logger" / "csv.yaml").csv, save_dir=sys.argv[1])
print(len(names), type(logger).__name__)
"""


def test_reid_imports_and_logs_to_csv_without_wandb(tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", BLOCK_WANDB, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    count, logger = result.stdout.split()[-2:]
    assert int(count) > 40 and logger == "ResumableCSVLogger"


@pytest.mark.parametrize("name", list(gpu.EVAL_CONFIGS))
def test_gpu_eval_data_has_no_near_ties(name):
    """The CUDA == CPU metric test needs rankings that float32 rounding cannot flip."""
    config, data = gpu.EVAL_CONFIGS[name], gpu.eval_data()
    assert gpu.min_rank_gap(gpu.full_distances(data[0], data[1], config)) > 5e-6
    result = gpu.evaluate_on("cpu", config, data)
    assert 0.0 < result.mAP < 1.0 and result.num_valid_queries == 12


def test_gpu_fit_helper_on_cpu_bf16(compose_config):
    """The helper of the CUDA fits, run on CPU in bf16-mixed: finite losses, weights move, fp32 masters."""
    record = gpu.fit_few_steps(compose_config(*gpu.task_overrides("transreid_tiny")), "cpu", "bf16-mixed", 3)
    gpu.check_fit(record, 3)


def test_gpu_margin_classifier_fit_on_cpu_bf16(compose_config):
    """The overrides of the CUDA margin-classifier fits compose and train on CPU in bf16-mixed."""
    overrides = [*gpu.task_overrides(gpu.MARGIN_CLASSIFIERS["arcface"]), "model/classifier=arcface"]
    gpu.check_fit(gpu.fit_few_steps(compose_config(*overrides), "cpu", "bf16-mixed", 3), 3)
