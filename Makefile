# quantbot-bus — every target creates .venv and installs the project when missing.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

OLDDUCK := .venv-oldduck
.PHONY: run test lint bench bench-scaleout soak clean demo

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

## run: the daemon in the foreground on ./artifacts (catalog in ./state, exports in ./exports)
run: $(STAMP)
	$(BIN)/quantbot-bus daemon

## demo: write three demo runs (one per backtest strategy) into ./artifacts
demo: $(STAMP)
	$(BIN)/quantbot-bus backtest run --strategy path-only --calls 200
	$(BIN)/quantbot-bus backtest run --strategy policy --calls 200
	$(BIN)/quantbot-bus backtest run --strategy optimize --calls 200

# The DuckDB that readers may have (the pip CLI, Python duckdb 1.4): the publication must open
# in it. Its own venv: duckdb 1.4 cannot share one with the project's duckdb >= 2.
$(OLDDUCK)/.installed:
	test -x $(OLDDUCK)/bin/python || $(PYTHON) -m venv $(OLDDUCK)
	$(OLDDUCK)/bin/python -m pip install --quiet duckdb-cli==1.5.6 duckdb==1.4.5
	touch $(OLDDUCK)/.installed

## test: the fast test suite (real DuckDB, real Parquet, real inotify, real subprocesses), in
## TEST_WORKERS processes (most tests wait on daemons and readers, so more than the cores help);
## --dist loadgroup: a module marked xdist_group runs on one worker, which builds its costly
## module fixture once
TEST_WORKERS ?= 3
TEST_DIST ?= loadgroup
test: $(STAMP) $(OLDDUCK)/.installed
	$(BIN)/python -m pytest -q -m "not slow" -n $(TEST_WORKERS) --dist $(TEST_DIST)

## soak: the long fault-injection suite (under 15 minutes)
soak: $(STAMP)
	QUANTBOT_BUS_SOAK=1 $(BIN)/python -m pytest -q -m slow

lint: $(STAMP)
	$(BIN)/ruff check quantbot_bus tests bench producers daemon examples
	$(BIN)/ruff format --check quantbot_bus tests bench producers daemon examples
	$(BIN)/mypy

## bench: the benchmark suite; QUICK=1 for the 1,000-run version
bench: $(STAMP)
	$(BIN)/python -m bench $(if $(QUICK),--quick,)

## bench-scaleout: the Iceberg/S3 figures on a throwaway PostgreSQL and SeaweedFS (S3=moto for
## moto_server); QUICK=1 for 1,000 runs
bench-scaleout: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	$(BIN)/python -m bench.scaleout $(if $(QUICK),--quick,) $(if $(S3),--s3 $(S3),)

clean:
	rm -rf $(VENV) $(OLDDUCK) .pytest_cache .mypy_cache .ruff_cache state
