#!/usr/bin/env bash
# One prepared GPU check, sized for 8 minutes on one GPU:
#   install     a venv over the machine's python3 (--system-site-packages: its torch, lightning, timm,
#               torchmetrics; pip --user into a private PYTHONUSERBASE where venv is missing), the wheels
#               of `make gpu-wheels` (hydra-core, omegaconf, antlr4; rich and pytest only where the image
#               lacks them), then `pip install --no-deps -e .`; all offline
#   imports     reid imports without wandb (only logger=wandb needs it) and CUDA is visible
#   nvidia-smi  the device
#   pytest-gpu  pytest -m gpu: bf16/16-mixed fits of every task, CUDA evaluation == CPU evaluation
#   train-*     benchmarks/train_bench.py --device cuda, bf16-mixed, batch 64, one family per step; the
#               vit_b_ics_384 step also measures it with relative position bias and with bias + RPE-triplet
#   eval-*      benchmarks/eval_bench.py --device cuda at MSMT17 scale: distances + features, then re-ranking
#   collect     docs/benchmarks.md and the step logs to $OUT
# Every step has its own timeout; a failed step is reported and the next one still runs, and the
# script exits non-zero if any failed.
#
#   bash benchmarks/gpu_check.sh --dry-run   # CPU: print the steps, check wheels, scripts, flags, tests
#   bash benchmarks/gpu_check.sh             # on the GPU machine, e.g. through the device tool with
#                                            # carry=[".gpu-wheels"]
# Environment: PYTHON (default python3; the dry run prefers .venv/bin/python), GPU_WHEELS (.gpu-wheels),
# GPU_VENV (${TMPDIR:-/tmp}/reid-gpu-venv), OUT (where results go; default outputs/gpu_check),
# ONLY (a bash regex of step names to run, e.g. ONLY='train-dino|eval-.*' to rerun failed steps).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
WHEELS="${GPU_WHEELS:-$ROOT/.gpu-wheels}"
VENV="${GPU_VENV:-${TMPDIR:-/tmp}/reid-gpu-venv}"
RESULTS="${OUT:-$ROOT/outputs/gpu_check}"
DRY=0
case "${1:-}" in
  --dry-run) DRY=1 ;;
  "") ;;
  -h|--help) sed -n '2,22p' "${BASH_SOURCE[0]}"; exit 0 ;;
  *) echo "gpu_check.sh: unknown argument '$1' (expected --dry-run, --help or nothing)" >&2; exit 2 ;;
esac

