"""calico-kube-controllers with exactly Calico's RBAC rules and no more, and with one rule less.

A kube-apiserver of its own (RBAC, with an audit log of every request made by service accounts
of ``kube-system``) and the executable run as a ServiceAccount bound only to the roles of
``examples/kubernetes/calico-kube-controllers-rbac.yaml``: Calico's ClusterRole for the etcd
datastore and pycalico's one addition, the leader-election Lease.  Every controller does its
work, and the audit log shows not one request refused (401/403).  The converse: the same
ClusterRole without ``list namespaces`` makes the namespace controller log an error naming the
verb and the resource (the others carry on), and the ClusterRole without the Lease Role makes
leader election log an error naming ``leases`` -- neither fails silently.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import secrets
import signal
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from pycalico.datastore.api import KeyNotFound
from pycalico.datastore.resources import ResourceStore
from pycalico.ipam.allocator import IPAM
from pycalico.k8s import apiserver
from pycalico.model.endpoints import WorkloadEndpoint, workload_endpoint_name
from pycalico.model.node import KubeControllersConfiguration
from pycalico.testing.etcd_server import EtcdServer
from pycalico.testing.eventually import eventually
from pycalico.testing.ipam import put_pool
from pycalico.testing.kube_controllers import KubeControllersProcess
from pycalico.testing.kube_ipam import assign_pod_address, create_calico_node
from pycalico.testing.kube_server import KubeAPIServer, KubeControlPlane

pytestmark = pytest.mark.root

MANIFEST = (
    Path(__file__).parents[2] / "examples" / "kubernetes" / "calico-kube-controllers-rbac.yaml"
)
PERIOD = {"reconcilerPeriod": "5m"}
SA_PREFIX = "system:serviceaccount:kube-system:"
AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived"],
    "rules": [
        {"level": "Metadata", "userGroups": ["system:serviceaccounts:kube-system"]},
        {"level": "None"},
    ],
}


@pytest.fixture(scope="module")
def audited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[KubeControlPlane, Path]]:
    directory = tmp_path_factory.mktemp("audit")
    policy, log = directory / "policy.yaml", directory / "audit.log"
    policy.write_text(yaml.safe_dump(AUDIT_POLICY))
    args = (f"--audit-policy-file={policy}", f"--audit-log-path={log}")
    with KubeControlPlane(api_extra_args=args) as plane:
        yield plane, log


def audit_events(log: Path, user: str) -> list[dict[str, Any]]:
    """The completed requests of ``user`` (the API server writes one JSON object a line)."""
    events = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    return [e for e in events if e["user"]["username"] == user and "responseStatus" in e]


def refused(events: list[dict[str, Any]]) -> list[str]:
    return [
        f"{e['verb']} {e.get('objectRef', {}).get('resource', e['requestURI'])}: "
        f"{e['responseStatus']['code']}"
        for e in events
        if e["responseStatus"].get("code") in (401, 403)
    ]


def manifest() -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(MANIFEST.read_text()) if doc]


def service_account_kubeconfig(api: KubeAPIServer, account: str, path: Path) -> Path:
    """A kubeconfig with a token of ``kube-system/<account>`` (TokenRequest, one hour)."""
    token = api.kubectl("create", "token", account, "-n", "kube-system").stdout.strip()
    document = apiserver.kubeconfig(api.url, api.ca_file, token)
    document["users"][0]["name"] = document["contexts"][0]["context"]["user"] = account
    return apiserver.write_kubeconfig(path, document)


def environment(kubeconfig: Path, etcd_endpoint: str, **extra: str) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "PYTHONPATH")}
    return {
        **keep,
        "PYTHONUNBUFFERED": "1",
        "DATASTORE_TYPE": "etcdv3",
        "ETCD_ENDPOINTS": etcd_endpoint,
        "KUBECONFIG": str(kubeconfig),
        **extra,
    }


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Callable[..., KubeControllersProcess]]:
    started: list[KubeControllersProcess] = []

    def start(name: str, env: dict[str, str]) -> KubeControllersProcess:
        process = KubeControllersProcess(tmp_path, name, env)
        process.start()
        started.append(process)
        return process

    try:
        yield start
    finally:
        for process in started:
            process.stop(signal.SIGKILL)


@pytest.fixture
async def workspace(
    audited: tuple[KubeControlPlane, Path], tmp_path: Path
) -> AsyncIterator[tuple[KubeAPIServer, str]]:
    """A namespace with a ServiceAccount ``runner`` (no controller-manager makes ``default``),
    removed afterwards with what the test put in it."""
    api = audited[0].apiserver
    namespace = f"rbac-{secrets.token_hex(3)}"
    api.kubectl("create", "namespace", namespace)
    api.kubectl("create", "serviceaccount", "runner", "-n", namespace)
    try:
        yield api, namespace
    finally:
        for kind in ("networkpolicy", "pod"):
            api.kubectl("delete", kind, "--all", "-n", namespace, "--grace-period=0",
                        "--force", check=False)  # fmt: skip
        api.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def apply(api: KubeAPIServer, path: Path, documents: list[dict[str, Any]]) -> None:
    path.write_text(yaml.safe_dump_all(documents))
    api.kubectl("apply", "-f", str(path))


def pod(name: str, namespace: str, node: str, labels: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "nodeName": node,
            "serviceAccountName": "runner",
            "automountServiceAccountToken": False,
            "containers": [{"name": "main", "image": "registry.k8s.io/pause:3.10"}],
        },
    }


def network_policy(name: str, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"podSelector": {"matchLabels": {"app": name}}, "policyTypes": ["Ingress"]},
    }


async def absent(store: ResourceStore, kind: str, name: str) -> None:
    with contextlib.suppress(KeyNotFound):
        await store.get(kind, name)
        raise AssertionError(f"{kind} {name} is still there")


async def test_every_controller_works_with_calicos_rules_and_nothing_is_refused(
    audited: tuple[KubeControlPlane, Path],
    workspace: tuple[KubeAPIServer, str],
    store: ResourceStore,
    etcd: EtcdServer,
    processes: Callable[..., KubeControllersProcess],
    tmp_path: Path,
) -> None:
    api, namespace = workspace
    _, audit_log = audited
    user = f"{SA_PREFIX}calico-kube-controllers"
    api.kubectl("apply", "-f", str(MANIFEST))
    api.wait_allowed(user, "list", "namespaces")
    api.wait_allowed(user, "create", "leases", "-n", "kube-system")
    kubeconfig = service_account_kubeconfig(api, "calico-kube-controllers", tmp_path / "kc.conf")

    tag = secrets.token_hex(3)
    kept, doomed = f"kept-{tag}", f"doomed-{tag}"
    apply(api, tmp_path / "world.yaml", [
        {"apiVersion": "v1", "kind": "Node", "metadata": {"name": kept}},
        {"apiVersion": "v1", "kind": "Node", "metadata": {"name": doomed}},
        pod("web", namespace, kept, {"app": "web"}),
        pod("d1", namespace, doomed, {"app": "d1"}),
    ])  # fmt: skip
    ipam = IPAM(store.kv)
    await put_pool(store.kv, "rbac-pool", "10.69.0.0/16", block_size=26)
    for name in (kept, doomed):
        await create_calico_node(store, name)
    await assign_pod_address(ipam, kept, namespace, "web")
    ghost = await assign_pod_address(ipam, kept, namespace, "ghost", endpoint=False)
    gone = await assign_pod_address(ipam, doomed, namespace, "d1")
    # The IPAM GC releases an address whose pod does not exist after leakGracePeriod.
    await store.create(KubeControllersConfiguration.model_validate({
        "metadata": {"name": "default"},
        "spec": {"controllers": {
            "node": {"leakGracePeriod": "2s"}, "policy": PERIOD, "namespace": PERIOD,
            "serviceAccount": PERIOD, "workloadEndpoint": PERIOD,
        }},
    }))  # fmt: skip

    kc = processes("kc-rbac", environment(kubeconfig, etcd.endpoint))
    await kc.wait_for("became leader")
    await kc.wait_for("controllers running: namespace, node, policy, serviceaccount, "
                      "workloadendpoint")  # fmt: skip
    await eventually(lambda: store.get("Profile", f"kns.{namespace}"), 30)
    await eventually(lambda: store.get("Profile", f"ksa.{namespace}.runner"), 30)
    apply(api, tmp_path / "policy.yaml", [network_policy("web", namespace)])
    await eventually(lambda: store.get("NetworkPolicy", "knp.default.web", namespace), 30)
    api.kubectl("label", "pod", "web", "-n", namespace, "tier=front")
    endpoint = workload_endpoint_name(kept, "k8s", "web", "eth0")

    async def relabelled() -> None:
        found = await store.get("WorkloadEndpoint", endpoint, namespace)
        assert isinstance(found, WorkloadEndpoint)
        assert (found.metadata.labels or {}).get("tier") == "front", found.metadata.labels

    await eventually(relabelled, 30)
    api.kubectl("delete", "node", doomed)

    async def collected() -> None:
        assert await ipam.allocation_info(gone) is None, "the deleted node's address"
        assert await ipam.allocation_info(ghost) is None, "the address of a pod that never was"
        await absent(store, "Node", doomed)

    await eventually(collected, 30)
    holder = api.kubectl("get", "lease", "calico-kube-controllers", "-n", "kube-system",
                         "-o", "jsonpath={.spec.holderIdentity}").stdout  # fmt: skip
    assert holder == "kc-rbac"

    async def ready() -> None:
        checked = kc.check()
        assert checked.stdout == "Ready\n", checked.stdout

    await eventually(ready, 30)
    kc.stop()  # SIGTERM: releases the Lease (an update)
    assert "released the lease" in kc.text()

    events = audit_events(audit_log, user)
    assert refused(events) == [], kc.text()[-3000:]
    made = {(e["verb"], e["objectRef"]["resource"]) for e in events if "objectRef" in e}
    for resource in ("namespaces", "serviceaccounts", "pods", "nodes", "networkpolicies"):
        assert {("list", resource), ("watch", resource)} <= made, (resource, sorted(made))
    assert {("get", "pods"), ("get", "nodes")} <= made, sorted(made)
    assert {("create", "leases"), ("get", "leases"), ("update", "leases")} <= made, sorted(made)
    assert "forbidden" not in kc.text().lower()


def calico_rules_without(verb: str, resource: str) -> list[dict[str, Any]]:
    """The manifest's ClusterRole rules with ``verb`` on ``resource`` taken away."""
    (role,) = [d for d in manifest() if d["kind"] == "ClusterRole"]
    rules: list[dict[str, Any]] = []
    for rule in copy.deepcopy(role["rules"]):
        if resource in rule["resources"] and verb in rule["verbs"]:
            others = [r for r in rule["resources"] if r != resource]
            if others:
                rules.append({**rule, "resources": others})
            rules.append({**rule, "resources": [resource],
                          "verbs": [v for v in rule["verbs"] if v != verb]})  # fmt: skip
        else:
            rules.append(rule)
    return rules


