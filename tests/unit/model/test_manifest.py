"""calicoctl's reading of manifest text: go-yaml v2 scalars, Go's string conversion guided by the
target field, case-insensitive field names, repeated keys refused (issue 12 item 3)."""

from __future__ import annotations

from typing import Any

import pytest

from pycalico.model.codec import dump_yaml, encode_resource, load_documents
from pycalico.model.manifest import go_float32_string, go_scalar
from pycalico.model.validation import ValidationFailure

# --- scalars as go-yaml v2 resolves them -------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("5663:12", "5663:12"),  # no base-60 numbers (PyYAML's YAML 1.1 would say 339792)
        ("1:30", "1:30"),
        ("y", True),
        ("Y", True),
        ("n", False),
        ("yes", True),
        ("off", False),
        ("true", True),
        ("FALSE", False),
        ("True", True),
        ("tRUE", "tRUE"),
        ("~", None),
        ("null", None),
        ("", None),
        ("17", 17),
        ("+17", 17),
        ("-17", -17),
        ("017", 15),  # a leading zero is octal
        ("0o17", 15),
        ("0x1F", 31),
        ("0b101", 5),
        ("1_000", 1000),
        ("08", 8.0),  # not octal, so Go reads it as a float
        ("1e3", 1000.0),
        ("1.10", 1.1),
        (".5", 0.5),
        ("1e400", "1e400"),  # out of range: a string
        ("18446744073709551615", 18446744073709551615),  # uint64
        ("18446744073709551616", 1.8446744073709552e19),  # beyond: a float
        ("2001-12-14", "2001-12-14"),  # timestamps stay strings
        ("1.2.3.4", "1.2.3.4"),
        ("-", "-"),
        ("abc", "abc"),
    ],
)
def test_plain_scalars_resolve_as_go_yaml_v2(text: str, value: object) -> None:
    resolved = go_scalar(text)
    assert resolved == value
    assert type(resolved) is type(value)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (1.0, "1"),
        (1.1, "1.1"),
        (1.10, "1.1"),
        (0.5, "0.5"),
        (100000.0, "100000"),
        (1000000.0, "1e+06"),
        (0.0001, "0.0001"),
        (0.00001, "1e-05"),
        (3.14159, "3.14159"),
        (123456789.0, "1.2345679e+08"),  # float32 precision
        (-2.5, "-2.5"),
        (0.0, "0"),
        (1e40, "+Inf"),
    ],
)
def test_floats_become_strings_as_go_formats_a_float32(value: float, text: str) -> None:
    assert go_float32_string(value) == text


# --- string fields ----------------------------------------------------------------------------


def _load_one(text: str) -> dict[str, Any]:
    (resource,) = load_documents(text)
    return encode_resource(resource)


WEP = """\
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata:
  name: node1-cni-1234-eth0
  namespace: default
  labels: {version: 1, enabled: true, ratio: 1.10, flag: y}
spec:
  orchestrator: cni
  node: node1
  containerID: 1234
  endpoint: eth0
  interfaceName: cali12345
  ipNetworks: [10.0.0.1/32]
  ports:
  - {name: http, port: 8080, protocol: TCP}
"""


def test_numbers_and_booleans_in_string_fields_become_strings() -> None:
    wire = _load_one(WEP)
    labels = wire["metadata"]["labels"]
    assert {key: labels[key] for key in ("version", "enabled", "ratio", "flag")} == {
        "version": "1",
        "enabled": "true",
        "ratio": "1.1",
        "flag": "true",
    }
    assert wire["spec"]["containerID"] == "1234"
    # A field that is not a Go string keeps its number.
    assert wire["spec"]["ports"][0]["port"] == 8080


def test_a_community_is_not_a_base_60_number() -> None:
    wire = _load_one(
        "apiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata: {name: default}\n"
        "spec:\n  communities: [{name: c1, value: 5663:12}]\n"
        "  prefixAdvertisements: [{cidr: 10.0.0.0/8, communities: [c1, 5663:13]}]\n"
    )
    assert wire["spec"]["communities"] == [{"name": "c1", "value": "5663:12"}]
    assert wire["spec"]["prefixAdvertisements"][0]["communities"] == ["c1", "5663:13"]


@pytest.mark.parametrize(
    ("spec", "field", "message"),
    [
        # metav1.Duration decodes its own JSON: a number is refused, not turned into "30".
        ("reportingInterval: 30", "spec.reportingInterval", "duration"),
        # A number where a list of strings is expected is not converted either.
        ("interfacePrefix: [1]", "spec.interfacePrefix", "string"),
    ],
)
def test_types_with_their_own_decoding_are_not_converted(
    spec: str, field: str, message: str
) -> None:
    text = (
        "apiVersion: projectcalico.org/v3\nkind: FelixConfiguration\nmetadata: {name: default}\n"
        f"spec: {{{spec}}}\n"
    )
    with pytest.raises(ValidationFailure) as caught:
        load_documents(text)
    problems = {p.field: p.message for p in caught.value.problems}
    assert message in problems[field]


def test_json_input_gets_the_same_conversion() -> None:
    wire = _load_one(
        '{"apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkSet",'
        ' "metadata": {"name": "s", "labels": {"tier": 2}}, "spec": {"nets": ["10.0.0.0/8"]}}'
    )
    assert wire["metadata"]["labels"] == {"tier": "2"}


