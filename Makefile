# projectgen: `make test` is the one test command (CI runs it through .ci/run); `make demo` the local demo.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test matrix lint unit integration demo dev bench crds controlplane gitea promtool node image clean
IMAGE ?= projectgen:0.1.0
# BASE=public: FROM python:3.11-slim; BASE=local: a Debian base made here (no registry reachable).
BASE ?= public

$(STAMP): pyproject.toml
	@bash hack/ensure-tools.sh
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install -q --disable-pip-version-check --upgrade pip
	@$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[test]'
	@touch $@

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/projectgen crds --check

controlplane: $(STAMP)
	@$(BIN)/python -m projectgen_dev.controlplane --ensure

# A real Gitea for the publish tests, built once from the Go module proxy into the cache.
gitea: $(STAMP)
	@$(BIN)/python -m projectgen_dev.gitea --ensure

# promtool of the Prometheus release the alert rules are written for (manifests/monitoring/), built
# once from the Go module proxy into the cache: the rule tests and `promtool check metrics` use it.
promtool: $(STAMP)
	@$(BIN)/python -m projectgen_dev.promtool --ensure

# The operator image from the Dockerfile (podman or buildah).
image: $(STAMP)
	@bash hack/ensure-tools.sh --node
	@bash hack/build-image.sh $(IMAGE) $(BASE)

# A local node for the tests: kubelet, controller-manager, scheduler and pause built into the cache,
# containerd/runc/CNI plugins installed when missing, and the image the node tests load.
node: $(STAMP) controlplane
	@$(BIN)/python -m projectgen_dev.node --ensure

# The whole suite on the default (newest) Kubernetes, then the tests marked `matrix` on each older
# pinned version (projectgen_dev.controlplane.KUBE_VERSIONS), as kubebuilder projects run envtest:
# PROJECTGEN_KUBE_VERSION picks the kube-apiserver, built on demand into ~/.cache/projectgen/bin/<version>/.
MATRIX_VERSIONS ?= $(shell $(BIN)/python -c 'from projectgen_dev.controlplane import KUBE_VERSIONS; print(*list(KUBE_VERSIONS)[1:])')
test: lint controlplane gitea promtool node
	$(BIN)/pytest -q -ra
	@$(MAKE) --no-print-directory matrix

matrix: $(STAMP)
	@test -n "$(MATRIX_VERSIONS)" || { echo "[matrix] no older Kubernetes versions found" >&2; exit 1; }
	@set -e; for v in $(MATRIX_VERSIONS); do \
	  echo "[matrix] Kubernetes $$v: the tests marked matrix"; \
	  PROJECTGEN_KUBE_VERSION=$$v $(BIN)/python -m projectgen_dev.controlplane --ensure; \
	  PROJECTGEN_KUBE_VERSION=$$v $(BIN)/pytest -q -ra -m matrix tests/integration; \
	done

unit: $(STAMP) gitea promtool
	$(BIN)/pytest -q tests/unit

integration: controlplane promtool
	$(BIN)/pytest -q tests/integration

crds: $(STAMP)
	$(BIN)/projectgen crds

demo: controlplane
	$(BIN)/python -m projectgen_dev demo

dev: controlplane
	$(BIN)/python -m projectgen_dev demo --keep

bench: $(STAMP) controlplane
	@bash hack/ensure-tools.sh --bench
	$(BIN)/python benchmarks/archive.py
	$(BIN)/python benchmarks/generate.py
	$(BIN)/python benchmarks/reconcile.py
	$(BIN)/python benchmarks/update.py
	$(BIN)/python benchmarks/fleet.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
