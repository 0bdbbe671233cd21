# Entry points for people and CI. `make repro` runs the whole local flow on HAM10000;
# `make test` installs everything from scratch if needed, lints and runs the tests.
SHELL := /bin/bash
VENV ?= .venv
PYTHON ?= python3
HAM10000 ?= ../shared/data/ham10000
RAW_DIR := data/raw/ham10000

export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
# No telemetry from DVC, MLflow or Great Expectations, locally and in CI.
export DVC_NO_ANALYTICS := 1
export MLFLOW_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := 1
export GX_ANALYTICS_ENABLED := false

.PHONY: install repro test lint lock data clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml requirements.lock
	command -v uv >/dev/null || $(PYTHON) -m pip install -q uv
	uv venv -q --allow-existing --python $(PYTHON) $(VENV)
	VIRTUAL_ENV=$(VENV) uv pip install -q -r requirements.lock
	VIRTUAL_ENV=$(VENV) uv pip install -q --no-deps -e .
	touch $@

# Pinned versions for CI and the container images; regenerate after changing pyproject.
lock:
	uv pip compile -q pyproject.toml --extra dev --python-version 3.11 -o requirements.lock

# Link the raw data where params.yaml data.raw_dir expects it (a copy works too).
data: $(RAW_DIR)
$(RAW_DIR):
	@test -f "$(HAM10000)/HAM10000_metadata.csv" || { echo "no HAM10000 at $(HAM10000): \
	set HAM10000=DIR or run 'skinlesion data download --dest $(RAW_DIR)'" >&2; exit 1; }
	mkdir -p $(dir $(RAW_DIR))
	ln -sfn "$(abspath $(HAM10000))" $(RAW_DIR)

repro: install data
	dvc repro

lint: install
	ruff check .
	ruff format --check .

test: lint
	pytest

clean:
	rm -rf reports data/split mlruns mlflow.db
