"""Property tests: generated valid pools and policies survive every encode/decode path unchanged,
and the value normalisers are idempotent (a stored value decodes to itself)."""

from __future__ import annotations

import ipaddress
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter

from pycalico.model.codec import (
    decode_resource,
    decode_value,
    dump_json,
    dump_yaml,
    encode_resource,
    encode_value,
    load_documents,
)
from pycalico.model.fields import Duration, Port, format_go_duration, parse_go_duration

MODES = st.sampled_from([None, "Never", "Always", "CrossSubnet"])
NAMES = st.from_regex(r"[a-z0-9]([-a-z0-9]{0,20}[a-z0-9])?", fullmatch=True)


@st.composite
def pools(draw: st.DrawFn) -> dict[str, Any]:
    version = draw(st.sampled_from([4, 6]))
    bits = 32 if version == 4 else 128
    low, high = (20, 32) if version == 4 else (116, 128)
    block_size = draw(st.integers(low, high))
    prefix = draw(st.integers(8 if version == 4 else 16, block_size))
    address = draw(st.integers(0, 2**bits - 1))
    network: ipaddress.IPv4Network | ipaddress.IPv6Network
    if version == 4:
        network = ipaddress.IPv4Network((address, prefix), strict=False)
        if network.overlaps(ipaddress.IPv4Network("169.254.0.0/16")):
            network = ipaddress.IPv4Network(("10.0.0.0", prefix))
    else:
        network = ipaddress.IPv6Network((address, prefix), strict=False)
        if network.overlaps(ipaddress.IPv6Network("fe80::/10")):
            network = ipaddress.IPv6Network(("fd00::", prefix))
    spec: dict[str, Any] = {"cidr": str(network), "blockSize": block_size}
    ipip = draw(MODES) if version == 4 else None
    vxlan = draw(MODES) if ipip in (None, "Never") else None
    for key, value in (("ipipMode", ipip), ("vxlanMode", vxlan)):
        if value is not None:
            spec[key] = value
    for key in ("natOutgoing", "disabled", "disableBGPExport"):
        if draw(st.booleans()):
            spec[key] = True
    return {
        "apiVersion": "projectcalico.org/v3",
        "kind": "IPPool",
        "metadata": {
            "name": draw(NAMES),
            "labels": draw(st.dictionaries(NAMES, NAMES, max_size=3)),
        },
        "spec": spec,
    }


PORTS = st.one_of(
    st.integers(1, 65535),
    st.tuples(st.integers(1, 65535), st.integers(1, 65535)).map(
        lambda pair: f"{min(pair)}:{max(pair)}"
    ),
    st.from_regex(r"[a-z]([a-z0-9]{0,13})", fullmatch=True),
)


@st.composite
def policies(draw: st.DrawFn) -> dict[str, Any]:
    def rule() -> dict[str, Any]:
        item: dict[str, Any] = {"action": draw(st.sampled_from(["Allow", "Deny", "Log", "Pass"]))}
        if draw(st.booleans()):
            item["protocol"] = draw(st.sampled_from(["TCP", "UDP", "SCTP", 6, 17]))
            item["destination"] = {"ports": draw(st.lists(PORTS, min_size=1, max_size=4))}
        if draw(st.booleans()):
            item["source"] = {"nets": [f"10.{draw(st.integers(0, 255))}.0.0/16"]}
        return item

    spec: dict[str, Any] = {"selector": "all()"}
    for direction in ("ingress", "egress"):
        rules = [rule() for _ in range(draw(st.integers(0, 3)))]
        if rules:
            spec[direction] = rules
    if draw(st.booleans()):
        spec["order"] = draw(st.floats(0, 1e6, allow_nan=False).map(lambda x: round(x, 2)))
    return {
        "apiVersion": "projectcalico.org/v3",
        "kind": "GlobalNetworkPolicy",
        "metadata": {"name": draw(NAMES)},
        "spec": spec,
    }


@settings(max_examples=150, deadline=None)
@given(st.one_of(pools(), policies()))
def test_valid_resources_survive_every_path(data: dict[str, Any]) -> None:
    resource = decode_resource(data)
    encoded = encode_resource(resource)
    assert decode_resource(encoded) == resource
    assert decode_value(encode_value(resource), kind=resource.kind) == resource
    assert load_documents(dump_yaml([resource])) == [resource]
    assert load_documents(dump_json([resource, resource])) == [resource, resource]


@given(PORTS)
def test_port_normalisation_is_idempotent(value: int | str) -> None:
    adapter = TypeAdapter(Port)
    once = adapter.validate_python(value)
    assert adapter.validate_python(once) == once


@given(st.integers(0, 10**14))
def test_durations_round_trip(nanoseconds: int) -> None:
    text = format_go_duration(nanoseconds)
    assert parse_go_duration(text) == nanoseconds
    assert TypeAdapter(Duration).validate_python(text) == text
