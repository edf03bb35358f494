# imgfeat — every target does its own set-up from a fresh clone.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.imgfeat-installed
PYTEST_ARGS ?=

.PHONY: setup browser test test-fast demo bench bench-commit bench-scale bench-gpu-check lint clean cluster-up cluster-down
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# Creates .venv and installs imgfeat (editable) with its dev extra, and the
# headless browser the report tests look through. Re-runs are instant: the
# stamp is only rebuilt when pyproject.toml changes.
setup: $(STAMP) browser
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

# Debian's chromium + chromedriver (apt; no browser download): tests/browser.py drives them.
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
	  $(SUDO) apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends chromium chromium-driver; }

# The whole suite, slow tests included (CPU only, no network).
test: setup
	$(BIN)/python -m pytest -q -ra $(PYTEST_ARGS)

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow" $(PYTEST_ARGS)

demo: setup
	$(BIN)/python -m imgfeat.dev.demo

bench: setup
	$(BIN)/python -m imgfeat.cli bench

# Commit time against table size (10k, 100k, 1M rows; tables cached in
# bench/out/commit, ~5.5 GB; the first run builds them, minutes).
bench-commit: setup
	$(BIN)/python bench/commit.py

# The costs that grow with the table: listing + anti-join with 1 % new files, the
# commit, near-duplicate search, train's read and fold fits on a sample; a synthetic
# 1M-row table (SCALE_ARGS=--ten-million for 10M, --rows N for any size), cached in
# bench/out/commit/scale. bench/README.md ("Scale") records it and extrapolates.
SCALE_ARGS ?=
bench-scale: setup
	$(BIN)/python bench/scale.py $(SCALE_ARGS)

# bench/gpu.sh on this machine's CPU with 8 photos: checks the GPU script runs.
bench-gpu-check: setup
	bench/gpu.sh --cpu-check

# A Spark standalone cluster on 127.0.0.1 (master :7077, UI :8080, 2 workers x
# 1 core, 2g) from the venv's pyspark; PIDs and logs in $TMPDIR/imgfeat-cluster.
cluster-up: setup
	$(BIN)/python scripts/cluster.py up

cluster-down:
	$(BIN)/python scripts/cluster.py down

# ruff (imgfeat/ jobs/ tests/ bench/; only imgfeat/ is held to ruff format), mypy
# (imgfeat/, config in pyproject.toml), and the repeated-code gate over imgfeat/
# and jobs/ (scripts/duplicates_gate.sh; needs the `duplicates` command on PATH).
lint: setup
	$(BIN)/ruff check imgfeat jobs tests bench
	$(BIN)/ruff format --check imgfeat
	$(BIN)/mypy
	scripts/duplicates_gate.sh

clean:
	rm -rf warehouse mlruns mlflow.db mlartifacts spark-warehouse bench/out demo insights
