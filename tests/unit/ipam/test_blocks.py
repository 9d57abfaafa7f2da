"""Unit tests for the pure IPAM block model: Calico's JSON, ordinals, FIFO reuse, sequence
numbers, cooldown, and the affinity/handle/config values."""

from __future__ import annotations

import ipaddress
import json
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pycalico.ipam.blocks import (
    AddressInUse,
    AddressNotInBlock,
    AffinityMismatch,
    AllocationBlock,
    ReleaseOption,
    StaleRelease,
)
from pycalico.ipam.records import BlockAffinity, IPAMConfig, IPAMHandle

NOW = datetime(2026, 1, 1, tzinfo=UTC)
V4 = ipaddress.ip_network("10.65.0.0/29")


def new_block(cidr: str = "10.65.0.0/29", host: str = "node-1") -> AllocationBlock:
    return AllocationBlock.new(
        ipaddress.ip_network(cidr), affinity=f"host:{host}", claim_time=NOW, sequence_number=7
    )


def ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(text)


def test_new_block_has_calico_json_fields() -> None:
    raw = json.loads(new_block().to_json())
    assert raw["cidr"] == "10.65.0.0/29"
    assert raw["affinity"] == "host:node-1"
    assert raw["affinity_claim_time"] == "2026-01-01T00:00:00Z"
    assert raw["allocations"] == [None] * 8
    assert raw["unallocated"] == list(range(8))
    assert raw["attributes"] == []
    assert raw["sequenceNumber"] == 7
    assert raw["sequenceNumberForAllocation"] == {}
    assert raw["deleted"] is False


def test_reads_a_block_written_by_calico() -> None:
    calico = {
        "cidr": "10.65.0.0/30",
        "affinity": "host:kind-worker",
        "allocations": [0, None, 0, None],
        "unallocated": [3, 1],
        "attributes": [
            {"handle_id": "k8s-pod-network.abc", "secondary": {"node": "kind-worker", "pod": "p"}}
        ],
        "sequenceNumber": 12,
        "sequenceNumberForAllocation": {"0": 10, "2": 11},
        "deleted": False,
        "strictAffinity": False,
    }
    block = AllocationBlock.from_json(json.dumps(calico))
    assert block.host == "kind-worker"
    assert block.in_use_addresses() == [ip("10.65.0.0"), ip("10.65.0.2")]
    assert block.sequence_for(2) == 11
    assert block.validate() == []
    # Round trip keeps every field, including the ones we do not interpret.
    assert json.loads(block.to_json()) == calico


def test_legacy_host_affinity_is_read() -> None:
    block = AllocationBlock.from_json(
        json.dumps({"cidr": "10.0.0.0/30", "hostAffinity": "old-node", "unallocated": [0, 1, 2, 3]})
    )
    assert block.host == "old-node"
    assert block.allocations == [None] * 4


def test_ordinal_maths_v4_and_v6() -> None:
    block = new_block()
    assert block.ordinal(ip("10.65.0.5")) == 5
    assert block.address(5) == ip("10.65.0.5")
    assert str(block.interface(5)) == "10.65.0.5/29"
    with pytest.raises(AddressNotInBlock, match="not in block"):
        block.ordinal(ip("10.65.0.8"))
    v6 = AllocationBlock.new(
        ipaddress.ip_network("fd00::/122"), affinity=None, claim_time=None, sequence_number=1
    )
    assert v6.size == 64
    assert v6.ordinal(ip("fd00::3f")) == 63
    with pytest.raises(AddressNotInBlock):
        v6.ordinal(ip("10.0.0.1"))


def test_auto_assign_takes_from_the_head_and_records_sequence() -> None:
    block = new_block()
    got = block.auto_assign(2, "h1", {"node": "node-1"})
    assert [str(a) for a in got] == ["10.65.0.0/29", "10.65.0.1/29"]
    assert block.unallocated == [2, 3, 4, 5, 6, 7]
    assert block.allocations[:3] == [0, 0, None]
    assert block.sequence_number_for_allocation == {"0": 7, "1": 7}
    assert block.handle_counts() == {"h1": 2}


