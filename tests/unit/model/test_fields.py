"""Single-value types: Go durations, ports, protocols, AS numbers, CIDR checks."""

from __future__ import annotations

import pytest
from pydantic import TypeAdapter, ValidationError

from pycalico.model.fields import (
    ASNumber,
    Duration,
    Port,
    Protocol,
    format_go_duration,
    network_problem,
    parse_go_duration,
    port_name_problem,
)


@pytest.mark.parametrize(
    ("text", "stored"),
    [
        ("5m", "5m0s"),
        ("90s", "1m30s"),
        ("1h", "1h0m0s"),
        ("1.5s", "1.5s"),
        ("250ms", "250ms"),
        ("0", "0s"),
        ("0s", "0s"),
        ("2h45m30.5s", "2h45m30.5s"),
        ("1500us", "1.5ms"),
        ("-3s", "-3s"),
    ],
)
def test_durations_are_stored_in_go_rendering(text: str, stored: str) -> None:
    assert TypeAdapter(Duration).validate_python(text) == stored
    assert TypeAdapter(Duration).validate_python(stored) == stored


@pytest.mark.parametrize("text", ["", "5", "5 m", "m5", "1d", "1h-3m"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError):
        parse_go_duration(text)


def test_duration_formatting_edges() -> None:
    assert format_go_duration(1) == "1ns"
    assert format_go_duration(60_000_000_000) == "1m0s"


@pytest.mark.parametrize(
    ("value", "stored"),
    [(80, 80), ("80", 80), ("80:80", 80), ("80:90", "80:90"), ("http", "http")],
)
def test_port_forms(value: object, stored: object) -> None:
    assert TypeAdapter(Port).validate_python(value) == stored


@pytest.mark.parametrize(
    "value", [0, 65536, True, "90:80", "0:10", "x:1", "HTTP", "-a", "a--b", "123"]
)
def test_bad_ports(value: object) -> None:
    if value == "123":
        assert TypeAdapter(Port).validate_python(value) == 123
        return
    with pytest.raises(ValidationError):
        TypeAdapter(Port).validate_python(value)


def test_port_names() -> None:
    assert port_name_problem("http") is None
    assert port_name_problem("h2c-tls") is None
    assert port_name_problem("1234") is not None
    assert port_name_problem("a" * 16) is not None


@pytest.mark.parametrize(
    ("value", "stored"),
    [("tcp", "TCP"), ("icmpv6", "ICMPv6"), ("UDPLite", "UDPLite"), (6, 6), ("17", 17)],
)
def test_protocols(value: object, stored: object) -> None:
    assert TypeAdapter(Protocol).validate_python(value) == stored


@pytest.mark.parametrize(
    ("value", "stored"), [(64512, 64512), ("64512", 64512), ("1.10", 65546), ("0.1", 1)]
)
def test_as_numbers(value: object, stored: int) -> None:
    assert TypeAdapter(ASNumber).validate_python(value) == stored


def test_network_problem_messages() -> None:
    assert network_problem("10.0.0.0/16") is None
    assert network_problem("10.0.0.1") is None
    assert network_problem("10.0.0.1/16") == "10.0.0.1/16 is not a network address: use 10.0.0.0/16"
    assert network_problem("fd00::1/64") == "fd00::1/64 is not a network address: use fd00::/64"
    assert network_problem("10.0.0.0/16", 6) == "10.0.0.0/16 is not an IPv6 network"
    assert network_problem("10.0.0.0/255.255.0.0") is not None
    assert network_problem("nonsense") == "'nonsense' is not a valid CIDR"
