"""One tiny trained run with pictures, per test session: a PASS-style ViT (3 part tokens, test feature
cat(cls, mean(parts))) on the tiny synthetic tree, 2 steps and a validation, then the test of the best
checkpoint; CSV and wandb (offline) loggers; the ranked-list callback of conf/callbacks/default.yaml with
2 worst + 2 best queries and a top-30 list (every query's first true match is in view). The folder holds
``.hydra/config.yaml`` as ``python -m reid.run`` leaves it, so the tools can rebuild the run."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf, open_dict

from reid.config import CONFIG_DIR
from tests.conftest import TINY_RUN

PICTURED_RUN = [
    *(o for o in TINY_RUN if not o.startswith("logger=")),
    "logger=[csv,wandb]",
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=2",
    "+model.backbone.num_parts=3",
    "model.feature=cls_parts",
    "callbacks.learning_rate_monitor=null",
    "callbacks.ranked_list.worst=2",
    "callbacks.ranked_list.best=2",
    "callbacks.ranked_list.top_k=30",
    "callbacks.ranked_list.cell=[64,32]",
]


@pytest.fixture(scope="session")
def pictured_run(tmp_path_factory: pytest.TempPathFactory, tiny_data_dir: Path) -> Path:
    from reid.run import run

    out = tmp_path_factory.mktemp("pictured_run")
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("run", overrides=[f"paths.data_dir={tiny_data_dir}", *PICTURED_RUN])
    with open_dict(cfg):
        cfg.paths.output_dir = str(out)
    (out / ".hydra").mkdir(parents=True)
    OmegaConf.save(cfg, out / ".hydra" / "config.yaml")  # what @hydra.main saves: unresolved
    with pytest.MonkeyPatch.context() as env:
        env.delenv("WANDB_API_KEY", raising=False)
        env.setenv("WANDB_MODE", "offline")
        env.setenv("WANDB_SILENT", "true")
        try:
            run(cfg)
        finally:
            import wandb

            wandb.finish()
    return out