def test_release_is_fifo_so_the_longest_free_address_is_reused_first() -> None:
    block = new_block()
    block.auto_assign(8, "h", None)
    assert block.num_free() == 0
    assert block.auto_assign(1, "x", None) == []
    block.release([ReleaseOption(ip("10.65.0.3"))])
    block.release([ReleaseOption(ip("10.65.0.1"))])
    assert block.unallocated == [3, 1]
    assert str(block.auto_assign(1, "y", None)[0].ip) == "10.65.0.3"


def test_attributes_are_shared_and_compacted() -> None:
    block = new_block()
    block.auto_assign(1, "a", {"pod": "a"})
    block.auto_assign(1, "b", {"pod": "b"})
    block.auto_assign(1, "a", {"pod": "a"})
    assert len(block.attributes) == 2
    block.release([ReleaseOption(ip("10.65.0.0")), ReleaseOption(ip("10.65.0.2"))])
    assert [a.handle_id for a in block.attributes] == ["b"]
    assert block.allocations[1] == 0
    assert block.validate() == []


def test_stale_sequence_number_never_frees_a_reused_address() -> None:
    block = new_block()
    first = block.auto_assign(1, "old", None)[0]
    stale_seq = block.sequence_for(0)
    block.sequence_number += 1  # the allocator bumps it on every write
    block.release([ReleaseOption(first.ip)])
    # Reuse: the freed ordinal 0 is at the tail, so drain the rest first.
    block.auto_assign(7, "filler", None)
    block.sequence_number += 1
    again = block.auto_assign(1, "new", None)[0]
    assert again.ip == first.ip
    with pytest.raises(StaleRelease, match="sequence number"):
        block.release([ReleaseOption(first.ip, sequence_number=stale_seq)])
    assert block.attribute_for(first.ip) is not None
    assert block.attribute_for(first.ip).handle_id == "new"  # type: ignore[union-attr]
    # The current sequence number does release it.
    block.release([ReleaseOption(first.ip, sequence_number=block.sequence_for(0))])
    assert block.attribute_for(first.ip) is None


def test_release_checks_the_handle_and_reports_free_addresses() -> None:
    block = new_block()
    block.auto_assign(1, "mine", None)
    with pytest.raises(StaleRelease, match="handle"):
        block.release([ReleaseOption(ip("10.65.0.0"), handle_id="theirs")])
    outcome = block.release(
        [ReleaseOption(ip("10.65.0.0"), handle_id="mine"), ReleaseOption(ip("10.65.0.4"))]
    )
    assert outcome.not_allocated == (ip("10.65.0.4"),)
    assert outcome.released_by_handle == {"mine": 1}


def test_assign_given_address() -> None:
    block = new_block()
    block.assign(ip("10.65.0.6"), "h", None)
    assert 6 not in block.unallocated
    with pytest.raises(AddressInUse):
        block.assign(ip("10.65.0.6"), "h2", None)


def test_strict_affinity_checks_the_block_owner() -> None:
    block = new_block(host="node-1")
    with pytest.raises(AffinityMismatch, match="does not match"):
        block.auto_assign(1, "h", None, strict_host="node-2")
    unaffine = AllocationBlock.new(V4, affinity=None, claim_time=None, sequence_number=1)
    with pytest.raises(AffinityMismatch, match="no affinity"):
        unaffine.assign(ip("10.65.0.1"), "h", None, strict_host="node-1")
    assert block.auto_assign(1, "h", None, strict_host="node-1")


def test_release_by_handle_respects_sequence() -> None:
    block = new_block()
    block.auto_assign(2, "h", None)
    block.sequence_number += 1
    block.auto_assign(1, "h", None)
    assert block.release_by_handle("h", sequence_number=7) == [ip("10.65.0.0"), ip("10.65.0.1")]
    assert block.addresses_by_handle("h") == [ip("10.65.0.2")]
    assert block.release_by_handle("h") == [ip("10.65.0.2")]
    assert block.empty()


