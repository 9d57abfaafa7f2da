"""Fuzzing the manifest reader and resource validator (what ``calicoctl apply`` and every
component's decoder run on untrusted input).

Properties, over arbitrary text and over valid manifests with one field mutated:

* the only failure is ``ValidationFailure``: no other exception escapes, whatever the input;
* a rejection names the field: when one field of a valid resource is changed, every problem
  reported is about that field, one of its parents or one of its children;
* what is accepted is stable: a decoded resource encodes and decodes to itself.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import yaml
from hypothesis import example, given
from hypothesis import strategies as st

from pycalico.model.codec import decode_resource, encode_resource, load_documents
from pycalico.model.kinds import KINDS
from pycalico.model.validation import ValidationFailure

from .budgets import budget

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "all-kinds.yaml"
VALID = [doc for doc in yaml.safe_load_all(EXAMPLES.read_text()) if doc]

json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from(["", "0", "-1", "1.2.3.4/33", "::/129", "all()", "Allow", "TCP", "99999"]),
)
json_value = st.recursive(
    json_leaf,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)


Path_ = tuple[str | int, ...]


def _leaf_paths(value: Any, path: Path_) -> list[Path_]:
    """The paths (as steps) of every value inside ``value``, parents first."""
    paths = [path]
    if isinstance(value, dict):
        for key, child in value.items():
            paths.extend(_leaf_paths(child, (*path, key)))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            paths.extend(_leaf_paths(child, (*path, index)))
    return paths


def _wire(path: Path_) -> str:
    """``("spec", "ingress", 0, "action")`` as a problem names it: ``spec.ingress[0].action``."""
    text = ""
    for step in path:
        text += f"[{step}]" if isinstance(step, int) else (f".{step}" if text else step)
    return text


MUTABLE = [
    (i, p) for i, doc in enumerate(VALID) for p in _leaf_paths(doc.get("spec", {}), ("spec",))[1:]
]

# Fields checked together, so a change to one may be reported on another: a WorkloadEndpoint's
# name is made of its node, orchestrator, workload (the pod, for Kubernetes) and endpoint.
# A policy's dotted name starts with its tier.  The orchestrator is also copied into the
# endpoint's ``projectcalico.org/orchestrator`` label, checked as a label value.
COUPLED = [
    {"metadata.labels", "spec.orchestrator"},
    {
        "metadata.name",
        "spec.node",
        "spec.orchestrator",
        "spec.workload",
        "spec.pod",
        "spec.endpoint",
    },
    {"metadata.name", "spec.tier"},
]


def _set(document: dict[str, Any], path: Path_, value: Any) -> None:
    target: Any = document
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value


def _within(field: str, path: str) -> bool:
    return field == path or field.startswith((path + ".", path + "["))


def _related(problem_field: str, mutated: Path_) -> bool:
    """A problem is about the mutated field if either names a parent of the other, or if it is
    about a sibling inside the same rule or sub-object (rules check fields together: ports need
    a protocol).  For a field directly under ``spec`` only the first two count."""
    wire = _wire(mutated)
    if any(problem_field in group and wire in group for group in COUPLED):
        return True
    if _within(problem_field, wire) or _within(wire, problem_field):
        return True
    return len(mutated) > 2 and _within(problem_field, _wire(mutated[:-1]))


def _spec_fields(kind: str) -> set[str]:
    """The spec's wire names, lower-cased: Go's decoder matches keys case-insensitively, so
    ``INGRESS`` is ``ingress`` (reported, if at all, as a bad value, not an unknown field)."""
    spec_model = KINDS[kind].model.model_fields["spec"].annotation
    fields = getattr(spec_model, "model_fields", {})
    return {(info.alias or name).lower() for name, info in fields.items()}


def _open_spec(kind: str) -> bool:
    """Kinds whose spec keeps fields it does not model (FelixConfiguration's many knobs), so a
    Calico user's manifest round-trips; there an unknown field is kept, not refused."""
    spec_model = KINDS[kind].model.model_fields["spec"].annotation
    return bool(getattr(spec_model, "model_config", {}).get("extra") == "allow")


@budget(300)
@given(st.text(max_size=400))
@example("kind: [")
@example('{"kind": "IPPool", "kind": "IPPool"}')
@example("---\n- 1\n---\n")
def test_any_text_is_read_or_refused_cleanly(text: str) -> None:
    try:
        load_documents(text)
    except ValidationFailure as failure:
        assert failure.problems and all(str(problem) for problem in failure.problems)


@budget(400)
@given(st.sampled_from(MUTABLE), json_value)
@example((1, ("spec", "cidr")), "10.0.0.0/33")
@example((1, ("spec", "blockSize")), True)
@example((20, ("spec", "orchestrator")), None)
@example((13, ("spec", "tier")), "0")
@example((20, ("spec", "pod")), "0")
@example((20, ("spec", "orchestrator")), ":")
@example((11, ("spec", "exportV4", 1, "cidr")), "0")
@example((7, ("spec", "orchRefs", 0, "orchestrator")), "")  # found by `make faults`
def test_a_mutated_field_is_accepted_or_named(target: tuple[int, Path_], value: Any) -> None:
    index, path = target
    document = copy.deepcopy(VALID[index])
    _set(document, path, value)
    try:
        resource = decode_resource(document)
    except ValidationFailure as failure:
        fields = [problem.field for problem in failure.problems]
        assert fields, failure
        unrelated = [f for f in fields if f and not _related(f, path)]
        assert not unrelated, f"{_wire(path)} changed, but {unrelated} reported: {failure}"
        return
    again = decode_resource(encode_resource(resource))
    assert encode_resource(again) == encode_resource(resource)


@budget(200)
@given(st.sampled_from(range(len(VALID))), st.text(min_size=1, max_size=20), json_value)
@example(13, "INGRESS", None)
def test_an_unknown_field_is_refused_by_name(index: int, name: str, value: Any) -> None:
    document = copy.deepcopy(VALID[index])
    spec = document.setdefault("spec", {})
    if _open_spec(document["kind"]) or name.lower() in _spec_fields(document["kind"]):
        return
    spec[name] = value
    try:
        # The manifest path (calicoctl's strict decoding); stored values are read leniently,
        # as Calico's json.Unmarshal does, so that a newer writer's fields do not break readers.
        load_documents(json.dumps(document))
    except ValidationFailure as failure:
        assert any(name in str(problem) for problem in failure.problems), failure
    else:
        raise AssertionError(f"unknown field spec.{name!r} accepted in {document['kind']}")
