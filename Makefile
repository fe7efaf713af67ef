# Strata: two commands. `make demo` and `make test` each set up .venv from the lock file first.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.strata-installed
DEMO_DIR ?= demo

.PHONY: setup demo test lint lock bench clean

setup: $(STAMP)

# --no-cache: pyspark ships only as an sdist, and uv rebuilt it on every fresh install, leaving about 1.9 GB
# of build trees in ~/.cache/uv each time (it filled this machine's disk once). A throwaway cache costs a few
# seconds of downloads and leaves nothing behind.
$(STAMP): requirements.lock pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install --quiet --disable-pip-version-check uv==0.13.8
	$(BIN)/uv pip install --no-cache --quiet --python $(BIN)/python -r requirements.lock
	$(BIN)/uv pip install --no-cache --quiet --python $(BIN)/python --no-deps -e .
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m strata_cli.demo --dir $(DEMO_DIR)

test: $(STAMP)
	$(BIN)/ruff check features training serving strata_cli tests benchmarks notebooks
	$(BIN)/mypy features training serving strata_cli
	$(BIN)/python -m pytest -n 2 --dist loadfile -q

lint: $(STAMP)
	$(BIN)/ruff check features training serving strata_cli tests benchmarks notebooks
	$(BIN)/mypy features training serving strata_cli

# The main benchmarks in turn, at the sizes the README reports (tens of minutes; the first run also generates the
# 1M-user feature data under /tmp/strata-bench, or $STRATA_BENCH_CACHE, and trains the benchmark bundle).
bench: $(STAMP)
	$(BIN)/python benchmarks/bench_features.py --users 1000000 --repeat 2
	$(BIN)/python benchmarks/bench_scoring.py --users 1000000 --shap-users 0 --bundle $${TMPDIR:-/tmp}/strata-bench-bundle
	$(BIN)/python benchmarks/bench_scoring_memory.py --users 1000000,10000000 --bundle $${TMPDIR:-/tmp}/strata-bench-bundle
	$(BIN)/python benchmarks/bench_api.py

lock:
	$(BIN)/uv pip compile pyproject.toml --extra dev --python-version 3.11 -o requirements.lock

clean:
	rm -rf $(VENV) $(DEMO_DIR) mlruns mlflow.db
