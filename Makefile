# pycalico: the two commands a newcomer needs are `make demo` and `make test`.
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
VENV  := .venv
PY    := $(VENV)/bin/python
DEBIAN_PACKAGES := etcd-server etcd-client bird2 nftables iproute2 iputils-ping conntrack \
                   iperf3 containernetworking-plugins procps psmisc util-linux gobgpd podman runc busybox-static \
                   chromium chromium-driver

.PHONY: setup system-packages python-env kube lint unit test fuzz demo bench clean clean-lab

setup: system-packages python-env kube neutron

# Installs only what is missing, so it costs a dpkg query when everything is there.
system-packages:
	@missing=$$(for p in $(DEBIAN_PACKAGES); do \
	    dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	    echo "Installing Debian packages: $$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

# Re-installs the virtualenv only when pyproject.toml changed since the last install.
python-env: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	@$(PY) -m pip install -q --upgrade pip >/dev/null 2>&1
	@$(PY) -m pip install -q -e '.[dev]' 2>&1 | { grep -v '^WARNING: Location' || true; }
	@touch $@

# kube-apiserver and kubectl of the Kubernetes release pinned in tools/kube/go.mod, built from
# Kubernetes' own modules and cached outside the clone, keyed by the pin (so a changed go.mod or
# go.sum rebuilds); .venv/bin links to the cached copy.  Cold: minutes; warm: a few make lookups.
KUBE_VERSION := $(shell awk 'NF > 1 && $$(NF-1) == "k8s.io/kubernetes" {print $$NF}' tools/kube/go.mod)
KUBE_MINOR   := $(word 2,$(subst ., ,$(KUBE_VERSION)))
CACHE_DIR    := $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/pycalico
KUBE_DIR     := $(CACHE_DIR)/kube-$(KUBE_VERSION)-$(shell cat tools/kube/go.mod tools/kube/go.sum | sha256sum | cut -c1-12)
KUBE_GO_ENV  := GOMODCACHE=$(CACHE_DIR)/go/mod GOCACHE=$(CACHE_DIR)/go/build GOTOOLCHAIN=local GOFLAGS=-mod=readonly
KUBE_LDFLAGS := -s -w $(foreach pkg,k8s.io/client-go/pkg/version k8s.io/component-base/version,\
	-X $(pkg).gitVersion=$(KUBE_VERSION) -X $(pkg).gitMajor=1 -X $(pkg).gitMinor=$(KUBE_MINOR) \
	-X $(pkg).gitCommit= -X $(pkg).gitTreeState=clean -X $(pkg).buildDate=$$(date -u +%Y-%m-%dT%H:%M:%SZ))

kube: $(KUBE_DIR)/kube-apiserver python-env
	@ln -sfn $(KUBE_DIR)/kube-apiserver $(VENV)/bin/kube-apiserver
	@ln -sfn $(KUBE_DIR)/kubectl $(VENV)/bin/kubectl

# One `go build` for both commands (shared packages compile once); built into a temporary
# directory and renamed, so an interrupted build never leaves a half-written cache entry.
$(KUBE_DIR)/kube-apiserver:
	@test -n "$(KUBE_VERSION)" || { echo "tools/kube/go.mod pins no k8s.io/kubernetes" >&2; exit 1; }
	@command -v go >/dev/null || { echo "Go is needed to build kube-apiserver and kubectl" >&2; exit 1; }
	@echo "Building kube-apiserver and kubectl $(KUBE_VERSION) (cold: several minutes) into $(KUBE_DIR)"
	@rm -rf $(KUBE_DIR).tmp && mkdir -p $(KUBE_DIR).tmp
	cd tools/kube && $(KUBE_GO_ENV) go build -trimpath -ldflags "$(KUBE_LDFLAGS)" -o $(KUBE_DIR).tmp/ \
	    k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kubectl
	@rm -rf $(KUBE_DIR) && mv $(KUBE_DIR).tmp $(KUBE_DIR)

include tools/openstack/neutron.mk

lint: setup
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench
	$(VENV)/bin/mypy src/pycalico
	$(VENV)/bin/lint-imports

# The suite runs in TEST_WORKERS pytest-xdist processes, a test file to a worker (module fixtures
# are built once), the files that bring up labs in two lanes (tests/conftest.py); every test keeps
# to its own namespaces, ports and directories, so they do not meet.  Two workers on this
# two-core machine: four finished sooner (12.8 min against 25.5 serial) but saturated the cores,
# and timing-bound tests (a restart inside its flows, neutron-server's start) then failed.
# `make faults` stays serial: its figures are measurements.
TEST_WORKERS ?= 2
test: lint
	$(VENV)/bin/pytest -q -p no:cacheprovider -n $(TEST_WORKERS)

unit: setup
	$(VENV)/bin/pytest -q tests/unit

# The fuzz tests with a hundred times the budget they have in `make test` (docs/reliability.md).
# One of them takes minutes then, more than pyproject's 300 s per-test timeout on a busy machine.
FUZZ_TEST_TIMEOUT := 1800
fuzz: setup
	PYCALICO_FUZZ=long $(VENV)/bin/pytest -q -p no:cacheprovider --timeout=$(FUZZ_TEST_TIMEOUT) tests/unit/fuzz

demo: setup
	$(PY) -m pycalico.demo

bench: setup
	$(PY) -m bench

clean-lab:
	-$(VENV)/bin/calico-lab down 2>/dev/null || true

clean: clean-lab
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis

# The suite of issue 16 (docs/reliability.md): every fault drill, not only the fast subset that
# `make test` runs, and it prints their table (fault, packets lost, seconds to recover,
# consistency); then the soak (SOAK seconds of churn on a lab of its own, so a step of its own),
# the attacks, and the fuzz tests with their long budget.
SOAK ?= 120
.PHONY: faults
faults: setup
	PYCALICO_FAULTS=long PYCALICO_FAULTS_TABLE=$${PYCALICO_FAULTS_TABLE:-/tmp/pycalico-faults.md} \
		$(VENV)/bin/pytest -q -p no:cacheprovider tests/faults
	PYCALICO_FAULTS=long PYCALICO_SOAK=$(SOAK) \
		$(VENV)/bin/pytest -q -p no:cacheprovider tests/faults/test_soak.py
	$(VENV)/bin/pytest -q -p no:cacheprovider tests/attacks tests/integration/felix/test_attacks.py
	PYCALICO_FUZZ=long $(VENV)/bin/pytest -q -p no:cacheprovider --timeout=$(FUZZ_TEST_TIMEOUT) tests/unit/fuzz
