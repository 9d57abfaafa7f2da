"""Named-port IP set ids are built as Calico's rule scanner builds them (reference §3.3)."""

from __future__ import annotations

import base64
import hashlib

import pytest

from pycalico.felix.calc.rules import named_port_ip_set
from pycalico.felix.messages import PolicyID
from pycalico.model.selectors import parse
from pycalico.testing.felix_calc import Harness, global_policy, workload


def _calico_id(selector_id: str, protocol: str, port: str) -> str:
    # Calico: "n:" + unpadded URL-safe base64 of SHA-224 over "n:<selectorID>,<proto>,<port>".
    digest = hashlib.sha224(f"n:{selector_id},{protocol},{port}".encode()).digest()
    return "n:" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


@pytest.mark.parametrize(
    ("selector", "protocol", "port"),
    [
        ("role == 'db'", "tcp", "postgres"),
        ("all()", "udp", "dns"),
        ("has(app)", "sctp", "x-1"),
    ],
)
def test_named_port_set_id_is_selector_protocol_port(
    selector: str, protocol: str, port: str
) -> None:
    parsed = parse(selector)
    spec = named_port_ip_set(parsed, protocol, port)
    assert spec.id == _calico_id(parsed.unique_id, protocol, port)
    # The old "<selector>,<proto>:<port>" form gave other names than Calico's.
    old = hashlib.sha224(f"n:{parsed.unique_id},{protocol}:{port}".encode()).digest()
    assert spec.id != "n:" + base64.urlsafe_b64encode(old).rstrip(b"=").decode()


def test_protocol_and_port_are_separate_parts_of_the_id() -> None:
    parsed = parse("all()")
    assert (
        named_port_ip_set(parsed, "tcp", "http").id != named_port_ip_set(parsed, "udp", "http").id
    )
    assert named_port_ip_set(parsed, "tcp", "a").id != named_port_ip_set(parsed, "tcp", "b").id


def test_a_named_port_without_protocol_takes_every_declared_protocol(harness: Harness) -> None:
    # Calico looks a named port up under ProtocolAny when the rule has no protocol.
    harness.put(
        workload(
            "dns-tcp",
            labels={"app": "dns"},
            ips=["10.0.0.2"],
            ports=[{"name": "dns", "protocol": "TCP", "port": 53}],
        ),
        workload(
            "dns-udp",
            labels={"app": "dns"},
            ips=["10.0.0.3"],
            ports=[{"name": "dns", "protocol": "UDP", "port": 5353}],
        ),
        global_policy(
            "to-dns",
            selector="all()",
            egress=[
                {"action": "Allow", "destination": {"selector": "app == 'dns'", "ports": ["dns"]}}
            ],
        ),
    )
    rule = harness.dataplane.policies[PolicyID("default", "to-dns")].outbound_rules[0]
    (named,) = rule.destination_named_port_ip_set_ids
    assert named == _calico_id(parse("app == 'dns'").unique_id, "any", "dns")
    assert harness.dataplane.ip_sets[named] == {"10.0.0.2,tcp:53", "10.0.0.3,udp:5353"}
