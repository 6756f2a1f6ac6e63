"""CUDA paths: bf16-mixed and 16-mixed fits of every task, and CUDA evaluation equal to CPU evaluation.

Run on a GPU machine with ``pytest -m gpu`` (``bash benchmarks/gpu_check.sh`` does); skipped without CUDA.
The helpers take the accelerator as an argument, so tests/test_gpu_check.py checks them on CPU too.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import lightning as L
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from reid.evaluation import AQEConfig, EvalConfig, RerankConfig, distance_chunks, evaluate
from reid.evaluation.pipeline import prepare_features
from reid.evaluation.rerank import rerank_distance_chunks
from reid.tasks.from_config import build_task
from tests.conftest import TINY_RUN, TINY_SSL_DATA

CUDA = torch.cuda.is_available()
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not CUDA, reason="needs a CUDA device")]

SUPERVISED = ["transreid_tiny", "bot_tiny"]
SSL = {"dino_tiny": "dino_lup", "pass_tiny": "pass_lup"}
STEPS = 8  # 16-mixed skips the first steps whose scaled gradients overflow (GradScaler halves its scale)


def task_overrides(model: str) -> list[str]:
    """Hydra overrides of a tiny run of ``model`` (a supervised or an SSL task) on the synthetic data."""
    if model in SSL:
        return [f"experiment={SSL[model]}", f"model={model}", "data=synthetic_ssl", "data.batch_size=8",
                *TINY_SSL_DATA]  # fmt: skip
    return [*TINY_RUN, f"model={model}"]


@dataclass
class FitRecord:
    losses: list[float]
    changed: list[str]  # trainable parameters that moved
    trainable: list[str]
    dtypes: set[torch.dtype]  # of the parameters after the fit (master weights stay fp32)


class _LossRecorder(L.Callback):
    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        self.losses.append(float(loss.detach()))


def fit_few_steps(cfg: DictConfig, accelerator: str, precision: str, steps: int = STEPS) -> FitRecord:
    """``steps`` optimiser steps of the task and datamodule ``cfg`` describes, under ``precision``."""
    L.seed_everything(0)
    datamodule = instantiate(cfg.data)
    task = build_task(cfg.model, datamodule.info, instantiate(cfg.eval))
    before = {n: p.detach().clone() for n, p in task.named_parameters() if p.requires_grad}
    recorder = _LossRecorder()
    trainer = L.Trainer(
        accelerator=accelerator, devices=1, precision=precision, max_steps=steps, max_epochs=100,
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        limit_val_batches=0, num_sanity_val_steps=0, callbacks=[recorder],
        default_root_dir=cfg.paths.output_dir,
    )  # fmt: skip
    trainer.fit(task, datamodule=datamodule)
    after = dict(task.named_parameters())
    changed = [n for n, old in before.items() if not torch.equal(old.cpu(), after[n].detach().cpu())]
    return FitRecord(recorder.losses, changed, list(before), {p.dtype for p in after.values()})


def check_fit(record: FitRecord, steps: int = STEPS) -> None:
    """Every step ran with a finite loss, most trainable tensors moved, weights stayed fp32."""
    assert len(record.losses) == steps, record.losses
    assert all(math.isfinite(x) for x in record.losses), record.losses
    assert len(record.changed) >= 0.5 * len(record.trainable), (
        f"only {len(record.changed)} of {len(record.trainable)} trainable tensors changed"
    )
    assert record.dtypes == {torch.float32}


@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed"])
@pytest.mark.parametrize("model", [*SUPERVISED, *SSL])
def test_mixed_precision_fit_on_cuda(compose_config: Callable[..., DictConfig], model: str, precision: str):
    check_fit(fit_few_steps(compose_config(*task_overrides(model)), "gpu", precision))


MARGIN_CLASSIFIERS = {"arcface": "transreid_tiny", "circle": "bot_tiny"}  # reid/models/classifiers.py


@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed"])
@pytest.mark.parametrize("classifier", sorted(MARGIN_CLASSIFIERS))
def test_margin_classifier_fit_on_cuda(
    compose_config: Callable[..., DictConfig], classifier: str, precision: str
):
    """The cosine logits of a margin classifier (scale 30) under autocast: finite, and the model trains."""
    overrides = [*task_overrides(MARGIN_CLASSIFIERS[classifier]), f"model/classifier={classifier}"]
    check_fit(fit_few_steps(compose_config(*overrides), "gpu", precision))


# ----------------------------------------------------------------------------------------------------------
# Evaluation: the same features on CUDA and on CPU give the same distances and metrics.

EVAL_CONFIGS = {
    "euclidean": EvalConfig(chunk_size=5),
    "cosine-raw": EvalConfig(metric="cosine", normalize=False, chunk_size=5),
    "aqe": EvalConfig(metric="cosine", aqe=AQEConfig(alpha=3.0, k=3), chunk_size=5),
    "rerank": EvalConfig(rerank=RerankConfig(k1=6, k2=3, lambda_value=0.3), chunk_size=5),
    "rerank-cosine": EvalConfig(
        metric="cosine", rerank=RerankConfig(k1=8, k2=4, lambda_value=0.5), chunk_size=7
    ),
}


def eval_data(seed: int = 1) -> tuple[torch.Tensor, ...]:
    """12 queries, 40 gallery items (2 distractors), 6 identities in 3 cameras, 32-d features with identity
    structure; float32 on CPU."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(7, 32, generator=g)
    q_pids, g_pids = torch.arange(12) % 6 + 1, torch.arange(40) % 6 + 1
    g_pids[-2:] = 0
    q_cams, g_cams = torch.arange(12) % 3, (torch.arange(40) + 1) % 3
    qf = centres[q_pids] + 0.9 * torch.randn(12, 32, generator=g)
    gf = centres[g_pids] + 0.9 * torch.randn(40, 32, generator=g)
    return qf, gf, q_pids, g_pids, q_cams, g_cams


