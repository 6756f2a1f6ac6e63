"""The RPE-triplet diagnostics of a run: the batch stats, the evaluation monitor (val/test rpe/auc,
collapse), the divergence flag, their place in results.json and summarize, and the slow held-out bar
of the default form."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from reid.callbacks.rpe_divergence import RPEDivergence
from reid.losses import RPETripletTerm
from reid.run import run
from tests.conftest import TINY_RUN

TINY_RPE = [
    *TINY_RUN,
    "model=vit_tiny",
    "++model.backbone.rel_pos_bias={shared:false}",
    "+model.loss.rpe_triplet={_target_:reid.losses.RPETripletTerm,weight:0.5,temperature:0.05}",
    "data.num_workers=0",
]


def test_a_run_logs_and_keeps_the_identity_information_of_its_relation_vectors(compose_config):
    cfg = compose_config(*TINY_RPE, "trainer.max_epochs=1")
    summary = run(cfg)
    logged = json.loads((Path(cfg.paths.output_dir) / "results.json").read_text())["last_logged"]
    for name in ("auc", "collapse", "raw_collapse", "pos_embed_mean_share", "rel_bias_mean_share", "d_an"):
        assert f"train/rpe_triplet/{name}" in logged, name
    for stage in ("val", "test"):  # the monitor, on the queries of the evaluation set
        assert 0.0 <= logged[f"{stage}/rpe/auc"] <= 1.0 and -1.0 <= logged[f"{stage}/rpe/collapse"] <= 1.0
    assert summary["test"]["rpe/auc"] == pytest.approx(logged["test/rpe/auc"])
    assert logged["train/rpe_triplet/diverged_step"] == -1.0

    from reid.tools.summarize import summarize_run

    (Path(cfg.paths.output_dir) / ".hydra").mkdir(exist_ok=True)
    (Path(cfg.paths.output_dir) / ".hydra" / "overrides.yaml").write_text("[]\n")
    row = summarize_run(Path(cfg.paths.output_dir))
    assert {"train/rpe_triplet/auc", "train/rpe_triplet/diverged_step", "test/rpe/auc"} <= set(row.metrics)


class _Term(RPETripletTerm):
    pass


def _step(callback: RPEDivergence, norm: float, step: int) -> SimpleNamespace:
    term = _Term()
    term.stats = {
        "relation_norm": torch.tensor(norm),
        "pos_embed_norm": torch.tensor(1.0),
        "d_an": torch.tensor(0.5),
    }
    logged = {}
    module = SimpleNamespace(objective=SimpleNamespace(terms={"rpe_triplet": term}))
    module.log = lambda name, value, **kwargs: logged.__setitem__(name, value)
    trainer = SimpleNamespace(global_step=step, should_stop=False)
    callback.on_train_batch_end(trainer, module, None, None, step)
    return SimpleNamespace(trainer=trainer, logged=logged)


def test_divergence_is_flagged_when_a_norm_grows_past_the_factor_and_stops_if_asked(caplog):
    watch = RPEDivergence(factor=10.0)
    assert _step(watch, 0.02, 0).logged["train/rpe_triplet/diverged_step"] == -1.0
    assert _step(watch, 0.19, 1).logged["train/rpe_triplet/diverged_step"] == -1.0
    with caplog.at_level("WARNING", logger="reid"):
        flagged = _step(watch, 0.21, 2)
    assert flagged.logged["train/rpe_triplet/diverged_step"] == 2.0 and not flagged.trainer.should_stop
    assert "relation_norm 0.02 -> 0.21" in caplog.text
    assert _step(watch, 0.5, 3).logged["train/rpe_triplet/diverged_step"] == 2.0  # the first step stays
    resumed = RPEDivergence(factor=10.0)
    resumed.load_state_dict(watch.state_dict())
    assert resumed.start["relation_norm"] == pytest.approx(0.02) and resumed.diverged_step == 2
    stopping = RPEDivergence(factor=10.0, stop=True)
    _step(stopping, 0.02, 0)
    assert _step(stopping, 1.0, 1).trainer.should_stop
    with pytest.raises(ValueError, match="factor"):
        RPEDivergence(factor=1.0)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_the_default_form_learns_identity_on_held_out_people_without_diverging(
    compose_config, tmp_path, seed
):
    """The bar of the default (soft) form: on a synthetic tree drawn with a seed no other test uses (its
    test identities never trained on), after the demo's schedule at the naive form's weight (the users'
    study: 50, no warm-up), the query relation vectors give a same-identity AUC >= 0.7, their mean
    cross-image cosine is <= 0.5, and no RPE norm grew 10x (the divergence flag stays -1)."""
    tree = [f"data.dataset.root={tmp_path}/heldout", "data.dataset.seed=8675309", f"seed={seed}"]
    cfg = compose_config("experiment=rpe_triplet_demo", *tree, "model.loss.rpe_triplet.weight=50",
                         "evaluate_before_fit=false", "callbacks.progress_bar=null")  # fmt: skip
    summary = run(cfg)
    assert summary["test"]["rpe/auc"] >= 0.7
    assert summary["test"]["rpe/collapse"] <= 0.5
    assert summary["last_logged"]["train/rpe_triplet/diverged_step"] == -1.0
