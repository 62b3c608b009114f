# Common commands. `make serve` and `make test` are the README's two commands for a fresh machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Installed before anything else so that pip never resolves a multi-GB CUDA build on CPU machines.
# On a GPU machine the same pin gets PyPI's CUDA build of the same release.
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed
ARGS ?=

.PHONY: install serve test lint typecheck unit bench demo clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

serve: $(STAMP)  ## serve ARGS (default: the demo model, trained on first run)
	$(BIN)/reward-serve $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/yamllint -s docker-compose.yml deploy
	$(BIN)/hadolint Dockerfile

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest

test: lint typecheck unit  ## everything CI runs

bench: $(STAMP)  ## benchmark the service against the offline limit and a naive server
	$(BIN)/python -m bench $(ARGS)

demo: $(STAMP)  ## train the demo model into the cache (reward-serve does this on first run)
	$(BIN)/reward-train --preset demo $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
