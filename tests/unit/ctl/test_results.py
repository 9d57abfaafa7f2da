"""calicoctl's command messages and the whole-input checks made before any write."""

from __future__ import annotations

import pytest

from pycalico.ctl.preflight import write_problems
from pycalico.ctl.results import (
    APPLY,
    CREATE,
    DELETE,
    REPLACE,
    CommandResults,
    Report,
    delete_report,
    describe_error,
    report,
)
from pycalico.datastore.api import KeyAlreadyExists, KeyNotFound, RevisionConflict
from pycalico.model.codec import load_documents
from pycalico.model.meta import Resource


def pools(*specs: tuple[str, str]) -> list[Resource]:
    text = "\n---\n".join(
        f"apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {{name: {name}}}\n"
        f"spec: {{cidr: {cidr}}}"
        for name, cidr in specs
    )
    return load_documents(text, "test")


def test_success_messages() -> None:
    one_kind = CommandResults(num_resources=3, single_kind="IPPool", handled=3)
    assert report(APPLY, one_kind) == Report(stdout="Successfully applied 3 'IPPool' resource(s)\n")
    mixed = CommandResults(num_resources=2, handled=2)
    assert report(CREATE, mixed).stdout == "Successfully created 2 resource(s)\n"
    assert report(REPLACE, mixed).stdout == "Successfully replaced 2 resource(s)\n"


def test_failure_messages() -> None:
    one = CommandResults(num_resources=1, single_kind="BGPPeer", errors=["boom"])
    assert report(CREATE, one) == Report(
        stderr="Failed to create 'BGPPeer' resource: [boom]\n", failed=True
    )
    several = CommandResults(num_resources=2, single_kind="BGPPeer", errors=["a", "b"])
    assert report(APPLY, several).stderr == "Failed to apply any 'BGPPeer' resources: [a b]\n"
    mixed = CommandResults(num_resources=2, errors=["a", "b"])
    assert report(APPLY, mixed).stderr == "Failed to apply any resources: [a b]\n"


def test_partial_success() -> None:
    partial = CommandResults(num_resources=3, handled=2, errors=["resource already exists: X"])
    result = report(APPLY, partial)
    assert result.failed
    assert result.stdout == "Partial success: applied the first 2 out of 3 resources:\n"
    assert result.stderr == "Hit error(s): [resource already exists: X]\n"
    assert report(CREATE, partial).stderr == "Hit error: [resource already exists: X]\n"


def test_no_resources() -> None:
    assert report(APPLY, CommandResults()) == Report(stdout="No resources specified\n")


def test_delete_report() -> None:
    results = CommandResults(num_resources=3, single_kind="IPPool", handled=2, errors=["gone"])
    result = delete_report(results)
    assert result.stdout == "Successfully deleted 2 'IPPool' resource(s)\n"
    assert result.stderr == "Failed to delete 'IPPool' resource: gone\n"
    assert result.failed
    assert not delete_report(CommandResults(num_resources=1, handled=1)).failed


def test_datastore_errors_in_calicos_words() -> None:
    assert (
        describe_error(KeyNotFound("/k"), "IPPool", "blah", None)
        == "resource does not exist: IPPool(blah) with error: <nil>"
    )
    assert (
        describe_error(KeyAlreadyExists("/k"), "NetworkPolicy", "p", "shop")
        == "resource already exists: NetworkPolicy(shop/p)"
    )
    assert (
        describe_error(RevisionConflict("/k", 3), "Tier", "t", None) == "update conflict: Tier(t)"
    )


# --- preflight ----------------------------------------------------------------------------------


def test_overlapping_pools_in_one_input_are_refused() -> None:
    problems = write_problems(APPLY, pools(("a", "10.0.0.0/16"), ("b", "10.0.1.0/24")))
    assert [(p.field, p.message) for p in problems] == [
        ("spec.cidr", "IPPool(b) CIDR overlaps with IPPool(a) CIDR 10.0.0.0/16")
    ]


def test_pool_overlapping_a_stored_pool_is_refused() -> None:
    stored = pools(("old", "10.0.0.0/8"))
    problems = write_problems(CREATE, pools(("new", "10.1.0.0/16")), stored)
    assert "IPPool(new) CIDR overlaps with IPPool(old) CIDR 10.0.0.0/8" in problems[0].message
    # Other families and disjoint ranges are fine.
    assert write_problems(CREATE, pools(("v6", "fd00::/48"), ("x", "11.0.0.0/8")), stored) == []


def test_updating_a_pool_keeps_cidr_and_block_size() -> None:
    stored = pools(("p", "10.0.0.0/16"))
    assert write_problems(APPLY, pools(("p", "10.0.0.0/16")), stored) == []
    (problem,) = write_problems(REPLACE, pools(("p", "10.1.0.0/16")), stored)
    assert problem.field == "spec.cidr" and "cannot be modified" in problem.message


def test_cluster_information_is_refused_like_calico() -> None:
    (info,) = load_documents(
        "apiVersion: projectcalico.org/v3\nkind: ClusterInformation\nmetadata: {name: default}\n",
        "test",
    )
    messages = {
        verb.name: write_problems(verb, [info])[0].message
        for verb in (APPLY, CREATE, REPLACE, DELETE)
    }
    assert messages == {
        "apply": "operation apply is not supported on ClusterInformation: resource is readonly",
        "create": "operation create or apply is not supported on ClusterInformation",
        "replace": "operation apply or replace is not supported on ClusterInformation",
        "delete": "operation delete is not supported on ClusterInformation",
    }


@pytest.mark.parametrize("verb", [APPLY, CREATE, REPLACE])
def test_valid_input_has_no_problems(verb: object) -> None:
    assert write_problems(verb, pools(("a", "10.0.0.0/24"), ("b", "10.0.1.0/24"))) == []  # type: ignore[arg-type]
