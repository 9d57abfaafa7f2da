"""The churn's model of Kubernetes NetworkPolicy verdicts (``kube_churn.World``), which the
Kubernetes fault drills check packets against: a pod no policy selects accepts everything; a
selected pod accepts only from namespaces some selecting policy allows; and the manifests say
what the model assumes."""

from __future__ import annotations

import yaml

from pycalico.testing.kube_churn import Pod, Policy, World, policy_manifest


def world() -> World:
    return World(
        namespaces={"red": {"access": "yes"}, "blue": {"access": "no"}},
        pods={
            "s1": Pod("red", "node1", {"role": "steady"}),
            "s2": Pod("blue", "node2", {"role": "steady"}),
            "c1": Pod("red", "node2", {"role": "churn"}),
            "c2": Pod("blue", "node3", {"role": "idle"}),
        },
    )


def test_unselected_pods_accept_everything() -> None:
    model = world()
    model.policies[("red", "churn-0")] = Policy("churn", None)
    assert all(verdict for (_, target), verdict in model.expected().items() if target != "c1")
    assert not any(verdict for (_, target), verdict in model.expected().items() if target == "c1")


def test_selected_pods_accept_only_from_allowed_namespaces() -> None:
    model = world()
    model.policies[("red", "churn-0")] = Policy("churn", None)
    model.policies[("red", "churn-1")] = Policy("churn", ("access", "yes"))
    assert model.reachable("s1", "c1") and not model.reachable("s2", "c1")
    model.namespaces["blue"]["access"] = "yes"
    assert model.reachable("s2", "c1")
    model.pods["c1"] = Pod("red", "node2", {"role": "idle"})  # relabelled out of the selector
    model.namespaces["blue"]["access"] = "no"
    assert model.reachable("s2", "c1")
    # A policy in another namespace selects nothing here.
    model.policies[("blue", "churn-0")] = Policy("idle", None)
    assert not model.reachable("s1", "c2") and model.reachable("s1", "c1")
    assert model.churn_pods() == ["c1", "c2"]


def test_manifests_say_what_the_model_assumes() -> None:
    allow = yaml.safe_load(policy_manifest("red", "churn-1", Policy("churn", ("access", "yes"))))
    assert allow["metadata"] == {"name": "churn-1", "namespace": "red"}
    assert allow["spec"] == {
        "podSelector": {"matchLabels": {"role": "churn"}},
        "policyTypes": ["Ingress"],
        "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"access": "yes"}}}]}],
    }
    deny = yaml.safe_load(policy_manifest("blue", "churn-0", Policy("churn", None)))
    assert deny["spec"]["ingress"] == [] and deny["spec"]["policyTypes"] == ["Ingress"]
