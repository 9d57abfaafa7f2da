"""An IPIP pool on a real kernel without the ipip module: Felix's dataplane logs an error naming
the pool and the missing kernel support, keeps programming everything else, and creates no
tunnel device, tunnel route or IPIP rule.
"""

from __future__ import annotations

import logging

import pytest

from pycalico.felix import messages as m
from pycalico.felix.drivers.ipip import ipip_unsupported_reason
from pycalico.testing import netns
from pycalico.testing.connectivity import ConnectivityChecker, Probe

from .conftest import Node

pytestmark = pytest.mark.root


def test_ipip_pool_is_reported_and_nothing_is_programmed_for_it(
    node: Node, matrix: ConnectivityChecker, caplog: pytest.LogCaptureFixture
) -> None:
    reason = ipip_unsupported_reason()
    if reason is None:
        pytest.skip("this kernel has IPIP: the refusal is for kernels without it")
    links_before = netns.netns_run(node.topology.node, "ip", "-o", "link", "show")
    ipip = m.IPPoolUpdate("10.65.0.0/16", "10.65.0.0/16", True, ipip_mode="Always")
    with caplog.at_level(logging.ERROR):
        node.start(ipip)
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("10.65.0.0/16 has ipipMode Always" in e and reason in e for e in errors), errors
    assert node.dataplane.counts()["ipip_unsupported_pools"] == 1

    assert netns.netns_run(node.topology.node, "ip", "-o", "link", "show") == links_before
    assert "ipip" not in netns.netns_run(node.topology.node, "ip", "-d", "link", "show")
    routes = netns.netns_run(node.topology.node, "ip", "route", "show", "proto", "80")
    assert routes.count("\n") == 3 and "tunl" not in routes  # the three pods' /32s only
    ruleset = node.nft("list", "table", "inet", "calico")
    assert "tunl" not in ruleset and "10.65.0.0/16" in ruleset  # only the NAT pool sets
    # Everything else works: the pods reach each other on this node.
    matrix.check({Probe("a", "b", 80): True, Probe("b", "c", 80): True}, 5.0)
