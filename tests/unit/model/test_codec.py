"""The codec: round trips of every kind, the example manifests, multi-document/List/JSON input,
YAML/JSON output shapes, the etcd value form, and problem reporting across documents."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from pycalico.model.codec import (
    ValidationFailure,
    decode_resource,
    decode_value,
    decode_values,
    dump_json,
    dump_yaml,
    encode_resource,
    encode_value,
    load_documents,
)
from pycalico.model.endpoints import WorkloadEndpoint
from pycalico.model.ipam import IPPool
from pycalico.model.kinds import KINDS
from pycalico.model.meta import ObjectMeta

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


def _example(name: str) -> str:
    return (EXAMPLES / name).read_text()


def _is_subset(small: object, big: object) -> bool:
    """Every key/value of ``small`` is in ``big`` (lists compared item by item)."""
    if isinstance(small, dict):
        return isinstance(big, dict) and all(
            key in big and _is_subset(value, big[key]) for key, value in small.items()
        )
    if isinstance(small, list):
        return (
            isinstance(big, list)
            and len(small) == len(big)
            and all(_is_subset(a, b) for a, b in zip(small, big, strict=True))
        )
    return small == big


def test_all_kinds_example_has_one_of_every_kind() -> None:
    resources = load_documents(_example("all-kinds.yaml"), "all-kinds.yaml")
    readonly = load_documents(_example("clusterinformation.yaml"), "clusterinformation.yaml")
    # calicoctl cannot write ClusterInformation, so the example it applies leaves it out.
    assert {resource.kind for resource in resources} == set(KINDS) - {"ClusterInformation"}
    assert {resource.kind for resource in readonly} == {"ClusterInformation"}


@pytest.mark.parametrize(
    "name", ["all-kinds.yaml", "clusterinformation.yaml", "pools.yaml", "policy.yaml"]
)
def test_example_round_trips(name: str) -> None:
    text = _example(name)
    resources = load_documents(text, name)
    raw = [doc for doc in yaml.safe_load_all(text) if doc]
    assert len(resources) == len(raw)
    for resource, written in zip(resources, raw, strict=True):
        encoded = encode_resource(resource)
        # What the user wrote is all there (durations and ports already in Calico's form) ...
        assert _is_subset(written, encoded), (written, encoded)
        # ... and decoding what we print gives the same resource back.
        assert decode_resource(encoded) == resource
        assert decode_value(encode_value(resource), kind=resource.kind) == resource


def test_encode_of_example_is_input_plus_defaults() -> None:
    pool, disabled = load_documents(_example("pools.yaml"))
    assert encode_resource(pool)["spec"] == {
        "cidr": "192.168.0.0/16",
        "natOutgoing": True,
        "vxlanMode": "CrossSubnet",
        "ipipMode": "Never",
        "blockSize": 26,
        "nodeSelector": "all()",
        "allowedUses": ["Workload", "Tunnel"],
        "assignmentMode": "Automatic",
    }
    assert encode_resource(disabled)["spec"]["blockSize"] == 28
    assert encode_resource(disabled)["spec"]["disabled"] is True


def test_every_kind_round_trips_through_yaml_json_and_etcd_value() -> None:
    resources = load_documents(_example("all-kinds.yaml"))
    assert load_documents(dump_yaml(resources)) == resources
    assert load_documents(dump_json(resources)) == resources
    for resource in resources:
        assert load_documents(dump_yaml([resource])) == [resource]
        value = encode_value(resource)
        assert decode_value(value, kind=type(resource)) == resource


def test_encode_drops_go_omitempty_noise() -> None:
    pool = decode_resource(
        {
            "apiVersion": "projectcalico.org/v3",
            "kind": "IPPool",
            "metadata": {"name": "p", "labels": {}},
            "spec": {"cidr": "10.0.0.0/16", "natOutgoing": False, "disabled": False},
        }
    )
    encoded = encode_resource(pool)
    assert encoded["metadata"] == {"name": "p"}
    assert "natOutgoing" not in encoded["spec"]
    assert "disabled" not in encoded["spec"]


def test_pointer_fields_keep_false_and_zero() -> None:
    bgp, policy = load_documents(
        """
apiVersion: projectcalico.org/v3
kind: BGPConfiguration
metadata: {name: default}
spec: {nodeToNodeMeshEnabled: false}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: echo-reply}
spec:
  ingress:
  - action: Allow
    protocol: ICMP
    icmp: {type: 0, code: 0}
