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

# Container images for the Kubeflow steps: `make image` builds the CPU image here (docker or
# podman; without a registry, `infra/docker/local-engine.sh` first), `make images
# IMAGE_REPO=registry/skinlesion` builds and pushes both, through infra/docker/build.sh
# (BuildKit, provenance labels). PIP_CA=FILE hands pip the CA of a TLS-inspecting proxy as
# a build secret (in no layer, no file left in the tree).
IMAGE_REPO ?= ghcr.io/skinlesion/skinlesion
IMAGE_TAG ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo dev)
OFFICIAL_BASE := $(shell sed -n 's/^ARG BASE_IMAGE=//p' infra/docker/Dockerfile)
LOCAL_IMAGE ?= skinlesion:local-cpu
LOCAL_GPU_IMAGE ?= skinlesion:local-gpu
LOCAL_SERVE_IMAGE ?= skinlesion:local-serve
ENGINE ?= $(shell command -v docker 2>/dev/null || command -v podman 2>/dev/null)
PIP_CA ?=
PIPELINE_YAML ?= pipeline.yaml

.PHONY: install repro test test-extended test-fast lint lock docs data track-data clean engine image image-gpu image-test \
	image-gpu-test images pipeline postgres chromium

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml requirements-dev.lock requirements-checkov.lock \
		.githooks/commit-msg
	command -v uv >/dev/null || $(PYTHON) -m pip install -q uv
	uv venv -q --allow-existing --python $(PYTHON) $(VENV)
	# Compiled bytecode up front: where PYTHONDONTWRITEBYTECODE is set (CI) no process
	# would cache it, and every step, stage and test subprocess would compile TensorFlow,
	# MLflow and Great Expectations again (importing TensorFlow: 16 s instead of 7 here).
	VIRTUAL_ENV=$(VENV) uv pip install -q --compile-bytecode --require-hashes -r requirements-dev.lock
	VIRTUAL_ENV=$(VENV) uv pip install -q --no-deps -e .
	# checkov, the manifests' scanner (tests/code/test_k8s_manifests.py), pins versions the
	# project's own cannot share (networkx<2.7): an environment of its own inside this one.
	uv venv -q --allow-existing --python $(PYTHON) $(VENV)/checkov
	VIRTUAL_ENV=$(VENV)/checkov uv pip install -q --require-hashes -r requirements-checkov.lock
	# Commit messages are checked as they are written: .githooks/commit-msg.
	if git rev-parse --git-dir >/dev/null 2>&1; then git config core.hooksPath .githooks; fi
	touch $@

# Pinned versions with their hashes: requirements-dev.lock (CI, laptops: with the tools
# and DVC), requirements-gpu.lock (the GPU image: what the steps run, with TensorFlow's
# CUDA libraries from PyPI, `tensorflow[and-cuda]`) and requirements-cpu.lock (the CPU
# image: the same versions with tensorflow-cpu), requirements-serve.lock (the serving
# image: infra/docker/requirements-serve.in at the same versions), plus
# requirements-checkov.lock (the manifest scanner's own environment). Installs refuse a
# file whose hash differs. Regenerate them all after changing pyproject.toml or
# requirements-serve.in; existing pins are kept unless pyproject.toml needs others.
LOCK = uv pip compile -q --python-version 3.11 --generate-hashes --custom-compile-command "make lock"
RUNTIME = uv pip compile -q --python-version 3.11 --no-header --no-annotate pyproject.toml \
	-c requirements-dev.lock
lock:
	$(LOCK) pyproject.toml --extra dev --extra flow -o requirements-dev.lock
	$(RUNTIME) | sed 's/^tensorflow==/tensorflow[and-cuda]==/' | $(LOCK) - -o requirements-gpu.lock
	$(RUNTIME) | sed 's/^tensorflow==/tensorflow-cpu==/' | $(LOCK) - -o requirements-cpu.lock
	$(LOCK) infra/docker/requirements-serve.in -c requirements-dev.lock -o requirements-serve.lock
	echo checkov==$(CHECKOV_VERSION) | $(LOCK) - -o requirements-checkov.lock
