# Quick start: `make demo`, then `make test`. Each creates the virtualenv it needs.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
DEPS_STAMP := $(VENV)/.deps-installed
SOURCES := $(wildcard producer worker tests bench)

.PHONY: demo test lint typecheck install bench bench-smoke clean

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

test: lint typecheck
	$(BIN)/pytest

clean:
	rm -rf $(VENV) .cache build dist .mypy_cache .ruff_cache .pytest_cache

# Benchmarks (a harness, not timed tests): prints the table, writes bench/results.json.
bench: install
	$(BIN)/python -m bench

bench-smoke: install
	$(BIN)/python -m bench --smoke