def test_cooldown_holds_released_addresses_until_it_passes() -> None:
    block = new_block("10.65.0.0/30")
    block.auto_assign(4, "h", {"pod": "p"})
    block.release([ReleaseOption(ip("10.65.0.2"))], cooldown_seconds=60, now=NOW)
    raw = json.loads(block.to_json())
    assert {"releasedAt": "2026-01-01T00:00:00Z", "secondary": {"pod": "p"}} in raw["attributes"]
    assert block.num_free() == 0
    assert not block.empty()
    assert block.attribute_for(ip("10.65.0.2")) is None  # not in use, yet not free
    with pytest.raises(AddressInUse):
        block.assign(ip("10.65.0.2"), "x", None)
    assert block.collect_cooled(cooldown_seconds=60, now=NOW + timedelta(seconds=59)) == 0
    assert block.collect_cooled(cooldown_seconds=60, now=NOW + timedelta(seconds=60)) == 1
    assert block.unallocated == [2]
    assert block.validate() == []


def test_empty_ignores_windows_reserved_handle() -> None:
    block = new_block()
    block.auto_assign(1, "windows-reserved-ipam-handle", None)
    assert block.empty()
    block.auto_assign(1, "pod", None)
    assert not block.empty()


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 15)), max_size=60))
def test_random_operations_keep_the_invariants(ops: list[tuple[bool, int]]) -> None:
    block = new_block("10.65.0.0/28")
    held: set[ipaddress.IPv4Address | ipaddress.IPv6Address] = set()
    for assign, ordinal in ops:
        if assign:
            for got in block.auto_assign(1 + ordinal % 3, f"h{ordinal % 4}", None):
                assert got.ip not in held
                held.add(got.ip)
        else:
            address = block.address(ordinal)
            outcome = block.release([ReleaseOption(address)])
            assert (address in held) == bool(outcome.released)
            held.discard(address)
        block.sequence_number += 1
        assert block.validate() == []
        assert set(block.in_use_addresses()) == held
        assert block.num_free() == 16 - len(held)


def test_affinity_values() -> None:
    assert BlockAffinity.from_json(b"").confirmed  # old format: empty value
    assert BlockAffinity.from_json(b"{}").confirmed
    pending = BlockAffinity.from_json(b'{"state":"pending","deleted":false}')
    assert pending.state == "pending" and not pending.confirmed
    assert json.loads(pending.to_json()) == {"state": "pending", "deleted": False}


def test_handle_values() -> None:
    handle = IPAMHandle.from_json(b'{"block":{"10.65.0.0/26":1},"deleted":false}')
    more = handle.incremented("10.65.0.0/26", 2).incremented("10.65.1.0/26", 1)
    assert dict(more.block) == {"10.65.0.0/26": 3, "10.65.1.0/26": 1}
    less = more.decremented("10.65.0.0/26", 3)
    assert dict(less.block) == {"10.65.1.0/26": 1}
    assert less.decremented("10.65.1.0/26", 5).empty
    assert json.loads(handle.to_json()) == {"block": {"10.65.0.0/26": 1}, "deleted": False}


def test_config_values_and_validation() -> None:
    config = IPAMConfig.from_json(
        b'{"strict_affinity":true,"auto_allocate_blocks":true,"maxBlocksPerHost":4,'
        b'"ipCooldownSeconds":30}'
    )
    assert config.strict_affinity and config.max_blocks_per_host == 4
    assert config.ip_cooldown_seconds == 30
    assert json.loads(config.to_json())["strict_affinity"] is True
    assert config.validate() == []
    assert IPAMConfig(strict_affinity=False, auto_allocate_blocks=False).validate()
    assert "strictAffinity" in IPAMConfig(max_blocks_per_host=2).validate()[0]
