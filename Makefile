# pg2neo — every target sets up what it needs: Debian packages, the virtual environment, Maven artifacts, servers.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
SCALE  ?= 200

.PHONY: deps system-deps check test unit integration demo soak bench bench-quick up down status clean \
	bench-snapshot bench-memory bench-write-cost bench-live bench-verify bench-strict

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

system-deps:
	@bash scripts/system-deps.sh

deps: system-deps $(STAMP)

check: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy
	$(BIN)/mypy bench

test: deps check
	$(BIN)/pytest tests

unit: $(STAMP)
	$(BIN)/pytest tests/unit

integration: deps
	$(BIN)/pytest tests/integration

demo: deps
	$(BIN)/pg2neo demo --scale $(SCALE)

soak: deps
	$(BIN)/pytest -m soak tests

bench: deps
	$(BIN)/python -m bench.run_all

bench-quick: deps
	$(BIN)/python -m bench.run_all --quick

# One benchmark at a time: `make bench-live`, or `make bench-live QUICK=--quick`.
BENCHES := snapshot memory write_cost live verify strict kafka
$(addprefix bench-,$(subst _,-,$(BENCHES))): deps
	$(BIN)/python -m bench.run_all $(QUICK) --only $(subst -,_,$(patsubst bench-%,%,$@))

up: deps
	$(BIN)/pg2neo dev up

down: $(STAMP)
	$(BIN)/pg2neo dev down

status: $(STAMP)
	$(BIN)/pg2neo dev status

# As root, PostgreSQL's files may live in /var/lib/pg2neo behind the link .state/postgres (see devstack/stack.py).
clean: down
	if [ -L .state/postgres ]; then rm -rf "$$(readlink -f .state/postgres)"; fi
	rm -rf .state
