"""Every experiment's recipe beside the official code it mirrors: ``python -m reid.tools.recipes``.

Writes ``docs/recipes.md`` (``--write``) or prints the tables of the experiments named: for each
experiment its official source (:data:`SOURCES`), then one row per value that defines the recipe
(:class:`Family`'s fields: the composed config key, our value, the official file and key it mirrors),
then the deliberate differences from the official code, each with its reason and the override that
restores the official value. The tables are composed from ``conf/`` each time, so the document cannot
drift from the configs (``tests/test_recipes_doc.py`` regenerates it and compares); the official values
themselves are held by ``tests/test_experiment_values.py`` and ``tests/test_usl_experiment_values.py``
against transcriptions of the official files.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf

from reid.config import CONFIG_DIR

DOC = CONFIG_DIR.parent / "docs" / "recipes.md"


@dataclass(frozen=True)
class Field:
    """A config key that is part of a recipe and the official file / key it mirrors."""

    key: str
    official: str


@dataclass(frozen=True)
class Difference:
    """A deliberate difference from the official code: where it is, what the official value is, the
    override that restores it, and why the default differs."""

    key: str
    official: str
    override: str | None  # None: no override restores it (the reason says why)
    reason: str


@dataclass(frozen=True)
class Family:
    name: str
    repository: str
    fields: tuple[Field, ...]
    differences: tuple[Difference, ...] = ()


BF16 = Difference(
    "trainer.precision",
    "fp16 autocast with a GradScaler (processor.py: amp.autocast, amp.GradScaler)",
    "trainer.precision=16-mixed",
    "bf16 has fp32's exponent range: no loss scaling and no skipped steps, as fast on Ampere and later; the "
    "official fp16 with its scaler is one override away (the scale is saved in checkpoints)",
)
TRANSREID_FIELDS = (
    Field("data.dataset._target_", "DATASETS.NAMES"),
    Field("data.image_size", "INPUT.SIZE_TRAIN / INPUT.SIZE_TEST"),
    Field("data.pixel_mean", "INPUT.PIXEL_MEAN"),
    Field("data.pixel_std", "INPUT.PIXEL_STD"),
    Field("data.transforms.train_interpolation", "datasets/make_dataloader.py: T.Resize(SIZE_TRAIN, interpolation=3)"),
    Field("data.transforms.test_interpolation", "datasets/make_dataloader.py: T.Resize(SIZE_TEST)"),
    Field("data.transforms.flip_prob", "INPUT.PROB"),
    Field("data.transforms.padding", "INPUT.PADDING"),
    Field("data.transforms.erasing", "INPUT.RE_PROB; timm RandomErasing(mode='pixel', max_count=1)"),
    Field("data.batch_size", "SOLVER.IMS_PER_BATCH"),
    Field("data.num_instances", "DATALOADER.NUM_INSTANCE (datasets/sampler.py RandomIdentitySampler)"),
    Field("model.backbone._target_", "MODEL.TRANSFORMER_TYPE"),
    Field("model.backbone.stride", "MODEL.STRIDE_SIZE"),
    Field("model.backbone.stem", "MODEL.STEM_CONV"),
    Field("model.backbone.drop_path_rate", "MODEL.DROP_PATH"),
    Field("model.backbone.num_parts", "PASS: the part tokens of the backbone"),
    Field("model.weights_grid", "MODEL.PRETRAIN_HW_RATIO"),
    Field("model.sie", "MODEL.SIE_CAMERA, SIE_VIEW, SIE_COE"),
    Field("model.jpm", "MODEL.JPM, SHIFT_NUM, SHUFFLE_GROUP, DEVIDE_LENGTH"),
    Field("model.feature", "MODEL.FEAT_FUSION (PASS: cat)"),
    Field("model.neck_feat", "TEST.NECK_FEAT"),
    Field("model.loss.id.label_smoothing", "MODEL.IF_LABELSMOOTH"),
    Field("model.loss.id.weight", "MODEL.ID_LOSS_WEIGHT"),
    Field("model.loss.tri.margin", "MODEL.NO_MARGIN (null: soft margin) / SOLVER.MARGIN"),
    Field("model.loss.tri.weight", "MODEL.TRIPLET_LOSS_WEIGHT"),
    Field("model.optimizer._target_", "SOLVER.OPTIMIZER_NAME"),
    Field("model.optimizer.lr", "SOLVER.BASE_LR"),
    Field("model.optimizer.momentum", "SOLVER.MOMENTUM"),
    Field("model.optimizer.weight_decay", "SOLVER.WEIGHT_DECAY"),
    Field("model.param_groups.bias_lr_factor", "SOLVER.BIAS_LR_FACTOR (solver/make_optimizer.py)"),
    Field("model.param_groups.weight_decay_bias", "SOLVER.WEIGHT_DECAY_BIAS"),
    Field("model.schedule", "solver/scheduler_factory.py (timm CosineLRScheduler), SOLVER.WARMUP_EPOCHS, processor.py"),
    Field("trainer.max_epochs", "SOLVER.MAX_EPOCHS"),
    Field("eval.normalize", "TEST.FEAT_NORM"),
    Field("eval.rerank", "TEST.RE_RANKING"),
    Field("test_weights", "test.py: TEST.WEIGHT = transformer_120.pth (the last epoch)"),
    Field("trainer.precision", "processor.py: amp.autocast"),
)  # fmt: skip
TRANSREID = Family("TransReID", "heshuting555/TransReID", TRANSREID_FIELDS, (BF16,))
TRANSREID_SSL = Family(
    "TransReID-SSL fine-tuning", "damo-cv/TransReID-SSL transreid_pytorch", TRANSREID_FIELDS, (BF16,)
)
PASS_FINETUNE = Family(
    "PASS fine-tuning", "CASIA-IVA-Lab/PASS-reID PASS_transreid", TRANSREID_FIELDS, (BF16,)
)
RPE = Family(
    "The users' relative-position method on the TransReID-SSL ViT-B+ICS recipe (no official code)",
    "damo-cv/TransReID-SSL transreid_pytorch",
    (*TRANSREID_FIELDS, Field("model.backbone.rel_pos_bias", "the users' relative position bias"),
     Field("model.loss.rpe_triplet", "the users' RPE-triplet loss (docs/rpe.md)")),
    (BF16,),
)  # fmt: skip
BOT_FIELDS = (
    Field("data.dataset._target_", "DATASETS.NAMES"),
    Field("data.image_size", "INPUT.SIZE_TRAIN / INPUT.SIZE_TEST"),
    Field("data.pixel_mean", "INPUT.PIXEL_MEAN"),
    Field("data.pixel_std", "INPUT.PIXEL_STD"),
    Field("data.transforms.train_interpolation", "data/transforms/build.py: T.Resize(SIZE_TRAIN)"),
    Field("data.transforms.test_interpolation", "data/transforms/build.py: T.Resize(SIZE_TEST)"),
    Field("data.transforms.flip_prob", "INPUT.PROB"),
    Field("data.transforms.padding", "INPUT.PADDING"),
    Field("data.transforms.erasing", "INPUT.RE_PROB; data/transforms/transforms.py RandomErasing(mean=PIXEL_MEAN)"),
    Field("data.batch_size", "SOLVER.IMS_PER_BATCH"),
    Field("data.num_instances", "DATALOADER.NUM_INSTANCE (data/samplers/triplet_sampler.py)"),
    Field("model.backbone._target_", "MODEL.NAME"),
    Field("model.backbone.last_stride", "MODEL.LAST_STRIDE"),
    Field("model.backbone.stem_relu", "modeling/backbones/resnet.py: `# x = self.relu(x)`"),
    Field("model.net.pool", "modeling/baseline.py: nn.AdaptiveAvgPool2d(1)"),
    Field("model.neck_feat", "TEST.NECK_FEAT"),
    Field("model.loss.id.label_smoothing", "MODEL.IF_LABELSMOOTH (layers/triplet_loss.py CrossEntropyLabelSmooth)"),
    Field("model.loss.tri.margin", "SOLVER.MARGIN"),
    Field("model.loss.center", "MODEL.METRIC_LOSS_TYPE triplet_center, SOLVER.CENTER_LOSS_WEIGHT, SOLVER.CENTER_LR"),
    Field("model.optimizer._target_", "SOLVER.OPTIMIZER_NAME"),
    Field("model.optimizer.lr", "SOLVER.BASE_LR"),
    Field("model.optimizer.weight_decay", "SOLVER.WEIGHT_DECAY"),
    Field("model.param_groups.bias_lr_factor", "SOLVER.BIAS_LR_FACTOR"),
    Field("model.param_groups.weight_decay_bias", "SOLVER.WEIGHT_DECAY_BIAS"),
    Field("model.schedule", "solver/lr_scheduler.py WarmupMultiStepLR; WARMUP_*, STEPS, GAMMA; engine/trainer.py"),
    Field("trainer.max_epochs", "SOLVER.MAX_EPOCHS"),
    Field("eval.normalize", "TEST.FEAT_NORM"),
    Field("test_weights", "the last epoch's weights"),
    Field("trainer.precision", "fp32 (no autocast in engine/trainer.py)"),
)  # fmt: skip
BOT_WARMUP = Difference(
    "model.schedule.warmup_start_factor",
    "0.01 (configs/softmax_triplet_with_center.yml WARMUP_FACTOR)",
    "model.schedule.warmup_start_factor=0.01",
    "the paper's 0.1 (Luo et al. Sec. 4.1: 3.5e-5 rising to 3.5e-4 over 10 epochs), the value its published "
    "table states; the released config starts ten times lower",
)
FP32 = Difference(
    "trainer.precision",
    "fp32",
    "trainer.precision=32-true",
    "trainer=gpu trains in bf16-mixed, about twice as fast on tensor cores; fp32 is one override away",
)
BOT = Family("BoT", "michuanhaohao/reid-strong-baseline", BOT_FIELDS, (BOT_WARMUP, FP32))
SNR = Family(
    "SNR on the BoT recipe (microsoft/SNR never released its re-ID code)",
    "michuanhaohao/reid-strong-baseline (the recipe); Jin et al., CVPR 2020 (the blocks)",
    (*BOT_FIELDS, Field("model.backbone.stages", "SNR after each stage (paper Sec. 3)"),
     Field("model.backbone.reduction", "r of the gate (paper Eq. 4)"),
     Field("model.loss.causality", "dual causality loss (paper Eq. 5-6)")),
    (BOT_WARMUP, FP32),
)  # fmt: skip
CLUSTER_FIELDS = (
    Field("data.dataset._target_", "-d"),
    Field("data.image_size", "--height, --width"),
    Field("data.pixel_mean", "--self-norm: 0.5, else ImageNet"),
    Field("data.transforms.train_interpolation", "get_train_loader: T.Resize(interpolation=3)"),
    Field("data.transforms.test_interpolation", "get_test_loader: T.Resize(interpolation=3)"),
    Field("data.transforms.erasing", "RandomErasing(probability=0.5, mean=[0.485, 0.456, 0.406])"),
    Field("data.batch_size", "-b"),
    Field("data.num_instances", "--num-instances"),
    Field("data.iterations", "--iters"),
    Field("model.backbone._target_", "-a"),
    Field("model.backbone.stem", "--conv-stem"),
    Field("model.backbone.drop_path_rate", "--drop-path-rate"),
    Field("model.weights_grid", "--hw-ratio"),
    Field("model.feature", "--feat-fusion (PASS)"),
    Field("model.clustering", "--eps, --k1, --k2, DBSCAN min_samples 4"),
    Field("model.memory", "--temp, --momentum, --use-hard"),
    Field("model.optimizer", "--optimizer, --lr, --weight-decay"),
    Field("model.schedule", "StepLR(step_size=--step-size, gamma=0.1), stepped after each epoch"),
    Field("trainer.max_epochs", "--epochs"),
    Field("trainer.check_val_every_n_epoch", "--eval-step"),
    Field("test_weights", "the weights the final test scores"),
    Field("trainer.precision", "fp32"),
)  # fmt: skip
CLUSTER_BEST = Difference(
    "test_weights",
    "the best of the test-split evaluations (model_best.pth.tar, chosen on the test mAP every --eval-step)",
    None,
    "a number chosen on the test set is not a test result, so the last epoch is reported and choosing on "
    "the test split is not offered (selection=best chooses on held-out labelled identities, which an "
    "unsupervised run does not have)",
)
CLUSTER_CONTRAST = Family(
    "Cluster Contrast",
    "alibaba/cluster-contrast-reid, TransReID-SSL cluster-contrast-reid",
    CLUSTER_FIELDS,
    (CLUSTER_BEST,),
)
SSL_FIELDS = (
    Field("data.dataset._target_", "--data_path (LUPerson), --filter_path / --keep_num (CFS)"),
    Field("data.batch_size", "--batch_size_per_gpu"),
    Field("data.augment", "DataAugmentationDINO: --global_crops_scale, --local_crops_scale, --local_crops_number, --height/--width, --crop_height/--crop_width"),
    Field("model.backbone._target_", "--arch"),
    Field("model.num_parts", "PASS: 3 part tokens"),
    Field("model.out_dim", "--out_dim"),
    Field("model.norm_last_layer", "--norm_last_layer"),
    Field("model.lr", "--lr (x batch_size_per_gpu x world_size / 256)"),
    Field("model.min_lr", "--min_lr"),
    Field("model.warmup_epochs", "--warmup_epochs"),
    Field("model.weight_decay", "--weight_decay"),
    Field("model.weight_decay_end", "--weight_decay_end"),
    Field("model.momentum_teacher", "--momentum_teacher"),
    Field("model.teacher_temp", "--teacher_temp"),
    Field("model.warmup_teacher_temp", "--warmup_teacher_temp"),
    Field("model.warmup_teacher_temp_epochs", "--warmup_teacher_temp_epochs"),
    Field("model.clip_grad", "--clip_grad"),
    Field("model.freeze_last_layer_epochs", "--freeze_last_layer"),
    Field("trainer.max_epochs", "--epochs"),
    Field("trainer.precision", "--use_fp16 (True)"),
)  # fmt: skip
DINO_FP16 = Difference(
    "trainer.precision",
    "fp16 autocast with a GradScaler (--use_fp16 True)",
    "trainer.precision=16-mixed",
    "bf16-mixed: DINO's own README warns that fp16 can be unstable for ViT-B pretraining; no loss scale to tune",
)
DINO = Family("DINO pretraining (TransReID-SSL)", "damo-cv/TransReID-SSL dino", SSL_FIELDS, (DINO_FP16,))
PASS_PRETRAIN = Family("PASS pretraining", "CASIA-IVA-Lab/PASS-reID PASS", SSL_FIELDS, (DINO_FP16,))
DEMO = Family("CPU demo (no official counterpart)", "-", ())

T, S, P = "configs", "transreid_pytorch/configs", "PASS_transreid"
SOURCES: dict[str, tuple[Family, str]] = {
    "transreid_market": (TRANSREID, f"{T}/Market/vit_transreid_stride.yml"),
    "transreid_market_384": (TRANSREID, f"{T}/Market/vit_transreid_stride_384.yml"),
    "transreid_duke": (TRANSREID, f"{T}/DukeMTMC/vit_transreid_stride.yml"),
    "transreid_msmt": (TRANSREID, f"{T}/MSMT17/vit_transreid_stride.yml"),
    "transreid_msmt_384": (TRANSREID, f"{T}/MSMT17/vit_transreid_stride_384.yml"),
    "transreid_occ_duke": (TRANSREID, f"{T}/OCC_Duke/vit_transreid_stride.yml"),
    "transreid_veri": (TRANSREID, f"{T}/VeRi/vit_transreid_stride.yml"),
    "transreid_vehicleid": (TRANSREID, f"{T}/VehicleID/vit_transreid_stride.yml"),
    "vit_baseline_market": (TRANSREID, f"{T}/Market/vit_base.yml"),
    "vit_small_lup_market": (TRANSREID_SSL, f"{S}/market/vit_small.yml"),
    "vit_small_lup_msmt": (TRANSREID_SSL, f"{S}/msmt17/vit_small.yml"),
    "vit_small_ics_lup_market": (TRANSREID_SSL, f"{S}/market/vit_small_ics.yml"),
    "vit_small_ics_lup_msmt": (TRANSREID_SSL, f"{S}/msmt17/vit_small_ics.yml"),
    "vit_base_ics_lup_market_384": (TRANSREID_SSL, f"{S}/market/vit_base_ics_384.yml"),
    "vit_base_ics_lup_msmt_384": (TRANSREID_SSL, f"{S}/msmt17/vit_base_ics_384.yml"),
    "dino_market": (TRANSREID_SSL, f"{S}/market/vit_small.yml, from our own DINO pretraining (experiment=dino_lup)"),
    "rpe_market": (RPE, f"{S}/market/vit_base_ics_384.yml + the relative position bias"),
    "rpe_msmt": (RPE, f"{S}/msmt17/vit_base_ics_384.yml + the relative position bias"),
    "rpe_triplet_market": (RPE, f"{S}/market/vit_base_ics_384.yml + the bias and the RPE-triplet loss"),
    "rpe_triplet_msmt": (RPE, f"{S}/msmt17/vit_base_ics_384.yml + the bias and the RPE-triplet loss"),
    "pass_market": (PASS_FINETUNE, f"{P}/configs/market/vit_small.yml, run_pass_vit_small_Market.sh"),
    "pass_msmt": (PASS_FINETUNE, f"{P}/configs/msmt17/vit_small.yml, run_pass_vit_small_MSMT17.sh"),
    "pass_vit_base_market_384": (PASS_FINETUNE, f"{P}/configs/market/vit_base.yml, run_pass_vit_base_Market_384.sh"),
    "pass_vit_base_msmt_384": (PASS_FINETUNE, f"{P}/configs/msmt17/vit_base.yml, run_pass_vit_base_MSMT17_384.sh"),
    "bot_r50_market": (BOT, "configs/softmax_triplet_with_center.yml, Experiment-all_tricks-tri_center-market.sh"),
    "bot_r50_market2duke": (BOT, "configs/softmax_triplet_with_center.yml, tested on DukeMTMC-reID too"),
    "bot_r50_ibn_market2duke": (BOT, "configs/softmax_triplet_with_center.yml with MODEL.NAME resnet50_ibn_a"),
    "snr_market2duke": (SNR, "the BoT recipe with SNR blocks, Market-1501 -> DukeMTMC-reID"),
    "snr_duke2market": (SNR, "the BoT recipe with SNR blocks, DukeMTMC-reID -> Market-1501"),
    "snr_md2msmt": (SNR, "the BoT recipe with SNR blocks, Market-1501 + DukeMTMC-reID -> MSMT17"),
    "usl_market": (CLUSTER_CONTRAST, "TransReID-SSL cluster-contrast-reid/market_usl.sh (ViT-S)"),
    "usl_msmt": (CLUSTER_CONTRAST, "TransReID-SSL cluster-contrast-reid/msmt_usl.sh (ViT-S)"),
    "usl_ics_market": (CLUSTER_CONTRAST, "TransReID-SSL cluster-contrast-reid/market_usl.sh --conv-stem"),
    "usl_ics_msmt": (CLUSTER_CONTRAST, "TransReID-SSL cluster-contrast-reid/msmt_usl.sh --conv-stem"),
    "uda_msmt2market": (CLUSTER_CONTRAST, "TransReID-SSL cluster-contrast-reid/market_uda.sh"),
    "uda_market2msmt": (CLUSTER_CONTRAST, "TransReID-SSL cluster-contrast-reid/msmt_uda.sh"),
    "uda_ics_msmt2market": (CLUSTER_CONTRAST, "TransReID-SSL cluster-contrast-reid/market_uda.sh --conv-stem"),
    "uda_ics_market2msmt": (CLUSTER_CONTRAST, "TransReID-SSL cluster-contrast-reid/msmt_uda.sh --conv-stem"),
    "usl_pass_market": (CLUSTER_CONTRAST, "PASS-reID PASS_cluster_contrast_reid/market_usl_cat_singleneck.sh"),
    "usl_r50_market": (CLUSTER_CONTRAST, "alibaba/cluster-contrast-reid README (ResNet-50, Market-1501)"),
    "usl_r50_market_infomap": (CLUSTER_CONTRAST, "alibaba/cluster-contrast-reid examples/cluster_contrast_train_usl_infomap.py"),
    "dino_lup": (DINO, "dino/script/vit-s_cfs_lup.sh"),
    "dino_lup_vit_base_ics": (DINO, "dino/script/vit-b_ics_cfs_lup.sh"),
    "pass_lup": (PASS_PRETRAIN, "PASS/script/vit-s_full_lup-pass.sh"),
    "pass_lup_vit_base": (PASS_PRETRAIN, "PASS/script/vit-b_full_lup-pass.sh"),
    **{
        name: (DEMO, "-")
        for name in ("demo", "rpe_demo", "rpe_triplet_demo", "dino_demo", "pass_demo", "pass_demo_finetune",
                     "bot_demo_a2b", "bot_ibn_demo_a2b", "snr_demo_a2b", "uda_demo_a2b", "uda_ibn_demo_a2b",
                     "uda_snr_demo_a2b", "usl_demo", "usl_demo_b2a")
    },
}  # fmt: skip
"""Every experiment: its recipe family and the official file it follows (a new experiment must be added)."""


def _value(node: Any) -> str:
    """A config value as one line: scalars as they are, nodes as a compact flow mapping."""
    if isinstance(node, DictConfig | ListConfig):
        node = OmegaConf.to_container(node, resolve=True)
    if isinstance(node, dict | list):
        text = yaml.safe_dump(node, default_flow_style=True, width=10_000, sort_keys=False).strip()
    else:
        text = "null" if node is None else str(node)
    return text.replace("|", "\\|")


def compose_experiment(name: str) -> DictConfig:
    """The composed run config of ``experiment=name``."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from reid.config import register_resolvers
    from reid.config_store import store_configs

    register_resolvers()
    store_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name="run", overrides=[f"experiment={name}", "paths.root_dir=."])