def full_distances(qf: torch.Tensor, gf: torch.Tensor, config: EvalConfig) -> torch.Tensor:
    """The whole q x g matrix ``evaluate`` ranks (normalised / AQE features, plain distances or re-ranked),
    gathered on CPU."""
    qf, gf = prepare_features(qf, gf, config)
    if config.rerank is not None:
        chunks = rerank_distance_chunks(qf, gf, config.rerank, config.metric, config.chunk_size)
    else:
        chunks = distance_chunks(qf, gf, config.metric, config.chunk_size)
    return torch.cat([block.cpu() for _, block in chunks])


def min_rank_gap(dist: torch.Tensor) -> float:
    """Smallest gap between two distances of one query: rankings of both devices agree when it is far
    above the float32 rounding of the distances."""
    return float(dist.sort(dim=1).values.diff(dim=1).min())


def evaluate_on(device: str, config: EvalConfig, data: tuple[torch.Tensor, ...]):
    qf, gf, qp, gp, qc, gc = (t.to(device) for t in data)
    return evaluate(qf, gf, qp, gp, qc, gc, config)


@pytest.fixture
def exact_fp32():
    """No TF32 matmuls while comparing devices (a test before may have lowered the precision)."""
    old = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    yield
    torch.set_float32_matmul_precision(old)


@pytest.mark.parametrize("name", list(EVAL_CONFIGS))
def test_cuda_distances_equal_cpu(name: str, exact_fp32) -> None:
    config, (qf, gf, *_) = EVAL_CONFIGS[name], eval_data()
    cpu = full_distances(qf, gf, config)
    torch.testing.assert_close(full_distances(qf.cuda(), gf.cuda(), config), cpu, atol=1e-4, rtol=0)


@pytest.mark.parametrize("name", list(EVAL_CONFIGS))
def test_cuda_metrics_equal_cpu(name: str, exact_fp32) -> None:
    config, data = EVAL_CONFIGS[name], eval_data()
    cpu, cuda = evaluate_on("cpu", config, data), evaluate_on("cuda", config, data)
    assert cpu.num_valid_queries == cuda.num_valid_queries == 12
    assert abs(cpu.mAP - cuda.mAP) <= 1e-4 and abs(cpu.mINP - cuda.mINP) <= 1e-4
    torch.testing.assert_close(cuda.cmc.cpu(), cpu.cmc, atol=1e-4, rtol=0)
    assert 0.0 < cpu.mAP < 1.0  # neither trivial nor saturated: ranks differ between configs
