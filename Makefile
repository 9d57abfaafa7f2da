# pycalico: the two commands a newcomer needs are `make demo` and `make test`.
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
VENV  := .venv
PY    := $(VENV)/bin/python
DEBIAN_PACKAGES := etcd-server etcd-client bird2 nftables iproute2 iputils-ping conntrack \
                   iperf3 containernetworking-plugins procps psmisc util-linux gobgpd podman runc busybox-static

.PHONY: setup system-packages python-env lint unit test demo bench clean clean-lab

setup: system-packages python-env

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

lint: setup
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench
	$(VENV)/bin/mypy src/pycalico
	$(VENV)/bin/lint-imports

test: lint
	$(VENV)/bin/pytest -q -p no:cacheprovider

unit: setup
	$(VENV)/bin/pytest -q tests/unit

demo: setup
	$(PY) -m pycalico.demo

bench: setup
	$(PY) -m bench

clean-lab:
	-$(VENV)/bin/calico-lab down 2>/dev/null || true

clean: clean-lab
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
