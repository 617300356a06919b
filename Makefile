# The two quick-start commands are `make run` and `make test` (see README.md).
VENV ?= .venv
PY ?= python3
BIN := $(VENV)/bin
DATA_DIR ?= ./var

.PHONY: run install test lint unit bench clean

$(BIN)/cmr-gateway: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

install: $(BIN)/cmr-gateway

run: install
	$(BIN)/cmr-gateway init --data-dir $(DATA_DIR)
	$(BIN)/cmr-gateway serve --data-dir $(DATA_DIR)

lint: install
	$(BIN)/ruff check gateway adapters tests
	$(BIN)/ruff format --check gateway adapters tests
	$(BIN)/mypy

AXE := tests/a11y/node_modules/axe-core/axe.min.js

# axe-core from the npm registry, for the accessibility check of the pages.
$(AXE): tests/a11y/package-lock.json
	npm --prefix tests/a11y ci --no-audit --no-fund --silent
	touch $@

unit: install $(AXE)
	$(BIN)/pytest -n 2 -q

test: lint unit

$(BIN)/py-spy: $(BIN)/cmr-gateway
	$(BIN)/pip install -q -e '.[test,bench]'
	touch $@

# BENCH_ARGS=--profile adds a py-spy profile of the gateway under closed-loop load.
bench: install $(BIN)/py-spy
	$(BIN)/cmr-gateway-bench --out bench-results $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
