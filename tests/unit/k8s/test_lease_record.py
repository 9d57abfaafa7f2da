"""Leader election's decisions (client-go's tryAcquireOrRenew) on plain records."""

from __future__ import annotations

from datetime import UTC, datetime

from pycalico.k8s.lease_record import LeaseRecord, micro_time, next_record, released

NOW = datetime(2026, 12, 6, 18, 0, 0, tzinfo=UTC)
STAMP = "2026-12-06T18:00:00.000000Z"
EARLIER = "2026-12-06T17:59:00.000000Z"


def test_micro_time_always_has_six_fractional_digits() -> None:
    assert micro_time(NOW) == STAMP
    assert micro_time(NOW.replace(microsecond=5)) == "2026-12-06T18:00:00.000005Z"


def test_no_lease_is_created_with_us_as_holder() -> None:
    assert next_record(None, "a", now=NOW, observed_for=0, duration_seconds=15) == LeaseRecord(
        "a", 15, STAMP, STAMP, 0
    )


def test_a_live_lease_of_another_is_left_alone_until_we_saw_it_unchanged_for_its_duration() -> None:
    held = LeaseRecord("b", 15, EARLIER, EARLIER, 3)
    assert next_record(held, "a", now=NOW, observed_for=14.9, duration_seconds=15) is None
    taken = next_record(held, "a", now=NOW, observed_for=15.0, duration_seconds=15)
    assert taken == LeaseRecord("a", 15, STAMP, STAMP, 4)


def test_renewal_keeps_acquire_time_and_transitions() -> None:
    mine = LeaseRecord("a", 15, EARLIER, EARLIER, 3)
    renewed = next_record(mine, "a", now=NOW, observed_for=100, duration_seconds=15)
    assert renewed == LeaseRecord("a", 15, EARLIER, STAMP, 3)


def test_a_released_lease_is_free_at_once() -> None:
    free = released(LeaseRecord("b", 15, EARLIER, EARLIER, 3))
    assert free.holder == "" and free.duration_seconds == 1
    assert next_record(free, "a", now=NOW, observed_for=0, duration_seconds=15) == LeaseRecord(
        "a", 15, STAMP, STAMP, 4
    )


def test_wire_round_trip() -> None:
    record = LeaseRecord("a", 15, EARLIER, STAMP, 2)
    assert LeaseRecord.from_wire({"spec": record.to_spec()}) == record
    assert LeaseRecord.from_wire({"spec": {}}) == LeaseRecord("", 0, None, None, 0)
