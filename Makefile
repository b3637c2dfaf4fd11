# peerlink: one command to run, one to test. Everything installs from this project's files.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= $(or $(PEERLINK_PORT),8000)
STAMP := $(VENV)/.installed

CONTRACT_TOOLS := contract/node_modules/.installed

.PHONY: run test demo lint openapi bench install clean contract-tools contract-check

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
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

clean:
	rm -rf $(VENV) var .pytest_cache
