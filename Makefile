# reid: `make help` lists the targets. Everything runs inside .venv, created on first use.
PYTHON_SYS ?= python3.11
VENV       ?= .venv
PY         := $(VENV)/bin/python
STAMP      := $(VENV)/.installed
ARGS       ?=
GPU_WHEELS ?= .gpu-wheels
# Pure-Python wheels the GPU machine's image lacks (it has torch, lightning, timm, torchmetrics but no
# hydra/omegaconf) plus fallbacks it may lack (rich, pytest); wandb is left out (platform-specific, ~60 MB
# installed) and is only needed for logger=wandb. antlr4 4.9.3 ships as an sdist only: built here.
GPU_PURE   := hydra-core==1.3.8 omegaconf==2.3.0 setuptools==84.2.1 packaging==26.4 \
              rich==15.0.0 markdown-it-py==4.3.0 mdurl==0.1.2 pygments==2.21.0 \
              pytest==9.2.0 pluggy==1.7.0 iniconfig==2.3.1

.DEFAULT_GOAL := help

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  \033[36m%-13s\033[0m %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON_SYS) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	$(PY) -c "import torch, torchvision, timm, lightning, hydra; print('installed: torch', torch.__version__, '| timm', timm.__version__, '| lightning', lightning.__version__)"
	@touch $(STAMP)

install: $(STAMP) ## create .venv and install reid with its pinned dependencies (idempotent)

demo: install ## generate the synthetic dataset, train a tiny ViT on CPU, print mAP/CMC before and after
	$(PY) -m reid.run experiment=demo $(ARGS)

test: install lint ## ruff, mypy, the import-direction check and the fast CPU test suite
	$(PY) -m pytest -q $(ARGS)

test-slow: install ## the slow tests only
	$(PY) -m pytest -q -m slow $(ARGS)

lint: install ## ruff check and format check, mypy on reid/ (settings in pyproject.toml), the import-direction contract
	$(VENV)/bin/ruff check reid tests benchmarks
	$(VENV)/bin/ruff format --check reid tests benchmarks
	$(VENV)/bin/mypy
	$(VENV)/bin/python -m pytest -q -p no:cacheprovider tests/test_dependencies.py

format: install ## ruff fix and format
	$(VENV)/bin/ruff check --fix reid tests benchmarks
	$(VENV)/bin/ruff format reid tests benchmarks

bench: install ## evaluation and training benchmarks; figures go to docs/benchmarks.md
	$(PY) benchmarks/eval_bench.py
	$(PY) benchmarks/train_bench.py

gpu-wheels: install ## download the pure-Python wheels benchmarks/gpu_check.sh installs on the GPU machine
	$(PY) -m pip download --quiet --no-deps --only-binary=:all: -d $(GPU_WHEELS) $(GPU_PURE)
	$(PY) -m pip wheel --quiet --no-deps -w $(GPU_WHEELS) antlr4-python3-runtime==4.9.3
	@du -sh $(GPU_WHEELS)

gpu-check-dry: install ## check what benchmarks/gpu_check.sh would run on the GPU machine (CPU only)
	bash benchmarks/gpu_check.sh --dry-run

clean: ## remove outputs (keeps .venv and data/)
	rm -rf outputs multirun .pytest_cache .ruff_cache .mypy_cache

.PHONY: help install demo test test-slow lint format bench gpu-wheels gpu-check-dry clean
