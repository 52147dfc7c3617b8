# streamrec — `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STREAMREC := $(PY) -m streamrec
PYTEST_ARGS ?=
# Test processes (pytest-xdist): most integration tests wait on brokers, failovers and
# scrapes, so two share the 2 cores well (tests that fault the shared cluster stack take
# turns through a lock in tests/conftest.py); TEST_PROCS=0 runs everything in one process.
TEST_PROCS ?= 2

.DEFAULT_GOAL := help

.PHONY: help install stack down status demo test test-unit lint format bench schemas docs clean

help: ## Show this help
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | \
	  awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml requirements.lock
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -c requirements.lock -e '.[dev,sequential]'
	@touch $@

install: $(VENV)/.installed ## Create .venv and install streamrec with pinned dependencies

stack: install ## Start the local stack (Kafka KRaft + Redis), idempotent
	$(STREAMREC) stack up

down: ## Stop everything `make stack`/`make demo` started
	@if [ -x $(PY) ]; then $(STREAMREC) stack down; fi

status: install ## Show the local stack's services
	$(STREAMREC) stack status

demo: install ## The main job: stack, replay, stream, train, serve, recommendations
	$(STREAMREC) demo

test: install ## Start the stack if needed and run every test (unit + integration)
	$(PY) -m mypy
	$(STREAMREC) stack up
	$(PY) -m pytest --no-skips --durations=25 -n $(TEST_PROCS) $(PYTEST_ARGS)

test-unit: install ## Only the tests that need no services
	$(PY) -m pytest -m "not integration" $(PYTEST_ARGS)

lint: install ## ruff lint + format check + mypy (configured in pyproject.toml)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m mypy

format: install ## Apply ruff fixes and formatting
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench: install ## Run the benchmarks under bench/ (each prints a table with its baselines)
	$(STREAMREC) stack up
	@for b in bench/[!_]*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

schemas: install ## Regenerate the checked-in JSON Schema files from the event models
	$(PY) -m schemas.export

docs: install ## Regenerate the README's configuration table from core/config.py
	$(PY) -m core.settings_doc --write README.md

clean: down ## Stop the stack and remove runtime data (keeps downloads in .cache/)
	rm -rf data