def experiment_table(name: str, cfg: DictConfig) -> str:
    """The markdown of one experiment: source, values, differences."""
    family, source = SOURCES[name]
    lines = [f"### `{name}`", "", f"{family.name}: `{family.repository}` `{source}`.", ""]
    if family.fields:
        lines += ["| key | value | official |", "|---|---|---|"]
        for field in family.fields:
            value = OmegaConf.select(cfg, field.key, default="(absent)")
            if value == "(absent)":
                continue
            lines.append(f"| `{field.key}` | `{_value(value)}` | {field.official} |")
        lines.append("")
    if family.differences:
        lines += ["Deliberate differences:", ""]
        for diff in family.differences:
            restore = f"override: `{diff.override}`" if diff.override else "no override restores it"
            lines.append(
                f"- `{diff.key}` = `{_value(OmegaConf.select(cfg, diff.key))}`; official: {diff.official}; "
                f"{restore}. Why: {diff.reason}."
            )
        lines.append("")
    return "\n".join(lines)


HEADER = """# Recipes

What "reproduces the official recipe" means here: an experiment trains as the official code does, not
only loads its checkpoints. For every experiment below, each value that defines its training is listed
beside the official file and key it mirrors; where the default differs on purpose the official value is
one override away and the reason is given. Held by tests against transcriptions of the official code:

- the lr of every parameter group at every epoch, including when the scheduler steps
  (`tests/optim/test_schedules.py`, `tests/test_experiment_values.py`), and DINO/PASS's per-iteration lr,
  weight decay, teacher momentum and temperature;
- the train and test transforms, the erasing variant in distribution (`tests/data/test_transforms.py`);
- the P x K sampler's epoch: as many batches as the official `RandomIdentitySampler` draws
  (`tests/data/test_samplers.py`);
- three training steps per family against a plain-torch transcription of the official step: losses to
  1e-4, parameters to 1e-5 (`tests/training/test_official_trajectories.py`);
- the reported weights: the last epoch's, as the official test scripts load (`selection=last`; the test
  split is never used to choose; `selection=best` chooses on held-out training identities,
  `tests/training/test_selection.py`).

Several processes train the recipe as one process does (`trainer.devices`, `trainer.num_nodes`):
`data.batch_size` is the global batch, the cross-batch losses see all of it and batch norm uses its
statistics (`tests/training/test_ddp_equals_one_process.py`). The official TransReID DDP code mines
triplets within each process's share instead; that is not reproduced.

Generated by `python -m reid.tools.recipes --write` from `conf/`; `tests/test_recipes_doc.py` fails when
this file and the configs disagree.
"""


