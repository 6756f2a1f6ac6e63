# reid: `make help` lists the targets. Everything runs inside .venv, created on first use.
PYTHON_SYS ?= python3.11
VENV       ?= .venv
PY         := $(VENV)/bin/python
STAMP      := $(VENV)/.installed
ARGS       ?=

.DEFAULT_GOAL := help

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  \033[36m%-11s\033[0m %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON_SYS) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	$(PY) -c "import torch, torchvision, timm, lightning, hydra; print('installed: torch', torch.__version__, '| timm', timm.__version__, '| lightning', lightning.__version__)"
	@touch $(STAMP)

install: $(STAMP) ## create .venv and install reid with its pinned dependencies (idempotent)

demo: install ## generate the synthetic dataset, train a tiny ViT on CPU, print mAP/CMC before and after
	$(PY) -m reid.run experiment=demo $(ARGS)

test: install lint ## ruff + the fast CPU test suite
	$(PY) -m pytest -q $(ARGS)

test-slow: install ## the slow tests only
	$(PY) -m pytest -q -m slow $(ARGS)

lint: install ## ruff check and format check
	$(VENV)/bin/ruff check reid tests benchmarks
	$(VENV)/bin/ruff format --check reid tests benchmarks

format: install ## ruff fix and format
	$(VENV)/bin/ruff check --fix reid tests benchmarks
	$(VENV)/bin/ruff format reid tests benchmarks

bench: install ## evaluation and training benchmarks; figures go to docs/benchmarks.md
	$(PY) benchmarks/eval_bench.py
	$(PY) benchmarks/train_bench.py

clean: ## remove outputs (keeps .venv and data/)
	rm -rf outputs multirun .pytest_cache .ruff_cache

.PHONY: help install demo test test-slow lint format bench clean