CHECKOV_VERSION = 3.3.30

# The raw data where params.yaml data.raw_dir expects it: the version DVC tracks when
# data/raw/ham10000.dvc is committed (`make track-data` made it), else a link.
data: $(RAW_DIR)
$(RAW_DIR):
	@if [ -f "$(RAW_DIR).dvc" ]; then $(VENV)/bin/dvc pull "$(RAW_DIR).dvc"; else \
	  test -f "$(HAM10000)/HAM10000_metadata.csv" || { echo "no HAM10000 at $(HAM10000): \
	  set HAM10000=DIR or run 'skinlesion data download --dest $(RAW_DIR)'" >&2; exit 1; }; \
	  mkdir -p $(dir $(RAW_DIR)) && ln -sfn "$(abspath $(HAM10000))" $(RAW_DIR); fi

# Put the raw data under DVC: a copy (DVC does not track a link), its .dvc file to commit,
# then `dvc push` sends it to the remote and `dvc pull` restores it on any clone.
track-data: install
	@test -f "$(HAM10000)/HAM10000_metadata.csv" || { echo "no HAM10000 at $(HAM10000)" >&2; \
	  exit 1; }
	@if [ -L "$(RAW_DIR)" ]; then rm "$(RAW_DIR)"; fi
	@test -e "$(RAW_DIR)" || { mkdir -p $(dir $(RAW_DIR)) && cp -r "$(HAM10000)" "$(RAW_DIR)"; }
	$(VENV)/bin/dvc add "$(RAW_DIR)"
	@echo "now: git add $(RAW_DIR).dvc $(dir $(RAW_DIR)).gitignore && git commit && dvc push"

repro: install data
	dvc repro

lint: install
	ruff check .
	ruff format --check .
	hadolint infra/docker/Dockerfile

# The documentation site under docs/ (MkDocs Material): the generated pages first (the
# parameters from the schema, the steps from components.STEPS, the results from reports/
# and bench/results/), then a strict build into site/: a broken link or anchor, or a page
# left out of the nav, fails it. NO_MKDOCS_2_WARNING: the theme's notice is not a warning.
docs: install
	python docs/generate.py
	NO_MKDOCS_2_WARNING=1 mkdocs build --strict

# The promotion tests also run against a real PostgreSQL (the cluster's registry backend),
# started by the tests themselves: Debian's server binaries are installed here if missing.
postgres:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	      apt-get install -y -qq --no-install-recommends postgresql >/dev/null; \
	  else echo "install Debian's postgresql package for the PostgreSQL registry tests" >&2; fi; }

# The review page's browser test (tests/review/test_review_browser.py, in test-extended)
# drives Debian's headless Chromium through Debian's chromedriver (no downloaded browser
# builds): installed here if missing (about 11 s from the package cache on this machine).
chromium:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	      apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null; \
	  else echo "install Debian's chromium and chromium-driver for the review page's browser test" >&2; fi; }

# The whole suite (what CI runs): lint, then every tier, the slowest tests listed at the end.
# Every core (pytest-xdist; a worker steals queued tests from a busy one, so the long
# model tests spread out); the 25 slowest tests are listed to keep them in sight.
test: lint postgres
	pytest -n auto --dist worksteal --durations=25 -m "not extended"

# Opt-in: long runs whose parts `make test` covers elsewhere (the tuning pipeline composed
# under kfp.local, ResNet's fine-tuning fallback, a search resumed after a kill, four weeks
# of scheduled retraining, the DVC flow's later rounds, the review page in a real browser);
# CI runs them after `make test`.
test-extended: install postgres chromium
	pytest -n auto --dist worksteal --durations=5 -m extended

# While you work: the code tier without servers, training or TensorFlow subprocesses
# (under 2 minutes); `make test` before you push.
test-fast: install
	ruff check .
	pytest -n auto -m "code and not integration"

