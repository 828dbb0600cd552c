# The two commands: `make run` and `make test`. Each installs what is missing
# (Node.js and npm packages, a pinned uv, the locked Python environment)
# and then runs the service on its embedded defaults, or every check and test.

SHELL := /bin/bash
.DEFAULT_GOAL := help

UV_VERSION := 0.13.9
TOOLS := .build/tools
UV := $(TOOLS)/bin/uv
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: help setup run test lint test-contracts test-python gas-snapshot clean

help:
	@echo "make run    install what is missing, then run the service (SQLite, in-process EVM)"
	@echo "make test   install what is missing, then run linters, contract tests and the Python tests"

## --- setup ------------------------------------------------------------------------------------

setup: node_modules/.installed $(VENV)/.installed

node_modules/.installed: package.json package-lock.json
	@command -v node >/dev/null && command -v npm >/dev/null || scripts/install-system-packages.sh nodejs npm
	npm ci --no-audit --no-fund
	@touch $@

$(UV):
	python3 -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet "uv==$(UV_VERSION)"

$(VENV)/.installed: $(UV) pyproject.toml uv.lock
	UV_PROJECT_ENVIRONMENT=$(VENV) $(UV) sync --frozen --python python3
	@touch $@

## --- run --------------------------------------------------------------------------------------

run: setup
	$(VENV)/bin/exchange serve

## --- checks and tests -------------------------------------------------------------------------

lint: setup
	$(VENV)/bin/ruff check exchange tests bench migrations
	$(VENV)/bin/mypy exchange
	npx solhint --max-warnings 0 'contracts/**/*.sol'

test-contracts: setup
	npx hardhat test

# pytest-xdist processes; 0 runs the tests in pytest's own process.
PYTEST_WORKERS ?= 2

test-python: setup
	$(PY) -m exchange.orderbook.build_native  # so the native-equals-Python test runs too
	$(VENV)/bin/pytest -n $(PYTEST_WORKERS) --dist loadgroup

# Every stage runs even when an earlier one fails, so one run shows every problem.
test: setup
	@status=0; \
	$(MAKE) --no-print-directory lint || status=1; \
	$(MAKE) --no-print-directory test-contracts || status=1; \
	$(MAKE) --no-print-directory test-python || status=1; \
	exit $$status

gas-snapshot: setup
	npx hardhat run scripts/gas-snapshot.js

clean:
	rm -rf .build artifacts cache $(VENV) node_modules
