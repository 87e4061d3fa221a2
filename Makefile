# Quick start: `make demo`, then `make test`. Each creates the virtualenv it needs.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
DEPS_STAMP := $(VENV)/.deps-installed
SOURCES := $(wildcard producer worker tests bench)

# The browser tests (tests/ui/) drive Debian's chromium through Playwright; no browser
# is downloaded. Where it is missing, `make test` installs it (CI runs as root).
CHROMIUM ?= /usr/bin/chromium

.PHONY: demo test lint typecheck install bench bench-smoke clean screenshots dist

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Dependencies (runtime + the test extra) are reinstalled when pyproject.toml changes.
$(DEPS_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet --disable-pip-version-check ".[test]"
	touch $@

# The package itself is always reinstalled non-editable: the tests run against
# what `pip install .` produces, not against the source tree.
install: $(DEPS_STAMP)
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps --force-reinstall .

demo: install
	$(BIN)/agentspool demo

lint: install
	$(BIN)/ruff check $(SOURCES)
	$(BIN)/ruff format --check $(SOURCES)

typecheck: install
	$(BIN)/mypy -p agentspool

$(CHROMIUM):
	@if [ "$$(id -u)" != 0 ]; then \
	  echo "error: the browser tests need $(CHROMIUM); as root: apt-get update && apt-get install -y chromium" >&2; \
	  exit 1; \
	fi
	@echo "installing Debian's chromium for the browser tests (tests/ui/)"
	DEBIAN_FRONTEND=noninteractive apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium

test: lint typecheck $(CHROMIUM)
	AGENTSPOOL_TEST_CHROMIUM=$(CHROMIUM) $(BIN)/pytest

# README screenshots of `agentspool ui` with the demo's data (docs/screenshots/).
screenshots: install $(CHROMIUM)
	AGENTSPOOL_TEST_CHROMIUM=$(CHROMIUM) $(BIN)/python -m tests.ui.screenshots

# The wheel to install agentspool elsewhere (docs: README "Installing it in another
# project"): dist/agentspool-<version>-py3-none-any.whl, extras and all.
dist: $(BIN)/python
	rm -rf dist
	$(BIN)/pip wheel --quiet --disable-pip-version-check --no-deps --wheel-dir dist .
	@ls dist/*.whl

clean:
	rm -rf $(VENV) .cache build dist .mypy_cache .ruff_cache .pytest_cache

# Benchmarks (a harness, not timed tests): prints the table, writes bench/results.json.
bench: install
	$(BIN)/python -m bench

bench-smoke: install
	$(BIN)/python -m bench --smoke
