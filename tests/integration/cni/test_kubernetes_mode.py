"""The ``calico`` executable in Kubernetes mode: a real kube-apiserver holds the Pods and
Namespaces, a real etcd the Calico data, real namespaces and veths the pods' networks.

The plugin runs in the node namespace (as on a node); the API server listens on the test's
loopback and is relayed to the same port on the node's loopback, as etcd is."""

from __future__ import annotations

import json
import secrets
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from pycalico.datastore.api import KVStore
from pycalico.datastore.resources import ResourceStore
from pycalico.ipam.check import check
from pycalico.k8s.client import KubeClient
from pycalico.model.endpoints import WorkloadEndpoint
from pycalico.netns.ports import free_port
from pycalico.testing.ipam import ipam_keys, put_pool
from pycalico.testing.kube_server import KubeControlPlane
from pycalico.testing.netns_fabric import EtcdRelay

from .conftest import CALICOCTL, CniNode

pytestmark = pytest.mark.root

ANN = "cni.projectcalico.org/"


@pytest.fixture
def node(cni_node: CniNode, kube_plane: KubeControlPlane) -> Iterator[CniNode]:
    """The CNI node, with the API server's port relayed onto its loopback."""
    relay = EtcdRelay("127.0.0.1", kube_plane.apiserver.port)
    try:
        relay.add(cni_node.netns, port=kube_plane.apiserver.port)
        yield cni_node
    finally:
        relay.close()


@pytest.fixture
async def namespace(kube: KubeClient) -> AsyncIterator[str]:
    name = f"cni-{secrets.token_hex(4)}"
    await kube.core.create_namespace({"metadata": {"name": name}})
    # No controller-manager makes the "default" ServiceAccount that admission looks up.
    await kube.core.create_namespaced_service_account(name, {"metadata": {"name": "default"}})
    yield name
    await kube.core.delete_namespace(name)


def k8s_conf(node: CniNode, kubeconfig: Path | str, **extra: Any) -> dict[str, Any]:
    return node.conf(kubernetes={"kubeconfig": str(kubeconfig)}, policy={"type": "k8s"}, **extra)


def pod_args(namespace: str, pod: str) -> str:
    return f"IgnoreUnknown=1;K8S_POD_NAMESPACE={namespace};K8S_POD_NAME={pod}"


