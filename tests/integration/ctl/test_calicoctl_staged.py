"""The staged policy kinds through the real ``calicoctl`` against a real etcd: apply, get (by
Calico's aliases, ps/wide/yaml), delete, and a refused ``stagedAction: Delete`` that writes nothing.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from pycalico.datastore.etcd import EtcdKVStore
from pycalico.datastore.paths import resource_key
from pycalico.testing.calicoctl import Calicoctl
from pycalico.testing.etcd_server import EtcdServer

SGNP = """apiVersion: projectcalico.org/v3
kind: StagedGlobalNetworkPolicy
metadata: {name: stage-deny-telnet}
spec:
  order: 20
  selector: all()
  ingress: [{action: Deny, protocol: TCP, destination: {ports: [23]}}]
"""
SNP = """apiVersion: projectcalico.org/v3
kind: StagedNetworkPolicy
metadata: {name: stage-web, namespace: shop}
spec:
  stagedAction: Learn
  selector: app == 'web'
  egress: [{action: Allow}]
"""
SKNP = """apiVersion: projectcalico.org/v3
kind: StagedKubernetesNetworkPolicy
metadata: {name: stage-db, namespace: shop}
spec:
  podSelector: {matchLabels: {app: db}}
  ingress: [{from: [{podSelector: {}}], ports: [{protocol: TCP, port: 5432}]}]
"""

# (manifest, alias, plural, namespace, wide headings, expected spec as stored)
CASES = {
    "StagedGlobalNetworkPolicy": (
        SGNP,
        "sgnp",
        "stagedglobalnetworkpolicies",
        None,
        ["NAME", "TIER", "ORDER", "SELECTOR"],
        {
            "tier": "default",
            "order": 20,
            "ingress": [{"action": "Deny", "protocol": "TCP", "destination": {"ports": [23]}}],
            "selector": "all()",
            "types": ["Ingress"],
            "stagedAction": "Set",
        },
    ),
    "StagedNetworkPolicy": (
        SNP,
        "spol",
        "stagednetworkpolicies",
        "shop",
        ["NAME", "TIER", "ORDER", "SELECTOR"],
        {
            "tier": "default",
            "egress": [{"action": "Allow"}],
            "selector": "app == 'web'",
            "types": ["Egress"],
            "stagedAction": "Learn",
        },
    ),
    "StagedKubernetesNetworkPolicy": (
        SKNP,
        "sknp",
        "stagedkubernetesnetworkpolicies",
        "shop",
        ["NAME", "PODSELECTOR"],
        {
            "stagedAction": "Set",
            "podSelector": {"matchLabels": {"app": "db"}},
            "ingress": [
                {"ports": [{"protocol": "TCP", "port": 5432}], "from": [{"podSelector": {}}]}
            ],
        },
    ),
}


@pytest.fixture
def ctl(kv: EtcdKVStore, etcd: EtcdServer, tmp_path: Path) -> Calicoctl:
    return Calicoctl(etcd.endpoint, tmp_path)


@pytest.mark.parametrize("kind", sorted(CASES))
async def test_apply_get_delete(kind: str, ctl: Calicoctl, kv: EtcdKVStore) -> None:
    text, alias, plural, namespace, wide, spec = CASES[kind]
    name = yaml.safe_load(text)["metadata"]["name"]
    scope = ["-n", namespace] if namespace else []

    assert ctl.ok("apply", "-f", ctl.manifest(text, "m.yaml")).startswith("Successfully applied 1")
    key = resource_key(plural, name, namespace)
    stored = await kv.get(key)
    assert stored is not None, f"nothing at {key}"
    value = json.loads(stored.value)
    assert value["kind"] == kind and value["spec"] == spec

    # Asking for a namespace (-n) prepends calicoctl's NAMESPACE column.
    prefix = ["NAMESPACE"] if namespace else []
    ps = ctl.ok("get", alias, *scope).splitlines()
    assert ps[0].split()[: len(prefix) + 1] == [*prefix, "NAME"]
    assert ps[1].split()[len(prefix)] == name
    assert ctl.ok("get", alias, *scope, "-o", "wide").splitlines()[0].split() == [*prefix, *wide]
    got = yaml.safe_load(ctl.ok("get", alias, name, *scope, "-o", "yaml"))
    assert got["kind"] == kind and got["spec"] == spec
    assert got["metadata"]["resourceVersion"] == str(stored.revision)

    assert ctl.ok("delete", alias, name, *scope).startswith("Successfully deleted 1")
    assert await kv.get(key) is None


async def test_a_delete_with_other_fields_is_refused_and_writes_nothing(
    ctl: Calicoctl, kv: EtcdKVStore
) -> None:
    text = SGNP.replace("spec:\n", "spec:\n  stagedAction: Delete\n")
    done = ctl.run("apply", "-f", ctl.manifest(text, "bad.yaml"))
    assert done.returncode == 1
    output = done.stderr + done.stdout
    for field in ("spec.order", "spec.selector", "spec.ingress"):
        assert f"{field}: must not be set when stagedAction is Delete" in output, output
    assert (await kv.list("/calico/resources/")).items == []