engine:
	@test -n "$(ENGINE)" || { echo "no container engine: install docker or podman" \
	  "(on Debian without a registry: sudo infra/docker/local-engine.sh)" >&2; exit 1; }

# The CPU image of the pipeline steps, tagged $(LOCAL_IMAGE), on the base base-image.sh
# resolves, and its tests: the image's smoke test and the whole training pipeline run in
# it by kfp.local's DockerRunner. The tests refuse an image whose revision label is not
# this checkout's clean HEAD. `make image-gpu` builds the GPU image on the same base
# ($(LOCAL_GPU_IMAGE)); `make image-gpu-test` checks its CUDA build and runs a step in it.
# `make image` also builds the serving image ($(LOCAL_SERVE_IMAGE): the exported model's
# server, without TensorFlow), which `make image-test` runs against an exported champion.
BUILD_IMAGE = ENGINE=$(ENGINE) PIP_CA=$(PIP_CA) infra/docker/build.sh
GPU_LOCK = --build-arg LOCK=requirements-gpu.lock
image: engine
	$(BUILD_IMAGE) $(LOCAL_IMAGE)
	$(BUILD_IMAGE) $(LOCAL_SERVE_IMAGE) "" --target serve

image-gpu: engine
	$(BUILD_IMAGE) $(LOCAL_GPU_IMAGE) "" $(GPU_LOCK)

image-test: install engine
	SKINLESION_ENGINE=$(ENGINE) SKINLESION_IMAGE_UNDER_TEST=$(LOCAL_IMAGE) \
		SKINLESION_SERVE_IMAGE_UNDER_TEST=$(LOCAL_SERVE_IMAGE) pytest -m image tests/image \
		--ignore=tests/image/test_gpu_image.py

image-gpu-test: install engine
	SKINLESION_ENGINE=$(ENGINE) SKINLESION_IMAGE_UNDER_TEST=$(LOCAL_GPU_IMAGE) \
		pytest -m image tests/image/test_gpu_image.py

# Build and push the CPU, GPU and serving images on the official base, then pin what was
# pushed by digest: in the compiled pipeline and in the manifests (the overlays' images).
images: install engine
	$(ENGINE) pull -q $(OFFICIAL_BASE)
	$(BUILD_IMAGE) $(IMAGE_REPO):$(IMAGE_TAG)-cpu $(OFFICIAL_BASE)
	$(BUILD_IMAGE) $(IMAGE_REPO):$(IMAGE_TAG)-gpu $(OFFICIAL_BASE) $(GPU_LOCK)
	$(BUILD_IMAGE) $(IMAGE_REPO)-serve:$(IMAGE_TAG) $(OFFICIAL_BASE) --target serve
	$(ENGINE) push $(IMAGE_REPO):$(IMAGE_TAG)-cpu
	$(ENGINE) push $(IMAGE_REPO):$(IMAGE_TAG)-gpu
	$(ENGINE) push $(IMAGE_REPO)-serve:$(IMAGE_TAG)
	cpu=$$($(PUSHED) $(IMAGE_REPO):$(IMAGE_TAG)-cpu) && gpu=$$($(PUSHED) $(IMAGE_REPO):$(IMAGE_TAG)-gpu) \
	  && serve=$$($(PUSHED) $(IMAGE_REPO)-serve:$(IMAGE_TAG)) \
	  && skinlesion infra pin-image "$$cpu" \
	  && skinlesion infra pin-image "$$serve" --name ghcr.io/skinlesion/skinlesion-serve \
	  && $(MAKE) pipeline CPU_IMAGE="$$cpu" GPU_IMAGE="$$gpu"
PUSHED = $(ENGINE) image inspect --format '{{index .RepoDigests 0}}'

pipeline: install
	skinlesion pipeline compile --out $(PIPELINE_YAML) \
		$(if $(CPU_IMAGE),--cpu-image $(CPU_IMAGE)) $(if $(GPU_IMAGE),--gpu-image $(GPU_IMAGE))

clean:
	rm -rf reports data/split mlruns mlflow.db
