# Cost Keeper — every target creates .venv and installs what it needs.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cksum < pyproject.toml | cut -d' ' -f1)

.PHONY: install demo test lint run clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

install: $(STAMP)

## demo: start the simulator and the proxy, drive boto3 through it, print the usage report
demo: $(STAMP)
	$(BIN)/python scripts/demo.py

## test: lint, type-check and the whole test suite (what .ci/run calls)
test: $(STAMP) lint
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check proxy adapters metering simulator tests scripts
	$(BIN)/mypy

## run: the proxy for real: config.yaml, SQLite store, real Bedrock (AWS credentials from the usual chain)
run: $(STAMP)
	$(BIN)/costkeeper serve --config config.yaml

clean:
	rm -rf $(VENV) .demo .pytest_cache .mypy_cache .ruff_cache