"""
    )
    assert encode_resource(bgp)["spec"] == {"nodeToNodeMeshEnabled": False}
    assert encode_resource(policy)["spec"]["ingress"][0]["icmp"] == {"type": 0, "code": 0}


def test_always_printed_fields_are_printed() -> None:
    (config,) = load_documents(
        "apiVersion: projectcalico.org/v3\nkind: KubeControllersConfiguration\n"
        "metadata: {name: default}\nspec: {}\n"
    )
    assert encode_resource(config)["spec"] == {"controllers": {}}
    (ipam,) = load_documents(
        "apiVersion: projectcalico.org/v3\nkind: IPAMConfiguration\nmetadata: {name: default}\n"
    )
    assert encode_resource(ipam)["spec"] == {"strictAffinity": False, "autoAllocateBlocks": True}


def test_felix_configuration_keeps_unknown_fields() -> None:
    (felix,) = load_documents(
        "apiVersion: projectcalico.org/v3\nkind: FelixConfiguration\nmetadata: {name: default}\n"
        "spec: {bpfLogLevel: Debug, wireguardListeningPort: 51820, reportingInterval: 2m}\n"
    )
    spec = encode_resource(felix)["spec"]
    assert spec == {
        "bpfLogLevel": "Debug",
        "wireguardListeningPort": 51820,
        "reportingInterval": "2m0s",
    }


def test_multi_document_skips_empty_documents_and_expands_lists() -> None:
    text = """
---
# only a comment
---
apiVersion: projectcalico.org/v3
kind: List
items:
- apiVersion: projectcalico.org/v3
  kind: IPPool
  metadata: {name: a}
  spec: {cidr: 10.1.0.0/16}
- apiVersion: projectcalico.org/v3
  kind: Tier
  metadata: {name: t}
---
apiVersion: projectcalico.org/v3
kind: IPPoolList
items:
- metadata: {name: b}
  spec: {cidr: 10.2.0.0/16}
