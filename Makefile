# streamflow — one entry point for developers and CI.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
TICKETS := examples/support_tickets/data/tickets.jsonl

.PHONY: run test bench chaos lint docs graph clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Reinstall when pyproject.toml changes.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[offline,models]'
	@touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@ $(VENV)/.installed

$(TICKETS): examples/support_tickets/generate_tickets.py | $(VENV)/.installed
	$(BIN)/python examples/support_tickets/generate_tickets.py --count 2500 --seed 7 --out $@

## make run: stream the example support tickets through classify -> retrieve -> generate -> check
run: $(VENV)/.installed $(TICKETS)
	$(BIN)/streamflow run examples/support_tickets/pipeline.py \
		--input $(TICKETS) --output out/support_tickets.jsonl --overwrite

## make test: unit, contract and integration tests (starts its own broker)
test: $(VENV)/.installed-dev
	$(BIN)/python -m pytest

## make bench: throughput, latency and memory against hand-written baselines
bench: $(VENV)/.installed-dev
	$(BIN)/python bench/run.py

## make chaos: kill -9, a frozen broker, bad records and model faults at 100,000 events per case
chaos: $(VENV)/.installed-dev
	$(BIN)/python bench/chaos.py --events 100000

## make lint: ruff and mypy --strict
lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

## make docs: the documentation site (mkdocs, strict: any warning fails) into site/
docs: $(VENV)/.installed-dev
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

graph: $(VENV)/.installed
	$(BIN)/streamflow graph examples/support_tickets/pipeline.py

clean:
	rm -rf out site .pytest_cache .mypy_cache .ruff_cache
