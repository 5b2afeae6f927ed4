# Two commands for people: `make reproduce` and `make test`. The rest is set-up.
#
# Dependencies live in a venv shared by every clone on the machine, keyed by a
# hash of requirements.lock, so a second set-up takes seconds. Each clone gets a
# light .venv that points at it and holds this checkout's package (editable);
# its dvc and pytest run with that .venv's python.
SHELL := /bin/bash
PYTHON ?= python3
ADVLAND_CACHE ?= $(HOME)/.cache/advland
LOCK_HASH := $(shell sha256sum requirements.lock | cut -c1-16)
DEPS := $(ADVLAND_CACHE)/deps-$(LOCK_HASH)
PY := .venv/bin/python
export PATH := $(CURDIR)/.venv/bin:$(PATH)
export ADVLAND_CACHE

.PHONY: reproduce test setup lint system-data

reproduce: setup system-data
	$(PY) -m dvc repro

test: setup
	$(PY) -m pytest

lint: setup
	$(PY) -m ruff check . && $(PY) -m ruff format --check .

setup:
	@if [ ! -f "$(DEPS)/.complete" ]; then \
	  echo "advland: creating $(DEPS) (first set-up on this machine)"; \
	  rm -rf "$(DEPS)" && $(PYTHON) -m venv "$(DEPS)" && \
	  "$(DEPS)/bin/pip" install -q -r requirements.lock && touch "$(DEPS)/.complete" || exit 1; \
	fi
	@if [ "$$(cat .venv/.deps 2>/dev/null)" != "$(DEPS)" ]; then \
	  echo "advland: linking .venv to $(DEPS)"; \
	  rm -rf .venv && $(PYTHON) -m venv --without-pip .venv && \
	  site=$$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])') && \
	  deps=$$("$(DEPS)/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])') && \
	  echo "import site; site.addsitedir('$$deps')" > "$$site/advland-deps.pth" && \
	  $(PY) -m pip install -q --no-deps --no-build-isolation -e . && \
	  for tool in dvc pytest; do \
	    printf '#!/bin/sh\nexec "%s" -m %s "$$@"\n' "$(CURDIR)/$(PY)" $$tool > .venv/bin/$$tool && \
	    chmod +x .venv/bin/$$tool; done && \
	  ln -sf "$(DEPS)/bin/ruff" .venv/bin/ruff && \
	  echo "$(DEPS)" > .venv/.deps || exit 1; \
	fi

# Fashion-MNIST's offline source is Debian's dataset-fashion-mnist; install it
# when we can (root with apt), else prepare falls back to data/raw or download.
system-data:
	@if [ ! -d /usr/share/datasets/fashion-mnist ] && command -v apt-get >/dev/null \
	    && [ "$$(id -u)" = 0 ]; then \
	  (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist) >/dev/null \
	    || echo "advland: could not install dataset-fashion-mnist"; \
	fi
