# Two commands for people: `make reproduce` and `make test`. The environment is uv's:
# pyproject.toml + uv.lock, synced into .venv (uv's cache makes a second clone's set-up
# take seconds). Where uv is missing it is bootstrapped from PyPI into .tools/.
SHELL := /bin/bash
UV ?= $(shell command -v uv 2>/dev/null || echo .tools/bin/uv)
UV_VERSION := 0.13.9
# Installed packages get their .pyc up front: with PYTHONDONTWRITEBYTECODE set (as on
# this project's machines) every process would otherwise recompile torch (3.3 s vs 1.3 s).
export UV_COMPILE_BYTECODE := 1

.PHONY: reproduce test lint system-data

reproduce: $(UV) system-data
	$(UV) sync --frozen
	$(UV) run --frozen dvc repro

test: $(UV) system-data
	$(UV) sync --frozen
	$(UV) run --frozen pytest

lint: $(UV)
	$(UV) run --frozen ruff check . && $(UV) run --frozen ruff format --check .

.tools/bin/uv:
	python3 -m venv .tools && .tools/bin/pip install -q uv==$(UV_VERSION)

# Fashion-MNIST's offline source is Debian's dataset-fashion-mnist; install it when we
# can (root with apt), else prepare falls back to data/raw or download.
system-data:
	@if [ ! -d /usr/share/datasets/fashion-mnist ] && command -v apt-get >/dev/null \
	    && [ "$$(id -u)" = 0 ]; then \
	  (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist) >/dev/null \
	    || echo "advland: could not install dataset-fashion-mnist"; \
	fi