# Wheels the image lacks for sure (pinned as in pyproject.toml) and ones installed only when missing.
REQUIRED=(hydra_core-1.3.8 omegaconf-2.3.0 antlr4_python3_runtime-4.9.3)
FALLBACK=(setuptools rich markdown_it_py mdurl pygments pytest pluggy iniconfig packaging)
# One train_bench step per family; the step timeouts (seconds) sum to under 8 minutes. The vit_b_ics_384
# step measures RPE_FAMILIES in the same process, so their overhead over it compares like for like.
FAMILIES=(transreid vit_b_ics_384 vit_s bot_r50 dino pass)
RPE_FAMILIES=(vit_b_ics_384_rpe vit_b_ics_384_rpe_triplet)
TRAIN_FLAGS=(--device cuda --precision bf16-mixed --batch 64 --steps 10 --no-overhead --workers)
EVAL_FLAGS=(--device cuda --scale msmt17)
T_INSTALL=40 T_IMPORTS=30 T_SMI=5 T_PYTEST=110 T_TRAIN=23 T_TRAIN_RPE=40 T_OVERHEAD=25 T_EVAL=50 T_RERANK=65
BUDGET=$((T_INSTALL + T_IMPORTS + T_SMI + T_PYTEST + (${#FAMILIES[@]} - 1) * T_TRAIN + T_TRAIN_RPE + T_OVERHEAD
  + T_EVAL + T_RERANK))
((BUDGET <= 480)) || { echo "gpu_check.sh: the step timeouts sum to ${BUDGET}s, over 8 minutes" >&2; exit 2; }

FAILED=()
say() { printf '[gpu_check] %s\n' "$*"; }

# run_step NAME TIMEOUT CMD...: run (or, in the dry run, print) one step with its own timeout and log.
run_step() {
  local name="$1" limit="$2" shown
  shift 2
  if [[ $name != install && -n ${ONLY:-} && ! $name =~ ^($ONLY)$ ]]; then
    say "step $name: skipped (ONLY=$ONLY)"
    return 0
  fi
  shown="$*"
  shown="${shown//$'\n'/ }"
  say "step $name (timeout ${limit}s): ${shown:0:200}"
  [[ $DRY == 0 ]] || return 0
  local start=$SECONDS rc
  set +e
  timeout --kill-after=5 "$limit" "$@" 2>&1 | tee "$RESULTS/logs/$name.log"
  rc=${PIPESTATUS[0]}
  set -e
  if ((rc == 0)); then
    say "step $name: ok in $((SECONDS - start))s"
  else
    say "step $name: FAILED (exit $rc$( ((rc == 124)) && echo ', timed out')) after $((SECONDS - start))s"
    FAILED+=("$name")
  fi
}

check_wheels() {
  local missing=() stem
  for stem in "${REQUIRED[@]}" "${FALLBACK[@]}"; do
    compgen -G "$WHEELS/${stem}-*.whl" > /dev/null || missing+=("$stem")
  done
  if ((${#missing[@]})); then
    echo "gpu_check.sh: $WHEELS lacks wheels for: ${missing[*]} (run \`make gpu-wheels\`)" >&2
    return 1
  fi
  local mib
  mib=$(du -sm "$WHEELS" | cut -f1)
  say "wheels: $(ls "$WHEELS" | wc -l) files, ${mib} MiB in $WHEELS (the device tool carries at most 64 MiB)"
  ((mib < 60)) || { echo "gpu_check.sh: $WHEELS is ${mib} MiB, too large to carry" >&2; return 1; }
}

# The steps' interpreter: a venv over $PYTHON that sees its packages, or, where venv/ensurepip is missing,
# $PYTHON itself with a private user site (PYTHONUSERBASE=$VENV, pip --user).
make_env() {
  if "$PYTHON" -m venv --system-site-packages "$VENV" > /dev/null 2>&1 \
    && "$VENV/bin/python" -m pip --version > /dev/null 2>&1; then
    ENV_PY="$VENV/bin/python" USER_FLAG=""
  else
    rm -rf "$VENV"
    export PYTHONUSERBASE="$VENV" PIP_BREAK_SYSTEM_PACKAGES=1
    ENV_PY="$PYTHON" USER_FLAG="--user"
    say "no venv with pip over $PYTHON: installing with pip --user into PYTHONUSERBASE=$VENV"
  fi
  export ENV_PY USER_FLAG
}

install_env() {
  # shellcheck disable=SC2086  # USER_FLAG is empty or one flag
  local pip=("$ENV_PY" -m pip install --quiet --no-index --find-links "$WHEELS" $USER_FLAG)
  # pip keeps what the image already has (rich, pytest, PyYAML, packaging) and fills the gaps from WHEELS.
  "${pip[@]}" hydra-core==1.3.8 omegaconf==2.3.0 antlr4-python3-runtime==4.9.3 rich pytest
  "${pip[@]}" --no-deps --ignore-requires-python -e .
}

IMPORTS_PY='
import importlib, pkgutil, sys, torch
import reid
for info in pkgutil.walk_packages(reid.__path__, "reid."):
    importlib.import_module(info.name)
assert "wandb" not in sys.modules, "a reid module imported wandb: only logger=wandb may need it"
print("reid imports without wandb; torch", torch.__version__, "cuda", torch.version.cuda,
      "available", torch.cuda.is_available(), torch.cuda.get_device_name() if torch.cuda.is_available() else "")
assert torch.cuda.is_available(), "torch.cuda.is_available() is False"
'

steps() {
  local py="$1" family
  run_step imports "$T_IMPORTS" "$py" -c "$IMPORTS_PY"
  run_step nvidia-smi "$T_SMI" nvidia-smi
  run_step pytest-gpu "$T_PYTEST" "$py" -m pytest -q -m gpu tests/gpu -p no:cacheprovider
  for family in "${FAMILIES[@]}"; do
    if [[ $family == vit_b_ics_384 ]]; then
      run_step "train-$family" "$T_TRAIN_RPE" "$py" benchmarks/train_bench.py "${TRAIN_FLAGS[@]}" \
        --models "$family" "${RPE_FAMILIES[@]}"
    else
      run_step "train-$family" "$T_TRAIN" "$py" benchmarks/train_bench.py "${TRAIN_FLAGS[@]}" --models "$family"
    fi
  done
  run_step train-overhead "$T_OVERHEAD" "$py" benchmarks/train_bench.py --device cuda --precision bf16-mixed \
    --batch 64 --steps 10 --models --workers
  run_step eval-msmt17 "$T_EVAL" "$py" benchmarks/eval_bench.py "${EVAL_FLAGS[@]}" --cases distances features
  run_step eval-rerank-msmt17 "$T_RERANK" "$py" benchmarks/eval_bench.py "${EVAL_FLAGS[@]}" --cases rerank
}

dry_run() {
  PYTHON="${PYTHON:-$([[ -x .venv/bin/python ]] && echo .venv/bin/python || echo python3)}"
  say "dry run with $PYTHON: nothing is installed, no GPU is needed"
  check_wheels
  local script
  for script in benchmarks/train_bench.py benchmarks/eval_bench.py tests/gpu/test_cuda_paths.py; do
    [[ -f $script ]] || { echo "gpu_check.sh: $script is missing" >&2; exit 1; }
  done
  say "step install (timeout ${T_INSTALL}s): venv $VENV over $PYTHON, wheels from $WHEELS, pip install --no-deps -e ."
  steps "$PYTHON"
  say "step collect (no timeout): copy docs/benchmarks.md and logs/ to $RESULTS"
  say "check: train_bench.py flags"
  "$PYTHON" benchmarks/train_bench.py "${TRAIN_FLAGS[@]}" --models "${FAMILIES[@]}" "${RPE_FAMILIES[@]}" --dry-run
  say "check: eval_bench.py flags"
  "$PYTHON" benchmarks/eval_bench.py "${EVAL_FLAGS[@]}" --cases distances features rerank --help > /dev/null
  say "check: the gpu tests collect"
  local collected
  collected=$("$PYTHON" -m pytest --collect-only -q -m gpu tests/gpu -p no:cacheprovider | grep -c '::' || true)
  ((collected > 0)) || { echo "gpu_check.sh: pytest -m gpu collected no test in tests/gpu" >&2; exit 1; }
  say "gpu tests collected: $collected"
  say "dry run ok: every step above would run, within ${BUDGET}s of step timeouts"
}

if [[ $DRY == 1 ]]; then
  dry_run
  exit 0
fi

PYTHON="${PYTHON:-python3}"
mkdir -p "$RESULTS/logs"
say "start $(date -u +%FT%TZ) on $(hostname); $PYTHON is Python $("$PYTHON" -c 'import sys; print(sys.version.split()[0])')"
check_wheels
make_env
export WHEELS
export -f install_env
run_step install "$T_INSTALL" bash -c install_env
if ((${#FAILED[@]} == 0)); then
  steps "$ENV_PY"
fi
cp docs/benchmarks.md "$RESULTS/benchmarks.md"
say "collect: docs/benchmarks.md and logs/ in $RESULTS; total ${SECONDS}s"
if ((${#FAILED[@]})); then
  say "FAILED steps: ${FAILED[*]}"
  exit 1
fi
say "all steps ok"
