"""benchmarks/memory_bench.py on the tiny ViT: its main path (two fresh worker processes, the table, no
doc write with --no-doc), one in-process measurement, the report's arithmetic and its argument checks."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import memory_bench


def test_main_measures_both_settings_and_leaves_the_doc_alone(monkeypatch, capsys):
    monkeypatch.setattr(memory_bench, "write_section", lambda *a: pytest.fail("--no-doc wrote the doc"))
    text = memory_bench.main(["--model", "vit_tiny", "--batch", "4", "--steps", "2", "--no-doc"])
    assert capsys.readouterr().out.strip() == text.strip()
    rows = [line.split("|")[1:-1] for line in text.splitlines() if line.startswith(("| on", "| off"))]
    assert [cells[0].strip() for cells in rows] == ["off", "on"]
    for cells in rows:
        peak, own, seconds = (float(cell.replace(",", "")) for cell in cells[1:])
        assert peak >= 0 and own > 0 and seconds > 0
    assert "ViT-tiny (tests) at 64x32, batch 4" in text and "--model vit_tiny" in text


def test_one_measurement_in_process_counts_model_gradients_and_momentum():
    row = memory_bench.measure("vit_tiny", checkpointing=True, batch=4, steps=2, device="cpu")
    task = memory_bench.supervised_task("vit_tiny", (64, 32))
    params = sum(p.numel() for p in task.parameters())
    trainable = sum(p.numel() for p in task.parameters() if p.requires_grad)
    assert row["own_mib"] == pytest.approx(4 * (params + 2 * trainable) / 2**20)
    assert row["checkpointing"] is True and row["step_s"] > 0 and row["peak_above_mib"] >= 0


def test_report_states_the_saving_and_the_slowdown():
    args = argparse.Namespace(model="vit_b_ics_384", batch=4, steps=3, device="cpu")
    rows = [
        {"checkpointing": False, "peak_above_mib": 2000.0, "own_mib": 1000.0, "step_s": 4.0},
        {"checkpointing": True, "peak_above_mib": 500.0, "own_mib": 1000.0, "step_s": 5.0},
    ]
    text = memory_bench.report(rows, args, "test machine", ["--batch", "4"])
    assert "| off | 2,000 | 1,000 | 4.00 |" in text and "| on | 500 | 1,000 | 5.00 |" in text
    assert "keeps 75% less memory above the model at 1.25x the step time" in text
    assert "ViT-B/16+ICS (TransReID-SSL) at 384x128" in text


@pytest.mark.parametrize(
    ("argv", "message"),
    [(["--batch", "3"], "--batch must be an even number"), (["--steps", "1"], "--steps must be >= 2")],
)
def test_bad_arguments_are_refused(argv, message, capsys):
    with pytest.raises(SystemExit):
        memory_bench.parse_args(argv)
    assert message in capsys.readouterr().err
