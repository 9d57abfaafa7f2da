"""IP autodetection methods over given interfaces (pure)."""

from __future__ import annotations

import pytest

from pycalico.node.autodetect import AutodetectError, Interface, detect, with_prefix

INTERFACES = [
    Interface("lo", ("127.0.0.1/8", "::1/128")),
    Interface("docker0", ("172.17.0.1/16",)),
    Interface("cali1234567890a", ("169.254.1.1/32",)),
    Interface("eth0", ("fe80::1/64", "10.0.0.5/24", "fd00::5/64")),
    Interface("eth1", ("192.168.7.9/24",)),
]


def test_first_found_skips_excluded_and_link_local() -> None:
    assert detect("first-found", INTERFACES, 4) == "10.0.0.5/24"
    assert detect("", INTERFACES, 6) == "fd00::5/64"


def test_interface_regex() -> None:
    assert detect("interface=eth1", INTERFACES, 4) == "192.168.7.9/24"
    assert detect("interface=nope,eth.*", INTERFACES, 4) == "10.0.0.5/24"
    assert detect("interface=wlan0", INTERFACES, 4) is None
    with pytest.raises(AutodetectError, match="bad regex"):
        detect("interface=(", INTERFACES, 4)


def test_skip_interface_and_cidr() -> None:
    assert detect("skip-interface=eth0", INTERFACES, 4) == "192.168.7.9/24"
    assert detect("cidr=192.168.0.0/16", INTERFACES, 4) == "192.168.7.9/24"
    assert detect("cidr=10.9.0.0/16,10.0.0.0/8", INTERFACES, 4) == "10.0.0.5/24"
    with pytest.raises(AutodetectError):
        detect("cidr=banana", INTERFACES, 4)


def test_can_reach_uses_the_route_source() -> None:
    assert detect("can-reach=8.8.8.8", INTERFACES, 4, route_source=lambda _: "192.168.7.9") == (
        "192.168.7.9/24"
    )
    assert detect("can-reach=1.1.1.1", INTERFACES, 4, route_source=lambda _: None) is None


def test_unknown_method_names_itself() -> None:
    with pytest.raises(AutodetectError, match="'magic'"):
        detect("magic", INTERFACES, 4)


def test_with_prefix() -> None:
    assert with_prefix("10.0.0.5", INTERFACES) == "10.0.0.5/24"
    assert with_prefix("10.0.0.6", INTERFACES) is None
