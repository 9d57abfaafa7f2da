"""``calicoctl patch``'s pure parts: parsing, RFC 7386 / RFC 6902 application, and the checks
on the patched resource (``pycalico.ctl.patching`` and ``patch.patched_resource``)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from pycalico.ctl.patch import PatchTarget, patched_resource, resolve_target
from pycalico.ctl.patching import (
    JSON,
    MERGE,
    STRATEGIC,
    PatchError,
    apply_patch,
    identity_changes,
    json_patch,
    merge_patch,
    parse_patch,
)
from pycalico.ctl.results import CommandError
from pycalico.model.codec import decode_resource, encode_resource
from pycalico.model.kinds import lookup_kind

# RFC 7386 appendix A: (target, patch, result).
RFC7386_EXAMPLES: list[tuple[Any, Any, Any]] = [
    ({"a": "b"}, {"a": "c"}, {"a": "c"}),
    ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
    ({"a": "b"}, {"a": None}, {}),
    ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
    ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
    ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
    ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
    ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
    (["a", "b"], ["c", "d"], ["c", "d"]),
    ({"a": "b"}, ["c"], ["c"]),
    ({"a": "foo"}, None, None),
    ({"a": "foo"}, "bar", "bar"),
    ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
    ([1, 2], {"a": "b", "c": None}, {"a": "b"}),
    ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
]


@pytest.mark.parametrize(("target", "patch", "result"), RFC7386_EXAMPLES)
def test_merge_patch_follows_rfc7386(target: Any, patch: Any, result: Any) -> None:
    before = copy.deepcopy(target)
    assert merge_patch(target, patch) == result
    assert target == before  # the input is never modified


def test_json_patch_add_replace_remove_move_copy_test() -> None:
    document = {"spec": {"a": 1, "list": [1, 2]}}
    patched = json_patch(
        document,
        [
            {"op": "add", "path": "/spec/b", "value": {"x": True}},
            {"op": "replace", "path": "/spec/a", "value": 2},
            {"op": "remove", "path": "/spec/list/0"},
            {"op": "add", "path": "/spec/list/-", "value": 3},
            {"op": "copy", "from": "/spec/a", "path": "/spec/c"},
            {"op": "move", "from": "/spec/c", "path": "/spec/d"},
            {"op": "test", "path": "/spec/d", "value": 2},
        ],
    )
    assert patched == {"spec": {"a": 2, "b": {"x": True}, "list": [2, 3], "d": 2}}
    assert document == {"spec": {"a": 1, "list": [1, 2]}}


@pytest.mark.parametrize(
    ("operations", "expected"),
    [
        (
            [{"op": "replace", "path": "/spec/a", "value": 1}, {"op": "remove", "path": "/x"}],
            "JSON patch operation 2 (remove /x): can't remove a non-existent object 'x'",
        ),
        (
            [{"op": "add", "path": "/nope/deeper", "value": 1}],
            "JSON patch operation 1 (add /nope/deeper): member 'nope' not found",
        ),
        (
            [{"op": "test", "path": "/spec/a", "value": 2}],
            "JSON patch operation 1 (test /spec/a): test failed",
        ),
        ([{"op": "frob", "path": "/spec"}], "Unknown operation 'frob'"),
        ([{"path": "/spec"}], "does not contain 'op'"),
        (["replace"], "JSON patch operation 1: "),
    ],
)
def test_json_patch_failures_name_the_operation(operations: Any, expected: str) -> None:
    document = {"spec": {"a": 1}}
    with pytest.raises(PatchError) as raised:
        json_patch(document, operations)
    assert expected in str(raised.value)
    assert "not found in" not in str(raised.value)  # never the whole document
    assert document == {"spec": {"a": 1}}


def test_parse_patch_accepts_json_and_yaml() -> None:
    assert parse_patch('{"spec": {"a": 1}}', STRATEGIC) == {"spec": {"a": 1}}
    assert parse_patch("spec:\n  a: 1\n  when: 2024-01-01\n", MERGE) == {
        "spec": {"a": 1, "when": "2024-01-01"}
    }
    assert parse_patch('- {op: remove, path: "/spec/a"}', JSON) == [
        {"op": "remove", "path": "/spec/a"}
    ]


@pytest.mark.parametrize(
    ("text", "patch_type", "expected"),
    [
        ("", STRATEGIC, "the patch is empty"),
        ('{"spec":', STRATEGIC, "cannot parse the patch as JSON: Expecting value"),
        ("spec: [a", MERGE, "cannot parse the patch as JSON or YAML"),
        ('[{"op": "remove", "path": "/a"}]', MERGE, "must be an object, got a list"),
        ('{"spec": {}}', JSON, "must be a list of operations, got an object"),
        ('"text"', STRATEGIC, "must be an object, got a string"),
        ('{"spec": {"$patch": "replace"}}', STRATEGIC, "'$patch' at spec is not supported"),
        ('{"spec": {}}', "apply", "--type must be one of strategic, json, merge"),
    ],
)
def test_parse_patch_refusals(text: str, patch_type: str, expected: str) -> None:
    with pytest.raises(PatchError) as raised:
        parse_patch(text, patch_type)
    assert expected in str(raised.value)


def test_merge_directive_keys_are_plain_fields_for_merge_type() -> None:
    # Only the strategic type gives "$" keys a meaning; for RFC 7386 they are field names,
    # and the model refuses them later as unknown fields.
    assert parse_patch('{"spec": {"$patch": "x"}}', MERGE) == {"spec": {"$patch": "x"}}


def test_apply_patch_must_leave_an_object() -> None:
    with pytest.raises(PatchError, match="turns the resource into a number"):
        apply_patch({"kind": "Node"}, [{"op": "replace", "path": "", "value": 1}], JSON)


def test_identity_changes() -> None:
    before = {"apiVersion": "v", "kind": "Node", "metadata": {"name": "a", "labels": {"x": "1"}}}
    assert identity_changes(before, {**before, "metadata": {"name": "a"}}) == []
    assert identity_changes(before, {**before, "kind": "IPPool"}) == [
        "kind: cannot be changed by a patch ('Node' -> 'IPPool')"
    ]
    assert identity_changes(before, {"apiVersion": "v", "kind": "Node", "metadata": {}}) == [
        "metadata.name: cannot be removed by a patch (it is 'a')"
    ]


# --- the patched resource ---------------------------------------------------------------------


def _node(version: str = "7") -> Any:
    resource = decode_resource(
        {
            "apiVersion": "projectcalico.org/v3",
            "kind": "Node",
            "metadata": {
                "name": "node1",
                "uid": "u-1",
                "creationTimestamp": "2026-01-01T00:00:00Z",
            },
            "spec": {"bgp": {"ipv4Address": "10.0.0.1/24"}},
        }
    )
    return resource.with_metadata(resource_version=version)


NODE = PatchTarget(lookup_kind("node"), "node1", None)


def test_patched_resource_merges_and_keeps_the_read_version() -> None:
    patched = patched_resource(
        _node(), {"spec": {"bgp": {"routeReflectorClusterID": "244.0.0.1"}}}, STRATEGIC, NODE
    )
    wire = encode_resource(patched)
    assert wire["spec"]["bgp"] == {
        "ipv4Address": "10.0.0.1/24",
        "routeReflectorClusterID": "244.0.0.1",
    }
    assert wire["metadata"]["resourceVersion"] == "7"
    assert wire["metadata"]["uid"] == "u-1"


def test_patched_resource_invalid_result_names_the_field() -> None:
    with pytest.raises(CommandError) as raised:
        patched_resource(_node(), {"spec": {"bgp": {"ipv4Address": "300.0.0.1/24"}}}, MERGE, NODE)
    text = str(raised.value)
    assert text.startswith("Hit error: the patched Node(node1) is invalid, nothing was written: ")
    assert "spec.bgp.ipv4Address" in text


def test_patched_resource_unknown_field_is_named() -> None:
    with pytest.raises(CommandError, match=r"spec\.bgpx: "):
        patched_resource(_node(), {"spec": {"bgpx": {}}}, STRATEGIC, NODE)


def test_patched_resource_refuses_identity_changes() -> None:
    with pytest.raises(CommandError, match=r"metadata\.name: cannot be changed by a patch"):
        patched_resource(_node(), {"metadata": {"name": "node2"}}, MERGE, NODE)
    with pytest.raises(CommandError, match="kind: cannot be changed"):
        patched_resource(_node(), [{"op": "replace", "path": "/kind", "value": "X"}], JSON, NODE)


def test_patched_resource_refuses_another_resource_version() -> None:
    with pytest.raises(CommandError, match="update conflict: Node\\(node1\\)"):
        patched_resource(_node("7"), {"metadata": {"resourceVersion": "5"}}, MERGE, NODE)
    # The version read, given again, is fine; so is removing it (the read one guards the write).
    for patch in ({"metadata": {"resourceVersion": "7"}}, {"metadata": {"resourceVersion": None}}):
        assert patched_resource(_node("7"), patch, MERGE, NODE).metadata.resource_version == "7"


def test_resolve_target_namespaces_and_kinds() -> None:
    policy = resolve_target("networkpolicy", "np", None)
    assert (policy.info.kind, policy.namespace) == ("NetworkPolicy", "default")
    assert resolve_target("NetworkPolicies", "np", "prod").identity == "NetworkPolicy(prod/np)"
    with pytest.raises(CommandError, match=r"^Hit error: Node is not namespaced$"):
        resolve_target("nodes", "n", "prod")
    with pytest.raises(CommandError, match=r"^resource type 'frob' is not supported$"):
        resolve_target("frob", "x", None)
