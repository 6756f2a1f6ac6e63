"""Which weights a run reports: the last epoch's (official), or the best on held-out training identities.

The official code tests ``*_120.pth``. The old default here validated on the test split every 10 epochs
and tested the best of those evaluations, i.e. chose the reported weights on the test set; these tests
fail on it (``best_checkpoint`` was an ``epochNNN.ckpt`` chosen by test-split ``val/mAP``).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from reid.config_checks import ConfigValueError
from reid.data.records import Record
from reid.data.validation_split import hold_out_identities
from reid.run import run
from reid.training.checkpoint_io import AtomicCheckpointIO
from tests.conftest import TINY_RUN, epoch_steps

SMALL = [*TINY_RUN, "+model.backbone.depth=1", "+model.backbone.embed_dim=32", "+model.backbone.num_heads=2"]
SMALL += ["callbacks.learning_rate_monitor=null", "data.num_workers=0"]


def test_a_run_reports_its_last_epoch_and_keeps_no_checkpoint_chosen_on_the_test_split(compose_config):
    cfg = compose_config(*SMALL)
    assert cfg.test_weights == "last" and cfg.data.val_identities == 0
    summary = run(cfg)
    out = Path(cfg.paths.output_dir)
    tested = json.loads((out / "results.json").read_text())["tested_weights"]
    assert tested == summary["tested_weights"]
    assert tested["selection"] == "last" and Path(tested["checkpoint"]).name == "last.ckpt"
    assert tested["epochs"] == 2 and tested["global_step"] == sum(epoch_steps(cfg, 2))
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["last.ckpt"]


def test_selection_best_chooses_on_held_out_training_identities(compose_config, tmp_path):
    """``selection=best data.val_identities=2``: two of the 8 training identities leave training (the
    classifier has 6 classes), val/* scores their query/gallery, and the test scores the best val/mAP's
    checkpoint on the test split, recorded with its score."""
    record = tmp_path / "val.jsonl"
    recorder = ["+callbacks.recorder._target_=tests.training.callbacks.ValidationRecorder"]
    recorder.append(f"+callbacks.recorder.path={record}")
    cfg = compose_config(*SMALL, "selection=best", "data.val_identities=2", "trainer.max_epochs=3", *recorder)
    summary = run(cfg)
    tested = summary["tested_weights"]
    assert tested["selection"] == "best" and Path(tested["checkpoint"]).name.startswith("epoch")
    validations = [json.loads(line) for line in record.read_text().splitlines()]
    assert len(validations) == 3
    assert tested["val/mAP"] == pytest.approx(max(v["mAP"] for v in validations))
    state = AtomicCheckpointIO().load_checkpoint(tested["checkpoint"])["state_dict"]
    assert state["net.global_head.classifier.weight"].shape[0] == 6  # 8 - 2 held out
    assert set(summary["test"]) >= {"mAP", "R1"}


def test_best_needs_a_held_out_validation_split(compose_config):
    with pytest.raises(ConfigValueError, match="val/mAP is scored on the test split"):
        run(compose_config(*SMALL, "selection=best", "data.val_identities=0"))
    with pytest.raises(ConfigValueError, match="test_weights='first'"):
        run(compose_config(*SMALL, "test_weights=first"))


def test_held_out_identities_leave_training_and_each_query_has_another_camera():
    train = [
        Record(f"{pid}_{i}.jpg", pid, camid) for pid in range(10) for i, camid in enumerate([0, 0, 1, 2, 1])
    ]
    train += [Record("solo.jpg", 10, 0), Record("solo2.jpg", 10, 0)]  # one camera: never held out
    held = hold_out_identities(train, 3, seed=0)
    query_ids = {r.path.split("_")[0] for r in held.query}
    assert len(query_ids) == 3 and {r.path.split("_")[0] for r in held.gallery} == query_ids
    assert Counter(r.path.split("_")[0] for r in held.query) == {
        pid: 3 for pid in query_ids
    }  # one per camera
    assert all(r.path.split("_")[0] not in query_ids for r in held.train)
    assert sorted({r.pid for r in held.train}) == list(range(8))  # relabelled 0..7
    assert hold_out_identities(train, 3, seed=0) == held  # seeded
    with pytest.raises(ValueError, match="data.val_identities=11"):
        hold_out_identities(train, 11, seed=0)
