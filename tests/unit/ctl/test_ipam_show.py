"""The pure parts of ``calicoctl ipam show``: calicoctl's number formats (Go's ``%.5g`` and
``%.f``), reserved addresses counted once however reservations nest or overlap and never twice
with the addresses in use, the pool a block is counted under, and the go-pretty table."""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime

import pytest

from pycalico.ctl.ipam import (
    USAGE_HEADER,
    Usage,
    block_usage,
    owning_pool,
    render_table,
    reserved_in_cidr,
    usage_row,
    usage_rows,
)
from pycalico.ipam.blocks import AllocationBlock, ReleaseOption
from pycalico.ipam.pools import Pool
from pycalico.ipam.reservations import Reservations


def net(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    return ipaddress.ip_network(text)


def block(cidr: str, *held: int, cooling: tuple[int, ...] = ()) -> AllocationBlock:
    b = AllocationBlock.new(net(cidr), affinity="host:n", claim_time=None, sequence_number=1)
    for ordinal in (*held, *cooling):
        b.assign(b.address(ordinal), "h", {"node": "n"})
    if cooling:
        b.release(
            [ReleaseOption(b.address(o)) for o in cooling],
            cooldown_seconds=600,
            now=datetime.now(UTC),
        )
    return b


@pytest.mark.parametrize(
    ("n", "total", "text"),
    [
        (0, 64, "0 (0%)"),
        (8, 64, "8 (12%)"),  # 12.5 rounds to even, as Go's %.f
        (24, 64, "24 (38%)"),  # 37.5 rounds to even
        (1, 3, "1 (33%)"),
        (65536, 65536, "65536 (100%)"),
        (1048576, 1048576, "1.0486e+06 (100%)"),  # %.5g turns to exponent form
        (1000000, 2000000, "1e+06 (50%)"),
    ],
)
def test_counts_and_percentages_as_go_formats_them(n: int, total: int, text: str) -> None:
    row = usage_row("Block", net("10.0.0.0/26"), Usage(total=total, in_use=n))
    assert row[3] == text


def test_ipv6_pool_size_saturates_like_a_go_int() -> None:
    row = usage_row("IP Pool", net("fd00::/48"), Usage(total=2**80, in_use=7))
    assert row[2:] == ["9.2234e+18", "7 (0%)", "0 (0%)", "9.2234e+18 (100%)"]


def test_free_counts_an_address_both_in_use_and_reserved_once() -> None:
    assert Usage(total=64, in_use=4, reserved=8, in_use_reserved=1).free == 53
    assert Usage(total=4, in_use=4, reserved=4, in_use_reserved=0).free == 0  # never negative


def test_reserved_in_cidr_counts_nested_and_repeated_reservations_once() -> None:
    reservations = Reservations.from_cidrs(
        ["10.0.0.0/29", "10.0.0.4/30", "10.0.0.4", "10.0.0.100", "10.1.0.0/16", "fd00::/126"]
    )
    assert reserved_in_cidr(net("10.0.0.0/24"), reservations) == 9
    assert reserved_in_cidr(net("10.1.2.0/24"), reservations) == 256  # inside a reservation
    assert reserved_in_cidr(net("10.2.0.0/24"), reservations) == 0
    assert reserved_in_cidr(net("fd00::/64"), reservations) == 4
    assert reserved_in_cidr(net("10.0.0.0/24"), Reservations()) == 0


def test_block_usage_cooling_is_part_of_in_use_and_overlap_is_counted() -> None:
    b = block("10.0.0.0/26", 0, 1, 20, cooling=(2,))
    reservations = Reservations.from_cidrs(["10.0.0.16/29", "10.0.0.2", "10.0.1.0/24"])
    usage = block_usage(b, reservations)
    assert usage == Usage(total=64, in_use=4, reserved=9, in_use_reserved=2, cooling=1)
    assert usage.free == 64 - 9 - (4 - 2)


def test_owning_pool_prefers_block_size_then_narrowest_then_name() -> None:
    wide = Pool(name="a-wide", cidr=net("10.0.0.0/16"), block_size=26)
    narrow = Pool(name="b-narrow", cidr=net("10.0.0.0/24"), block_size=28)
    twin = Pool(name="a-twin", cidr=net("10.0.0.0/24"), block_size=28)
    v6 = Pool(name="v6", cidr=net("fd00::/48"), block_size=122)
    assert owning_pool(net("10.0.0.0/26"), [wide, narrow]) is wide  # size matches
    assert owning_pool(net("10.0.0.0/27"), [wide, narrow]) is narrow  # no match: narrowest
    assert owning_pool(net("10.0.0.0/28"), [narrow, twin]) is twin  # then by name
    assert owning_pool(net("10.9.0.0/26"), [narrow, v6]) is None


def test_usage_rows_order_pools_as_given_blocks_by_address_orphans_last() -> None:
    pools = [
        Pool(name="p1", cidr=net("10.0.0.0/24"), block_size=26),
        Pool(name="p2", cidr=net("fd00::/120"), block_size=122),
    ]
    blocks = [
        block("10.0.0.192/26", 1),
        block("10.5.0.0/26", 3),
        block("fd00::/122", 0),
        block("10.0.0.64/26", 0, 1),
    ]
    rows = usage_rows(pools, blocks, Reservations(), show_blocks=True)
    assert [(r[0], r[1]) for r in rows] == [
        ("IP Pool", "10.0.0.0/24"),
        ("Block", "10.0.0.64/26"),
        ("Block", "10.0.0.192/26"),
        ("IP Pool", "fd00::/120"),
        ("Block", "fd00::/122"),
        ("Block", "10.5.0.0/26"),
    ]
    assert rows[0][2:] == ["256", "3 (1%)", "0 (0%)", "253 (99%)"]
    assert [r[0] for r in usage_rows(pools, blocks, Reservations(), False)] == ["IP Pool"] * 2


def test_table_headings_left_counts_right_and_an_empty_table() -> None:
    table = render_table(["A", "NUMBER"], [["x", "1 (1%)"]], right={"NUMBER"})
    assert table.splitlines() == [
        "+---+--------+",
        "| A | NUMBER |",
        "+---+--------+",
        "| x | 1 (1%) |",
        "+---+--------+",
    ]
    empty = render_table(USAGE_HEADER, [], right=USAGE_HEADER[2:])
    assert empty.splitlines()[1].startswith("| GROUPING | CIDR | IPS TOTAL |")
    assert len(empty.splitlines()) == 3