def bind(api: KubeAPIServer, path: Path, account: str, rules: list[dict[str, Any]]) -> str:
    """ServiceAccount ``kube-system/<account>`` bound to a ClusterRole of its own with
    ``rules``; its user name."""
    binding = {"kind": "ServiceAccount", "name": account, "namespace": "kube-system"}
    apply(api, path, [
        {"apiVersion": "v1", "kind": "ServiceAccount",
         "metadata": {"name": account, "namespace": "kube-system"}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
         "metadata": {"name": account}, "rules": rules},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
         "metadata": {"name": account}, "subjects": [binding],
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                     "name": account}},
    ])  # fmt: skip
    return f"{SA_PREFIX}{account}"


def first_line(process: KubeControllersProcess, text: str) -> str:
    return next(line for line in process.text().splitlines() if text in line)


async def test_a_missing_rule_is_an_error_naming_the_verb_and_the_resource(
    audited: tuple[KubeControlPlane, Path],
    workspace: tuple[KubeAPIServer, str],
    store: ResourceStore,
    etcd: EtcdServer,
    processes: Callable[..., KubeControllersProcess],
    tmp_path: Path,
) -> None:
    api, namespace = workspace
    tag = secrets.token_hex(3)
    # One rule less: no `list namespaces` (election off, so the ClusterRole is all it has).
    less = bind(api, tmp_path / "less.yaml", f"kc-less-{tag}",
                calico_rules_without("list", "namespaces"))  # fmt: skip
    # Calico's ClusterRole exactly, without pycalico's Lease Role, election on.
    (role,) = [d for d in manifest() if d["kind"] == "ClusterRole"]
    unelected = bind(api, tmp_path / "nolease.yaml", f"kc-nolease-{tag}", role["rules"])
    for user in (less, unelected):
        api.wait_allowed(user, "list", "pods")
    assert api.kubectl("auth", "can-i", "list", "namespaces", f"--as={less}",
                       check=False).stdout.strip() == "no"  # fmt: skip

    env = {"LEADER_ELECTION": "false"}
    kc_less = processes("kc-less", environment(
        service_account_kubeconfig(api, f"kc-less-{tag}", tmp_path / "less.conf"),
        etcd.endpoint, **env))  # fmt: skip
    await kc_less.wait_for('cannot list resource "namespaces"')
    apply(api, tmp_path / "policy.yaml", [network_policy("db", namespace)])
    await eventually(lambda: store.get("NetworkPolicy", "knp.default.db", namespace), 30)
    with pytest.raises(KeyNotFound):  # the namespace controller could do nothing
        await store.get("Profile", f"kns.{namespace}")
    line = first_line(kc_less, 'cannot list resource "namespaces"')
    assert "[ERROR]" in line and "controller namespace" in line and "forbidden" in line, line

    kc_nolease = processes("kc-nolease", environment(
        service_account_kubeconfig(api, f"kc-nolease-{tag}", tmp_path / "nolease.conf"),
        etcd.endpoint, LEADER_ELECTION_NAME=f"kc-{tag}"))  # fmt: skip
    await kc_nolease.wait_for('cannot get resource "leases"')
    line = first_line(kc_nolease, 'cannot get resource "leases"')
    assert "[ERROR]" in line and "coordination.k8s.io" in line, line
    assert "became leader" not in kc_nolease.text()
