# peerlink: one command to run, one to test. Everything installs from this project's files.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= $(or $(PEERLINK_PORT),8000)
STAMP := $(VENV)/.installed

CONTRACT_TOOLS := contract/node_modules/.installed

.PHONY: run test demo lint openapi bench install clean contract-tools contract-check lock

# Installs come from the hashed lock (requirements-dev.lock: the runtime, the dev extra and the
# build backend), then the project itself without resolving anything: nothing floats.
$(STAMP): pyproject.toml requirements-dev.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --require-hashes -r requirements-dev.lock
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)  ## migrate the embedded SQLite database under var/ and serve on PEERLINK_PORT
	mkdir -p var
	$(BIN)/peerlink serve --port $(PORT)

test: $(STAMP)  ## the whole suite (TEST_DATABASE_URL=postgresql://... for PostgreSQL)
	$(BIN)/pytest -n 2 $(PYTEST_ARGS)

demo: $(STAMP)  ## development mode only: demo facilities, one user per role, participants
	mkdir -p var
	$(BIN)/peerlink db upgrade
	$(BIN)/peerlink demo

lint: $(STAMP)
	$(BIN)/ruff check app tests examples
	$(BIN)/mypy app

openapi: $(STAMP)  ## regenerate the committed contract
	$(BIN)/peerlink openapi

$(CONTRACT_TOOLS): contract/package.json contract/package-lock.json
	cd contract && npm ci --no-audit --no-fund --loglevel=error
	touch $@

contract-tools: $(CONTRACT_TOOLS)  ## npm tools for the contract (needs Node.js)

contract-check: $(CONTRACT_TOOLS)  ## fail on an unannounced breaking change in main's history
	bash contract/check.sh

bench: $(STAMP)  ## PostgreSQL benchmark (BENCH_DATABASE_URL, default local postgres)
	$(BIN)/python -m bench.run
	$(BIN)/python -m bench.precedence
	$(BIN)/python -m bench.topologies

# The locks: uv (pinned below, in a venv of its own) resolves pyproject.toml for every platform
# and Python >= 3.11, with the hash of every file. Versions already in a lock are kept; add
# UPGRADE=1 to move everything to the newest release that pyproject.toml allows.
# The extras production runs with (the image installs requirements.lock) go into both locks,
# once pyproject.toml declares them: `redis`, the client for PEERLINK_RATE_LIMIT_STORAGE=redis://.
UV_VERSION := 0.13.8
LOCK_VENV ?= .venv-lock
PROD_EXTRAS := $(foreach x,redis,$(if $(shell grep -E '^$(x) *= *\[' pyproject.toml),--extra $(x)))
LOCK_ARGS = pyproject.toml requirements-build.in $(PROD_EXTRAS) --generate-hashes --universal \
	--python-version 3.11 --custom-compile-command "make lock" --quiet $(if $(UPGRADE),--upgrade)

lock:  ## regenerate requirements.lock and requirements-dev.lock from pyproject.toml
	test -x $(LOCK_VENV)/bin/uv || { $(PYTHON) -m venv $(LOCK_VENV) && $(LOCK_VENV)/bin/pip install --quiet uv==$(UV_VERSION); }
	$(LOCK_VENV)/bin/uv pip compile $(LOCK_ARGS) -o requirements.lock
	$(LOCK_VENV)/bin/uv pip compile $(LOCK_ARGS) --extra dev -o requirements-dev.lock

clean:
	rm -rf $(VENV) $(LOCK_VENV) var .pytest_cache