async def make_pod(
    kube: KubeClient,
    namespace: str,
    name: str,
    annotations: dict[str, str] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    body = {
        "metadata": {"name": name, "labels": {"app": name}, "annotations": annotations or {}},
        "spec": {"containers": [{"name": "c", "image": "pause"}], **spec},
    }
    created = await kube.core.create_namespaced_pod(namespace, body)
    return kube.to_wire(created)


async def pod_annotations(kube: KubeClient, namespace: str, name: str) -> dict[str, str]:
    pod = await kube.core.read_namespaced_pod(name, namespace)
    return dict(pod.metadata.annotations or {})


async def assert_nothing_left(node: CniNode, kv: KVStore) -> None:
    assert node.cali_links() == []
    assert node.routes() == []
    assert (await ResourceStore(kv).list(WorkloadEndpoint)).items == []
    assert not [k for k in await ipam_keys(kv) if "/handle/" in k]
    report = await check(kv)
    assert report.clean and report.allocations == 0, report.findings


async def test_add_writes_endpoint_and_pod_annotations_del_clears_them(
    node: CniNode, kv: KVStore, kube: KubeClient, kube_plane: KubeControlPlane, namespace: str
) -> None:
    await kube.core.create_namespaced_service_account(namespace, {"metadata": {"name": "sa1"}})
    ports = [
        {"name": "http", "containerPort": 8080},
        {"containerPort": 9000},
        {"name": "dns", "containerPort": 53, "protocol": "UDP"},
    ]
    containers = [{"name": "c", "image": "pause", "ports": ports}]
    pod = await make_pod(kube, namespace, "web", serviceAccountName="sa1", containers=containers)
    conf = k8s_conf(node, kube_plane.kubeconfig)
    netns, args = node.pod("web"), pod_args(namespace, "web")

    code, result, err = node.cni("ADD", "c-web-1", conf, netns, args=args)
    assert code == 0, (result, err)
    address = result["ips"][0]["address"].split("/")[0]

    endpoint = await ResourceStore(kv).get(WorkloadEndpoint, "node--1-k8s-web-eth0", namespace)
    assert isinstance(endpoint, WorkloadEndpoint)
    assert endpoint.metadata.labels == {
        "app": "web",
        "projectcalico.org/namespace": namespace,
        "projectcalico.org/orchestrator": "k8s",
        "projectcalico.org/serviceaccount": "sa1",
    }
    assert endpoint.spec.profiles == [f"kns.{namespace}", f"ksa.{namespace}.sa1"]
    assert endpoint.spec.service_account_name == "sa1"
    assert [(p.name, p.protocol, p.port) for p in endpoint.spec.ports or []] == [
        ("http", "TCP", 8080),
        ("dns", "UDP", 53),
    ]
    annotations = await pod_annotations(kube, namespace, "web")
    assert annotations[ANN + "podIP"] == address
    assert annotations[ANN + "podIPs"] == address
    assert annotations[ANN + "containerID"] == "c-web-1"

    code, out, err = node.cni("DEL", "c-web-1", conf, netns, args=args)
    assert code == 0, (out, err)
    annotations = await pod_annotations(kube, namespace, "web")
    assert (annotations[ANN + "podIP"], annotations[ANN + "podIPs"]) == ("", "")
    assert annotations[ANN + "containerID"] == "c-web-1"  # kept, as Calico does
    assert pod["metadata"]["uid"]
    await assert_nothing_left(node, kv)
    ctl = subprocess.run(
        [CALICOCTL, "ipam", "check"],
        capture_output=True,
        text=True,
        env={"ETCD_ENDPOINTS": node.etcd.endpoint, "PATH": "/usr/bin:/bin"},
        timeout=30,
    )
    assert ctl.returncode == 0, ctl.stdout + ctl.stderr


async def test_ip_addrs_and_pool_annotations_are_honoured(
    node: CniNode, kv: KVStore, kube: KubeClient, kube_plane: KubeControlPlane, namespace: str
) -> None:
    await put_pool(kv, "second-pool", "10.66.0.0/16")
    await kube.core.patch_namespace(
        namespace, {"metadata": {"annotations": {ANN + "ipv4pools": '["second-pool"]'}}}
    )
    await make_pod(kube, namespace, "fixed", {ANN + "ipAddrs": '["10.65.7.7"]'})
    await make_pod(kube, namespace, "from-ns")
    await make_pod(kube, namespace, "from-pod", {ANN + "ipv4pools": '["10.65.0.0/16"]'})
    conf = k8s_conf(node, kube_plane.kubeconfig)
    expected = {"fixed": "10.65.7.7/32", "from-ns": "10.66.", "from-pod": "10.65."}
    for name, prefix in expected.items():
        code, result, err = node.cni(
            "ADD", f"c-{name}", conf, node.pod(name), args=pod_args(namespace, name)
        )
        assert code == 0, (name, result, err)
        assert result["ips"][0]["address"].startswith(prefix), (name, result)
    for name in expected:
        code, out, err = node.cni(
            "DEL",
            f"c-{name}",
            conf,
            f"/var/run/netns/cni-pod-{node.tag}-{name}",
            args=pod_args(namespace, name),
        )
        assert code == 0, (out, err)
    await assert_nothing_left(node, kv)


def kubeconfig_to(kube_plane: KubeControlPlane, directory: Path, server: str) -> Path:
    config = yaml.safe_load(kube_plane.kubeconfig.read_text())
    config["clusters"][0]["cluster"]["server"] = server
    path = directory / "unreachable.kubeconfig"
    path.write_text(yaml.safe_dump(config))
    return path


async def test_missing_pod_dead_api_and_bad_annotations_fail_and_leave_nothing(
    node: CniNode, kv: KVStore, kube: KubeClient, kube_plane: KubeControlPlane, namespace: str
) -> None:
    conf = k8s_conf(node, kube_plane.kubeconfig)
    cases: list[tuple[str, dict[str, Any], str]] = [
        ("ghost", conf, f"pod {namespace}/ghost: does not exist"),
        (
            "dead",
            k8s_conf(node, kubeconfig_to(kube_plane, node.tmp, f"https://127.0.0.1:{free_port()}")),
            "did not answer",
        ),
        ("badaddr", conf, ANN + "ipAddrs"),
        ("badpool", conf, ANN + "ipv4pools"),
        ("nopool", conf, "no-such-pool"),
    ]
    await make_pod(kube, namespace, "dead")
    await make_pod(kube, namespace, "badaddr", {ANN + "ipAddrs": '["10.65.0.1", "10.65.0.2"]'})
    await make_pod(kube, namespace, "badpool", {ANN + "ipv4pools": "10.65.0.0/16"})
    await make_pod(kube, namespace, "nopool", {ANN + "ipv4pools": '["no-such-pool"]'})
    for name, config, needle in cases:
        netns = node.pod(name)
        code, out, err = node.cni("ADD", f"c-{name}", config, netns, args=pod_args(namespace, name))
        assert code == 1, (name, out, err)
        assert needle in out["msg"], (name, out)
        links = json.loads(
            subprocess.run(
                ["ip", "-n", netns.rsplit("/", 1)[1], "-j", "link", "show"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        )
        assert [link["ifname"] for link in links] == ["lo"], name
        if name != "ghost":
            assert ANN + "podIP" not in await pod_annotations(kube, namespace, name)
    await assert_nothing_left(node, kv)


async def test_agent_reuses_one_client_and_del_survives_pod_replacement(
    node: CniNode, kv: KVStore, kube: KubeClient, kube_plane: KubeControlPlane, namespace: str
) -> None:
    node.start_agent()
    conf = k8s_conf(node, kube_plane.kubeconfig)
    args = pod_args(namespace, "db")
    await make_pod(kube, namespace, "db")
    first = node.pod("db1")
    code, result, err = node.cni("ADD", "c-db-1", conf, first, args=args, agent=True)
    assert code == 0, (result, err)
    # The pod is deleted and re-created under the same name (a StatefulSet's pod): the new pod
    # gets its own sandbox; the old sandbox's late DEL must not touch the new pod's annotations.
    await kube.core.delete_namespaced_pod("db", namespace, grace_period_seconds=0)
    await make_pod(kube, namespace, "db")
    second = node.pod("db2")
    code, result2, err = node.cni("ADD", "c-db-2", conf, second, args=args, agent=True)
    assert code == 0, (result2, err)
    code, out, err = node.cni("DEL", "c-db-1", conf, first, args=args, agent=True)
    assert code == 0, (out, err)
    annotations = await pod_annotations(kube, namespace, "db")
    assert annotations[ANN + "containerID"] == "c-db-2"
    assert annotations[ANN + "podIP"] == result2["ips"][0]["address"].split("/")[0]
    # The pod is gone before its DEL (kubelet force-deleted it): DEL still cleans up.
    await kube.core.delete_namespaced_pod("db", namespace, grace_period_seconds=0)
    code, out, err = node.cni("DEL", "c-db-2", conf, second, args=args, agent=True)
    assert code == 0, (out, err)
    await assert_nothing_left(node, kv)


async def test_api_root_and_token_instead_of_kubeconfig(
    node: CniNode, kv: KVStore, kube: KubeClient, kube_plane: KubeControlPlane, namespace: str
) -> None:
    api = kube_plane.apiserver
    conf = node.conf(
        policy={
            "type": "k8s",
            "k8s_api_root": f"{api.url}/api/v1/",
            "k8s_auth_token": api.token,
            "k8s_certificate_authority": str(api.ca_file),
        }
    )
    await make_pod(kube, namespace, "tok", {ANN + "ipAddrs": '["10.65.9.9"]'})
    netns, args = node.pod("tok"), pod_args(namespace, "tok")
    code, result, err = node.cni("ADD", "c-tok", conf, netns, args=args)
    assert code == 0, (result, err)
    assert result["ips"][0]["address"] == "10.65.9.9/32"
    assert (await pod_annotations(kube, namespace, "tok"))[ANN + "podIP"] == "10.65.9.9"
    code, out, err = node.cni("DEL", "c-tok", conf, netns, args=args)
    assert code == 0, (out, err)
    await assert_nothing_left(node, kv)


async def test_calico_cni_role_suffices_and_a_refused_patch_undoes_the_add(
    node: CniNode, kv: KVStore, kube: KubeClient, kube_plane: KubeControlPlane, namespace: str
) -> None:
    """As a service account with only Calico's CNI permissions on pods and namespaces: ADD with
    read access alone allocates, then fails at the annotation patch and undoes everything; once
    ``pods/status`` ``patch`` is granted (Calico's calico-cni-plugin role) it succeeds."""
    api = kube_plane.apiserver
    tag = secrets.token_hex(3)
    user = f"system:serviceaccount:{namespace}:calico-cni"
    api.kubectl("create", "serviceaccount", "calico-cni", "-n", namespace)
    created = [f"cni-read-{tag}", f"cni-patch-{tag}"]
    try:
        api.kubectl("create", "clusterrole", created[0], "--verb=get", "--resource=pods,namespaces")
        api.kubectl("create", "clusterrolebinding", created[0], f"--clusterrole={created[0]}",
                    f"--serviceaccount={namespace}:calico-cni")  # fmt: skip
        token = api.kubectl("create", "token", "calico-cni", "-n", namespace).stdout.strip()
        api.wait_allowed(user, "get", "namespaces")
        conf = node.conf(
            policy={
                "type": "k8s",
                "k8s_api_root": api.url,
                "k8s_auth_token": token,
                "k8s_certificate_authority": str(api.ca_file),
            }
        )
        await make_pod(kube, namespace, "limited")
        netns, args = node.pod("limited"), pod_args(namespace, "limited")
        code, out, err = node.cni("ADD", "c-limited", conf, netns, args=args)
        assert code == 1, (out, err)
        assert "patch pod" in out["msg"] and "forbidden" in out["msg"], out
        await assert_nothing_left(node, kv)
        assert ANN + "podIP" not in await pod_annotations(kube, namespace, "limited")

        api.kubectl("create", "clusterrole", created[1], "--verb=patch", "--resource=pods/status")
        api.kubectl("create", "clusterrolebinding", created[1], f"--clusterrole={created[1]}",
                    f"--serviceaccount={namespace}:calico-cni")  # fmt: skip
        api.wait_allowed(user, "patch", "pods/status")
        code, result, err = node.cni("ADD", "c-limited", conf, netns, args=args)
        assert code == 0, (result, err)
        address = result["ips"][0]["address"].split("/")[0]
        assert (await pod_annotations(kube, namespace, "limited"))[ANN + "podIP"] == address
        code, out, err = node.cni("DEL", "c-limited", conf, netns, args=args)
        assert code == 0, (out, err)
        await assert_nothing_left(node, kv)
    finally:
        for name in created:
            api.kubectl("delete", "clusterrolebinding", name, "--ignore-not-found", check=False)
            api.kubectl("delete", "clusterrole", name, "--ignore-not-found", check=False)
