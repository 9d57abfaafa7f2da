"""The codec's batch decoding of stored values with their resourceVersion (the list path)."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest

from pycalico.model.codec import (
    PROMOTE_AT,
    ValidationFailure,
    decode_value,
    decode_values,
    decode_versioned_value,
    decode_versioned_values,
    encode_value,
    load_documents,
)
from pycalico.model.meta import Resource

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


def _resources() -> list[Resource]:
    return load_documents((EXAMPLES / "all-kinds.yaml").read_text())


def _endpoint(index: int) -> bytes:
    return (
        b'{"apiVersion":"projectcalico.org/v3","kind":"WorkloadEndpoint","metadata":{"name":'
        b'"node1-k8s-pod%d-eth0","namespace":"ns","labels":{"app":"web"}},"spec":{"orchestrator":'
        b'"k8s","node":"node1","pod":"pod%d","endpoint":"eth0","interfaceName":"cali%d",'
        b'"ipNetworks":["10.0.0.%d/32"],"ports":[{"name":"http","protocol":"TCP","port":80}]}}'
        % (index, index, index, index % 250 + 1)
    )


def test_each_kind_decodes_equal_to_decode_value_with_metadata() -> None:
    resources = _resources()
    assert len({r.kind for r in resources}) > 5
    for revision, resource in enumerate(resources, start=7):
        value = encode_value(resource)
        expected = decode_value(value, kind=resource.kind).with_metadata(
            resource_version=str(revision)
        )
        (got,) = decode_versioned_values([value], [revision], kind=resource.kind)
        assert got == expected
        assert got.metadata.model_fields_set == expected.metadata.model_fields_set
        assert got.model_dump() == expected.model_dump()
        assert decode_versioned_value(value, revision, kind=resource.kind) == expected


def test_a_stored_resource_version_is_replaced_and_other_objects_are_untouched() -> None:
    value = _endpoint(1).replace(b'"metadata":{', b'"metadata":{"resourceVersion":"3",')
    first, second = decode_versioned_values([value, value], [10, 11], kind="WorkloadEndpoint")
    assert (first.resource_version, second.resource_version) == ("10", "11")
    assert first.metadata is not second.metadata
    assert decode_value(value, kind="WorkloadEndpoint").resource_version == "3"


def test_a_bad_value_raises_what_decode_value_raises() -> None:
    values = [_endpoint(1), b'{"kind":"WorkloadEndpoint","spec":{"ports":"x"}}', _endpoint(2)]
    with pytest.raises(ValidationFailure) as batch:
        decode_versioned_values(values, [1, 2, 3], kind="WorkloadEndpoint")
    with pytest.raises(ValidationFailure) as single:
        decode_value(values[1], kind="WorkloadEndpoint")
    assert batch.value.problems == single.value.problems
    assert [p.field for p in batch.value.problems] == ["spec.ports"]
    with pytest.raises(ValidationFailure) as wrong_kind:
        decode_values([b'{"kind":"GlobalNetworkSet","metadata":{"name":"a"}}'], kind="NetworkSet")
    assert [(p.field, p.message) for p in wrong_kind.value.problems] == [
        ("kind", "is 'GlobalNetworkSet'")
    ]
    with pytest.raises(ValueError, match="2 values but 1 versions"):
        decode_versioned_values([_endpoint(1), _endpoint(2)], [1], kind="WorkloadEndpoint")
    assert gc.isenabled()


def test_a_large_batch_leaves_the_young_generation_empty_and_the_collector_on() -> None:
    values = [_endpoint(i) for i in range(PROMOTE_AT)]
    gc.collect()
    decoded = decode_versioned_values(values, range(PROMOTE_AT), kind="WorkloadEndpoint")
    assert gc.isenabled()
    # Promoted: the first collection after the batch has only a few new objects to walk.
    assert gc.get_count()[0] < 100
    assert gc.is_tracked(decoded[0]) and decoded[-1].resource_version == str(PROMOTE_AT - 1)


def test_objects_an_application_froze_stay_frozen() -> None:
    values = [_endpoint(i) for i in range(PROMOTE_AT)]
    sentinel = [object()]  # a container the collector tracks, frozen with the rest
    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        decode_versioned_values(values, range(PROMOTE_AT), kind="WorkloadEndpoint")
        # Nothing decoded was frozen: the count only falls (frozen objects freed meanwhile, as
        # by another test's threads still winding down in this process) ...
        assert gc.get_freeze_count() <= frozen
        # ... and nothing frozen was thawed: the collector's generations do not hold it again.
        assert all(obj is not sentinel for obj in gc.get_objects())
    finally:
        gc.unfreeze()


def test_with_the_collector_disabled_by_the_application_it_stays_disabled() -> None:
    gc.disable()
    try:
        decode_versioned_values(
            [_endpoint(1)] * PROMOTE_AT, [1] * PROMOTE_AT, kind="WorkloadEndpoint"
        )
        assert not gc.isenabled()
    finally:
        gc.enable()
