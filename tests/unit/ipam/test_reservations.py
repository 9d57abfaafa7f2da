"""Reservations as IPAM consults them (pure): parsing Calico's accepted forms, whole-CIDR
coverage (alone or together), and a block's auto-assignment skipping reserved ordinals."""

from __future__ import annotations

import ipaddress
import json
from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from pycalico.ipam.blocks import AllocationBlock
from pycalico.ipam.records import BlockSummary
from pycalico.ipam.reservations import Reservations, parse_reserved


def net(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    return ipaddress.ip_network(text)


def ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(text)


def block(cidr: str = "10.65.0.0/29") -> AllocationBlock:
    return AllocationBlock.new(
        net(cidr),
        affinity="host:node-1",
        claim_time=datetime(2026, 1, 1, tzinfo=UTC),
        sequence_number=7,
    )


def test_parse_accepts_calicos_forms_and_skips_the_rest() -> None:
    assert parse_reserved(" 10.0.0.5/30 ") == net("10.0.0.4/30")
    assert parse_reserved("10.0.0.9") == net("10.0.0.9/32")
    assert parse_reserved("fd00::1") == net("fd00::1/128")
    for bad in ("", "x", "10.0.0.0/33", "10.0.0.0/255.0.0.0", "fe80::1%eth0"):
        assert parse_reserved(bad) is None
    reservations = Reservations.from_resource_json(
        [
            json.dumps({"spec": {"reservedCIDRs": ["10.0.0.9", "bogus", "10.0.0.9/32"]}}),
            json.dumps({"metadata": {"name": "empty"}}),
        ]
    )
    assert reservations.networks == (net("10.0.0.9/32"),)


def test_matches_ip_and_family() -> None:
    reservations = Reservations.from_cidrs(["10.0.0.4/30", "fd00::/126"])
    assert reservations.matches_ip(ip("10.0.0.7"))
    assert not reservations.matches_ip(ip("10.0.0.8"))
    assert reservations.matches_ip(ip("fd00::3"))
    assert not reservations.matches_ip(ip("::ffff:10.0.0.5"))
    assert not Reservations()


def test_matches_whole_alone_together_and_not() -> None:
    reservations = Reservations.from_cidrs(
        ["10.0.0.0/16", "10.1.0.0/27", "10.1.0.32/27", "10.2.0.0/27", "10.2.0.0/28"]
    )
    assert reservations.matches_whole(net("10.0.3.0/26"))  # inside one reservation
    assert reservations.matches_whole(net("10.1.0.0/26"))  # two halves together
    # A nested duplicate must not be counted twice: 10.2.0.0/26 is only half reserved.
    assert not reservations.matches_whole(net("10.2.0.0/26"))
    assert not reservations.matches_whole(net("10.3.0.0/26"))
    assert not reservations.matches_whole(net("fd00::/122"))


def test_reserved_in_is_limited_to_the_block() -> None:
    reservations = Reservations.from_cidrs(["10.0.0.0/8", "10.65.0.2"])
    inside = reservations.reserved_in(net("10.65.0.0/29"))
    assert sorted(inside) == [ip(f"10.65.0.{i}") for i in range(8)]
    assert reservations.reserved_in(net("11.0.0.0/29")) == ()
    assert reservations.reserved_in(net("10.65.0.0/29")) is inside  # memoised


def test_auto_assign_skips_reserved_ordinals_and_keeps_them_free_in_order() -> None:
    b = block()
    reserved = Reservations.from_cidrs(["10.65.0.0/31", "10.65.0.4"]).reserved_in(b.cidr)
    assert b.num_free(reserved) == 5
    taken = b.auto_assign(3, "h1", None, reserved=reserved)
    assert [str(t.ip) for t in taken] == ["10.65.0.2", "10.65.0.3", "10.65.0.5"]
    # Reserved ordinals stay in place at the head of the free list; they are not allocated.
    assert b.unallocated == [0, 1, 4, 6, 7]
    assert b.allocations[0] is None and b.allocations[4] is None
    assert b.num_free(reserved) == 2
    rest = b.auto_assign(5, "h2", None, reserved=reserved)
    assert [str(t.ip) for t in rest] == ["10.65.0.6", "10.65.0.7"]
    # Exhausted by reservations: nothing more, though three ordinals are still free.
    assert b.num_free(reserved) == 0 and len(b.unallocated) == 3
    assert b.auto_assign(1, "h3", None, reserved=reserved) == []
    assert b.validate() == []


def test_block_summary_free_excluding() -> None:
    b = block()
    b.auto_assign(2, "h1", None)
    summary = BlockSummary.from_json(b.to_json())
    assert summary.free == 6
    assert summary.free_excluding(()) == 6
    assert summary.free_excluding([ip("10.65.0.0"), ip("10.65.0.2"), ip("10.65.0.3")]) == 4


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 63), st.integers(26, 32)), max_size=6),
    st.integers(1, 64),
)
def test_auto_assign_never_returns_a_reserved_address(
    pieces: list[tuple[int, int]], count: int
) -> None:
    cidrs = [
        str(ipaddress.ip_network(f"10.9.0.{offset}/{prefix}", strict=False))
        for offset, prefix in pieces
    ]
    reservations = Reservations.from_cidrs(cidrs)
    b = block("10.9.0.0/26")
    reserved = reservations.reserved_in(b.cidr)
    expected = b.num_free(reserved)
    taken = b.auto_assign(count, "h", None, reserved=reserved)
    assert len(taken) == min(count, expected)
    assert not any(reservations.matches_ip(t.ip) for t in taken)
    assert reservations.matches_whole(b.cidr) == (expected == 0)
    assert b.validate() == []