---
"""
    resources = load_documents(text)
    assert [(r.kind, r.name) for r in resources] == [
        ("IPPool", "a"),
        ("Tier", "t"),
        ("IPPool", "b"),
    ]


def test_json_input_single_object_and_array() -> None:
    pool = {
        "apiVersion": "projectcalico.org/v3",
        "kind": "IPPool",
        "metadata": {"name": "j"},
        "spec": {"cidr": "fd00::/64"},
    }
    (single,) = load_documents(json.dumps(pool))
    assert isinstance(single, IPPool)
    assert single.spec.block_size == 122
    both = load_documents(json.dumps([pool, {**pool, "metadata": {"name": "k"}}]))
    assert [r.name for r in both] == ["j", "k"]


def test_dump_shapes_match_calicoctl() -> None:
    pools = load_documents(_example("pools.yaml"))
    single = yaml.safe_load(dump_yaml(pools[:1]))
    assert single["kind"] == "IPPool"
    several = yaml.safe_load(dump_yaml(pools))
    assert several["kind"] == "List"
    assert several["apiVersion"] == "projectcalico.org/v3"
    assert [item["metadata"]["name"] for item in several["items"]] == [
        "default-ipv4-ippool",
        "reserved",
    ]
    assert json.loads(dump_json(pools, list_kind="IPPoolList"))["kind"] == "IPPoolList"
    # calicoctl's YAML has its keys sorted at every level.
    text = dump_yaml(pools[:1])
    assert text.index("allowedUses") < text.index("blockSize") < text.index("cidr")


def test_problems_of_all_documents_are_reported_together() -> None:
    text = """
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: ok}
spec: {cidr: 10.0.0.0/16}
---
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: Foo}
spec: {cidr: 10.0.0.1/16}
---
apiVersion: projectcalico.org/v3
kind: Nonsense
metadata: {name: x}
---
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: pool-a}
spec: {cidr: 10.1.0.0/16, blockSize: 33}
"""
    with pytest.raises(ValidationFailure) as caught:
        load_documents(text, "file.yaml")
    lines = str(caught.value).splitlines()
    assert lines == [
        "file.yaml document 2 (IPPool 'Foo'): metadata.name: 'Foo' is not a valid name: use "
        "lower case letters, digits, '-' and '.', starting and ending with a letter or digit",
        "file.yaml document 2 (IPPool 'Foo'): spec.cidr: 10.0.0.1/16 is not a network address: "
        "use 10.0.0.0/16",
        "file.yaml document 3 (Nonsense 'x'): kind: unknown kind 'Nonsense': valid kinds are "
        + ", ".join(sorted(KINDS)),
        "file.yaml document 4 (IPPool 'pool-a'): spec.blockSize: blockSize 33 is out of range "
        "for an IPv4 pool (20-32)",
    ]
    assert [p.field for p in caught.value.problems] == [
        "metadata.name",
        "spec.cidr",
        "kind",
        "spec.blockSize",
    ]


def test_shape_errors_name_the_field() -> None:
    with pytest.raises(ValidationFailure) as caught:
        load_documents(
            "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: p}\n"
            "spec: {cidr: 10.0.0.0/16, ipipMode: Sometimes, colour: blue}\n"
        )
    fields = {p.field: p.message for p in caught.value.problems}
    assert "Never" in fields["spec.ipipMode"]
    assert fields["spec.colour"] == "unknown field"


def test_missing_api_version_and_bad_yaml() -> None:
    with pytest.raises(ValidationFailure, match="apiVersion: is required"):
        load_documents("kind: IPPool\nmetadata: {name: p}\nspec: {cidr: 10.0.0.0/16}\n")
    with pytest.raises(ValidationFailure, match="cannot parse"):
        load_documents("kind: [unclosed\n", "broken.yaml")


def test_timestamps_stay_strings() -> None:
    (pool,) = load_documents(
        "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: p\n"
        "  creationTimestamp: 2024-05-01T10:00:00Z\nspec: {cidr: 10.0.0.0/16}\n"
    )
    assert pool.metadata.creation_timestamp == "2024-05-01T10:00:00Z"
    assert yaml.safe_load(dump_yaml([pool]))["metadata"]["creationTimestamp"] == (
        "2024-05-01T10:00:00Z"
    )


def test_etcd_value_is_compact_and_never_stores_resource_version() -> None:
    (pool,) = load_documents(_example("pools.yaml"))[:1]
    pool = pool.with_metadata(resource_version="42")
    raw = encode_value(pool)
    assert b" " not in raw
    assert b"resourceVersion" not in raw
    assert json.loads(raw)["spec"]["cidr"] == "192.168.0.0/16"
    assert encode_resource(pool)["metadata"]["resourceVersion"] == "42"


def test_decode_value_trusts_semantics_but_checks_shape() -> None:
    # An unmasked CIDR is a semantic problem: the trusted path does not look for it ...
    raw = b'{"apiVersion":"projectcalico.org/v3","kind":"IPPool","metadata":{"name":"p"},"spec":{"cidr":"10.0.0.1/16"}}'
    assert decode_value(raw, kind="ippool").spec.cidr == "10.0.0.1/16"
    # ... but a value of the wrong shape is refused, naming the field.
    with pytest.raises(ValidationFailure, match=r"spec\.blockSize"):
        decode_value(raw.replace(b'"cidr"', b'"blockSize":"big","cidr"'), kind="IPPool")


def test_workload_endpoint_value_decodes_to_model() -> None:
    wep = WorkloadEndpoint(
        metadata=ObjectMeta(name="n-k8s-p-eth0", namespace="ns"),
        spec={  # type: ignore[arg-type]
            "node": "n",
            "orchestrator": "k8s",
            "pod": "p",
            "endpoint": "eth0",
            "interfaceName": "cali0123456789a",
            "ipNetworks": ["10.0.0.1/32"],
        },
    )
    decoded = decode_value(encode_value(wep), kind=WorkloadEndpoint)
    assert decoded == wep
    assert decoded.spec.ip_networks == ["10.0.0.1/32"]  # type: ignore[attr-defined]


def test_a_bad_union_value_gets_one_message() -> None:
    with pytest.raises(ValidationFailure) as caught:
        load_documents(
            "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: p}\n"
            "spec:\n  ingress:\n  - action: Allow\n    protocol: GRE\n"
            "    destination: {ports: [0]}\n"
        )
    assert [(p.field, p.message) for p in caught.value.problems] == [
        (
            "spec.ingress[0].protocol",
            "protocol 'GRE' is not one of TCP, UDP, ICMP, ICMPv6, SCTP, UDPLite or a number 1-255",
        ),
        ("spec.ingress[0].destination.ports[0]", "port 0 is out of range 1-65535"),
    ]


def test_decode_values_decodes_a_batch_and_restores_the_collector() -> None:
    import gc

    resources = load_documents(_example("all-kinds.yaml"))
    pools = [r for r in resources if r.kind == "IPPool"]
    assert gc.isenabled()
    assert decode_values([encode_value(p) for p in pools], kind="IPPool") == pools
    assert gc.isenabled()
    with pytest.raises(ValidationFailure):
        decode_values([b"{}"], kind="IPPool")
    assert gc.isenabled()


def test_empty_label_values_are_kept_but_empty_fields_are_not() -> None:
    (policy,) = load_documents(
        "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\n"
        "metadata: {name: p, labels: {flag: ''}, annotations: {}}\n"
        "spec: {ingress: [], selector: '', egress: [{action: Allow, source: {}}]}\n"
    )
    encoded = encode_resource(policy)
    assert encoded["metadata"] == {"name": "p", "labels": {"flag": ""}}
    assert encoded["spec"] == {
        "egress": [{"action": "Allow"}],
        "tier": "default",
        "types": ["Egress"],
    }
    # What was written differently from Calico's output decodes to what a later read gives.
    assert decode_resource(encoded) == policy
    assert decode_value(encode_value(policy), kind="GlobalNetworkPolicy") == policy


def test_felix_configuration_prints_bpf_log_level_and_calicos_names() -> None:
    (felix,) = load_documents(
        "apiVersion: projectcalico.org/v3\nkind: FelixConfiguration\nmetadata: {name: default}\n"
        "spec: {externalNodesList: [192.0.2.0/24], nftablesMode: Enabled, ipipMTU: 1480}\n"
    )
    assert encode_resource(felix)["spec"] == {
        "ipipMTU": 1480,
        "externalNodesList": ["192.0.2.0/24"],
        "nftablesMode": "Enabled",
        "bpfLogLevel": "",  # Calico's field has no omitempty
    }
