# aicreds — developer commands. `make help` lists them.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --warn-undefined-variables --no-builtin-rules

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PROTOS := $(shell find protos -name '*.proto' | sort)
PYTEST_ARGS ?=

.PHONY: help
help: ## List the targets.
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "aicreds needs Python 3.11")'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

.PHONY: venv
venv: $(STAMP) ## Create .venv and install aicreds with its development dependencies.

.PHONY: proto
proto: $(STAMP) ## Regenerate gen/ from protos/.
	rm -rf gen && mkdir -p gen
	$(PY) -m grpc_tools.protoc -I protos --python_out=gen --pyi_out=gen --grpc_python_out=gen $(PROTOS)

.PHONY: proto-check
proto-check: $(STAMP) ## Fail if gen/ is not what protos/ generate.
	tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	$(PY) -m grpc_tools.protoc -I protos --python_out=$$tmp --pyi_out=$$tmp --grpc_python_out=$$tmp $(PROTOS) && \
	diff -r -x __pycache__ "$$tmp" gen || { echo "gen/ is out of date: run 'make proto' and commit" >&2; exit 1; }

.PHONY: test
test: $(STAMP) ## Run the whole test suite.
	$(PY) -m pytest $(PYTEST_ARGS)

LINT_PATHS := services devtools bench tests

.PHONY: lint
lint: $(STAMP) ## Ruff (lint and format), mypy strict (tests: annotations optional), import contracts.
	$(VENV)/bin/ruff check $(LINT_PATHS)
	$(VENV)/bin/ruff format --check $(LINT_PATHS)
	$(VENV)/bin/mypy $(LINT_PATHS)
	$(VENV)/bin/lint-imports --no-cache

.PHONY: run
run: $(STAMP) ## Start vault, router and gateway on localhost with a development key.
	$(PY) -m devtools.run

.PHONY: demo
demo: $(STAMP) ## Run the whole flow against a local fake OpenAI upstream (no real key needed).
	$(PY) -m devtools.demo

.PHONY: bench
bench: $(STAMP) ## Run the benchmarks (not part of make test; BENCH_DURATION=2 smoke; BENCH_PEER=litellm side by side).
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev,bench]'
	$(PY) -m bench

.PHONY: image
image: ## Build the image (docker, else podman; PYTHON_IMAGE=<local base> to pick the base).
	deploy/container/build-image.sh

.PHONY: image-base
image-base: ## Build a stand-in python:3.11-slim base from Debian packages (no Docker Hub).
	deploy/container/build-base.sh

.PHONY: container-test
container-test: $(STAMP) ## Build the image and smoke-test vault, router, gateway run from it.
	$(PY) -m tests.deploy.container_smoke

.PHONY: clean
clean: ## Remove the virtual environment and caches (keeps .state).
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