def render(names: Sequence[str] | None = None) -> str:
    """The document (or the tables of ``names``), grouped by family in :data:`SOURCES` order."""
    chosen = list(names) if names else list(SOURCES)
    unknown = [n for n in chosen if n not in SOURCES]
    if unknown:
        raise ValueError(
            f"no recipe source for experiment(s) {unknown}: add them to reid.tools.recipes.SOURCES"
        )
    parts, family = [] if names else [HEADER], None
    for name in chosen:
        if SOURCES[name][0] is not family:
            family = SOURCES[name][0]
            parts.append(f"## {family.name}\n")
        parts.append(experiment_table(name, compose_experiment(name)))
    return "\n".join(parts).rstrip("\n") + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m reid.tools.recipes", description=__doc__.splitlines()[0])
    parser.add_argument("experiments", nargs="*", help="experiment names (default: all, as docs/recipes.md)")
    parser.add_argument("--write", action="store_true", help=f"write {DOC.relative_to(CONFIG_DIR.parent)}")
    args = parser.parse_args(argv)
    text = render(args.experiments)
    if args.write:
        DOC.write_text(text)
        print(f"wrote {DOC}")
    else:
        print(text, end="")


if __name__ == "__main__":
    from reid.tools.cli import run_tool

    run_tool(main, "python -m reid.tools.recipes")
