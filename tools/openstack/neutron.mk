# `make neutron`: Neutron 26.x (OpenStack 2025.1) in its own virtualenv, for the OpenStack
# mechanism driver's tests (pycalico.testing.neutron_server) and bench/openstack_ports.py.
# Neutron needs eventlet and pinned oslo libraries, so it cannot share .venv.  The virtualenv is
# cached outside the clone, keyed by the requirements and constraints (a changed pin rebuilds);
# .venv/neutron links to it.  Cold: ~45 s from PyPI here; warm: a file test (0.03 s).  Built under a
# lock (several clones share the cache) and marked complete only after a successful install, so an
# interrupted build is redone rather than used.  Our driver is not installed into the shared
# virtualenv: the test fixtures put this clone's src/ and an entry-point stub on PYTHONPATH, so
# each clone runs its own driver (see docs/openstack.md for a real OpenStack).
NEUTRON_FILES := tools/openstack/requirements.txt tools/openstack/upper-constraints.txt
NEUTRON_DIR   := $(CACHE_DIR)/neutron-$(shell cat $(NEUTRON_FILES) | sha256sum | cut -c1-12)

.PHONY: neutron
neutron: $(NEUTRON_DIR)/.complete python-env
	@ln -sfn $(NEUTRON_DIR) $(VENV)/neutron

$(NEUTRON_DIR)/.complete: $(NEUTRON_FILES)
	@mkdir -p $(CACHE_DIR)
	@flock $(CACHE_DIR)/neutron.lock bash -c '\
	    test -f $@ && exit 0; \
	    echo "Building Neutron'"'"'s virtualenv (cold: about a minute) into $(NEUTRON_DIR)"; \
	    rm -rf $(NEUTRON_DIR) && python3 -m venv $(NEUTRON_DIR) && \
	    $(NEUTRON_DIR)/bin/pip install -q --upgrade pip >/dev/null 2>&1 && \
	    $(NEUTRON_DIR)/bin/pip install -q -c tools/openstack/upper-constraints.txt \
	        -r tools/openstack/requirements.txt && \
	    touch $@'