# --- field names ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "path", "value"),
    [
        (
            "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: p}\n"
            "spec: {CIDR: 10.0.0.0/16, ipipmode: Always, NATOUTGOING: true}\n",
            ("spec",),
            {"cidr": "10.0.0.0/16", "ipipMode": "Always", "natOutgoing": True},
        ),
        (
            "apiVersion: projectcalico.org/v3\nkind: KubeControllersConfiguration\n"
            "metadata: {name: default}\n"
            "spec: {controllers: {loadbalancer: {assignIPs: AllServices}}}\n",
            ("spec", "controllers", "loadBalancer"),
            {"assignIPs": "AllServices"},
        ),
        (
            "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nMetadata: {Name: p}\n"
            "Spec: {PeerIP: 10.0.0.1, ASNumber: 64512}\n",
            ("spec",),
            {"peerIP": "10.0.0.1", "asNumber": 64512},
        ),
    ],
)
def test_field_names_match_case_insensitively_and_print_canonically(
    text: str, path: tuple[str, ...], value: dict[str, Any]
) -> None:
    wire: Any = _load_one(text)
    for part in path:
        wire = wire[part]
    for key, expected in value.items():
        assert wire[key] == expected
    (resource,) = load_documents(text)
    printed = dump_yaml([resource])
    for key in value:
        assert f"{key}:" in printed


def test_kind_and_api_version_are_read_exactly() -> None:
    # calicoctl finds the kind with an unstructured (map) decode first: exact key names only.
    with pytest.raises(ValidationFailure, match="kind: is required"):
        load_documents("apiVersion: projectcalico.org/v3\nKind: BGPPeer\nmetadata: {name: p}\n")


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ("ip_ip_mode: Always", "spec.ip_ip_mode"),  # Python names are not wire names
        ("colour: blue", "spec.colour"),
    ],
)
def test_fields_matching_nothing_are_unknown(spec: str, field: str) -> None:
    text = (
        "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: p}\n"
        f"spec: {{cidr: 10.0.0.0/16, {spec}}}\n"
    )
    with pytest.raises(ValidationFailure) as caught:
        load_documents(text)
    assert {p.field: p.message for p in caught.value.problems} == {field: "unknown field"}


def test_unknown_felix_fields_are_kept_as_written() -> None:
    wire = _load_one(
        "apiVersion: projectcalico.org/v3\nkind: FelixConfiguration\nmetadata: {name: default}\n"
        "spec: {bpfKubeProxyIptablesCleanupEnabled: false, someFutureSetting: 7}\n"
    )
    assert wire["spec"]["someFutureSetting"] == 7


# --- repeated keys ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: p}\n"
        "spec:\n  cidr: 10.0.0.0/16\n  cidr: 10.1.0.0/16\n",
        "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: p, name: q}\n"
        "spec: {cidr: 10.0.0.0/16}\n",
        "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkSet\nmetadata:\n  name: s\n"
        "  labels: {yes: a, true: b}\n",  # both keys are the boolean true
        '{"apiVersion": "projectcalico.org/v3", "kind": "IPPool", "metadata": {"name": "p"},'
        ' "spec": {"cidr": "10.0.0.0/16", "cidr": "10.1.0.0/16"}}',
    ],
)
def test_a_repeated_key_is_refused(text: str) -> None:
    with pytest.raises(ValidationFailure, match="repeated"):
        load_documents(text)


def test_keys_of_different_types_are_not_repeats() -> None:
    wire = _load_one(
        "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkSet\nmetadata:\n  name: s\n"
        "  labels: {1: a, x: b}\n"
    )
    assert wire["metadata"]["labels"] == {"1": "a", "x": "b"}


# --- printing ---------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["y", "n", "on", "0o17", "1e3", "08", "1_000", "true"])
def test_strings_that_look_like_other_scalars_are_quoted_when_printed(value: str) -> None:
    text = (
        "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkSet\nmetadata:\n  name: s\n"
        f"  labels: {{k: '{value}'}}\n"
    )
    (resource,) = load_documents(text)
    assert resource.metadata.labels == {"k": value}
    assert load_documents(dump_yaml([resource])) == [resource]


@pytest.mark.parametrize(
    ("spec", "field", "message"),
    [
        ('natOutgoing: "true"', "spec.natOutgoing", "must be true or false, not a string"),
        ("natOutgoing: 1", "spec.natOutgoing", "must be true or false, not a number"),
        ('blockSize: "26"', "spec.blockSize", "must be a number, not a string"),
        ("blockSize: yes", "spec.blockSize", "must be a number, not a boolean"),
    ],
)
def test_go_refuses_strings_for_booleans_and_numbers(spec: str, field: str, message: str) -> None:
    text = (
        "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: p}\n"
        f"spec:\n  cidr: 10.0.0.0/16\n  {spec}\n"
    )
    with pytest.raises(ValidationFailure) as caught:
        load_documents(text)
    assert message in {p.field: p.message for p in caught.value.problems}[field]


def test_types_with_their_own_go_decoding_accept_strings() -> None:
    # numorstring.ASNumber and Port decode a string as well as a number.
    wire = _load_one(
        "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {name: p}\n"
        "spec: {peerIP: 10.0.0.1, asNumber: '64512'}\n"
    )
    assert wire["spec"]["asNumber"] == 64512
    assert (
        _load_one(
            "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: p}\n"
            "spec: {cidr: 10.0.0.0/16, blockSize: 26.0}\n"
        )["spec"]["blockSize"]
        == 26
    )
