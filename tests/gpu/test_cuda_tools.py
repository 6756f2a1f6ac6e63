"""CUDA paths of the tools on a trained run: ``reid.tools.extract --device cuda`` gives the CPU features.

Run on a GPU machine with ``pytest -m gpu`` (``bash benchmarks/gpu_check.sh`` does); skipped without CUDA.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from reid.tools import extract
from tests.tools.trained_runs import FAMILIES, ONE_STEP, _fit_in_process

CUDA = torch.cuda.is_available()
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not CUDA, reason="needs a CUDA device")]


@pytest.mark.parametrize("family", ["vit", "snr", "usl_cnn"])
def test_extract_on_cuda_equals_cpu(family: str, tmp_path: Path, tiny_data_dir: Path) -> None:
    """The same run, images and transform embedded on both devices: fp32 kernels differ by round-off only."""
    run = tmp_path / "run"
    _fit_in_process([*FAMILIES[family], *ONE_STEP, f"paths.data_dir={tiny_data_dir}"], run)
    images = tiny_data_dir / "synthetic_tiny" / "query"
    features = {}
    for device in ("cpu", "cuda"):
        out = tmp_path / f"{device}.npy"
        extract.main([str(run), str(images), str(out), "--device", device, "--no-progress"])
        features[device] = np.load(out)
    assert features["cpu"].shape == features["cuda"].shape and features["cpu"].shape[0] > 0
    np.testing.assert_allclose(features["cuda"], features["cpu"], atol=1e-4)
