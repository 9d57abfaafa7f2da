"""The CNI plugin and Felix together: pods made by ``calico`` are programmed by ``calico-felix``.

The plugin adds each pod's host route with no metric; Felix takes it over at the normal route
priority (metric 1024, Calico's ``ipv4NormalRoutePriority``), also for a pod added while it
runs, so BIRD would not announce the pods' ``/32``s.

The plugin writes each WorkloadEndpoint with the labels the runtime passed (``args.cni.labels``)
and the namespace profile (``policy.type: k8s``); Felix, running in the same node namespace,
programs them: the namespace profile allows everything, then a GlobalNetworkPolicy selecting
the ``app == 'db'`` pod by the label the plugin wrote denies its ingress.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from pycalico.datastore.api import KVStore
from pycalico.datastore.resources import ResourceStore
from pycalico.model.codec import decode_value
from pycalico.testing.connectivity import ConnectivityChecker, Endpoint, Probe
from pycalico.testing.etcd_server import free_port

from .conftest import CniNode

pytestmark = [pytest.mark.root, pytest.mark.slow]

FELIX = os.path.join(os.path.dirname(sys.executable), "calico-felix")


def resource(kind: str, name: str, spec: dict[str, Any]) -> Any:
    document = {
        "apiVersion": "projectcalico.org/v3",
        "kind": kind,
        "metadata": {"name": name},
        "spec": spec,
    }
    return decode_value(json.dumps(document), kind=kind)


def host_routes(cni_node: CniNode, address: str) -> list[tuple[str, int]]:
    """(protocol, metric) of every node route to ``address``."""
    shown = cni_node.exec("ip", "-j", "route", "show", address)
    return sorted((str(r.get("protocol")), int(r.get("metric", 0))) for r in json.loads(shown))


def wait_for_felix_route(cni_node: CniNode, address: str) -> None:
    deadline = time.monotonic() + 20
    while (routes := host_routes(cni_node, address)) != [("80", 1024)]:
        assert time.monotonic() < deadline, routes
        time.sleep(0.1)


def labels_arg(labels: dict[str, str]) -> dict[str, Any]:
    return {"cni": {"labels": [{"key": k, "value": v} for k, v in labels.items()]}}


@pytest.mark.skipif(not os.path.exists(FELIX), reason="calico-felix not installed")
async def test_felix_programs_the_pods_the_plugin_made(cni_node: CniNode, kv: KVStore) -> None:
    store = ResourceStore(kv)
    allow = [{"action": "Allow"}]
    await store.apply(resource("Profile", "kns.shop", {"ingress": allow, "egress": allow}))
    pods = {}
    for name, app in (("web", "web"), ("db", "db")):
        netns = cni_node.pod(name)
        conf = cni_node.conf(policy={"type": "k8s"}, args=labels_arg({"app": app}))
        code, result, err = cni_node.cni(
            "ADD", f"felix-{name}", conf, netns,
            args=f"K8S_POD_NAMESPACE=shop;K8S_POD_NAME={name}",
        )  # fmt: skip
        assert code == 0, (result, err)
        pods[name] = Endpoint(netns.rsplit("/", 1)[1], result["ips"][0]["address"].split("/")[0])
    env = {
        **os.environ,
        "FELIX_ETCDENDPOINTS": cni_node.endpoint,
        "FELIX_FELIXHOSTNAME": cni_node.name,
        "FELIX_LOGFILEPATH": "none",
        "FELIX_LOGSEVERITYSCREEN": "Info",
        "FELIX_HEALTHPORT": str(free_port()),
        "FELIX_CONFIGFILE": "/nonexistent",
        "FELIX_ENDPOINTSTATUSPATHPREFIX": "",  # no status files on the host
    }
    log = tempfile.NamedTemporaryFile(prefix="felix-cni-", suffix=".log", delete=False)  # noqa: SIM115
    felix = subprocess.Popen(
        ["nsenter", f"--net={cni_node.netns_path}", FELIX], env=env, stdout=log, stderr=log
    )
    checker = ConnectivityChecker(pods)
    late_path = cni_node.pod("late")
    try:
        deadline = time.monotonic() + 30
        while "calico" not in cni_node.exec("nft", "list", "tables", check=False):
            assert felix.poll() is None and time.monotonic() < deadline, Path(log.name).read_text()
            time.sleep(0.2)
        checker.serve(pods, tcp_ports=[80])
        web_to_db = Probe("web", "db", 80)
        db_to_web = Probe("db", "web", 80)
        checker.check({web_to_db: True, db_to_web: True}, deadline=20)
        for pod in pods.values():
            wait_for_felix_route(cni_node, pod.ip)
        late_code, late, late_err = cni_node.cni(
            "ADD", "felix-late", cni_node.conf(), late_path,
            args="K8S_POD_NAMESPACE=shop;K8S_POD_NAME=late",
        )  # fmt: skip
        assert late_code == 0, (late, late_err)
        wait_for_felix_route(cni_node, late["ips"][0]["address"].split("/")[0])
        await store.apply(
            resource(
                "GlobalNetworkPolicy",
                "deny-db-ingress",
                {"selector": "app == 'db'", "types": ["Ingress"], "ingress": [{"action": "Deny"}]},
            )
        )
        checker.check({web_to_db: False, db_to_web: True}, deadline=20)
    finally:
        checker.stop()
        felix.terminate()
        try:
            felix.wait(10)
        except subprocess.TimeoutExpired:
            felix.kill()
            felix.wait()
        log.close()
        os.unlink(log.name)
    paths = {name: f"/var/run/netns/{pod.netns}" for name, pod in pods.items()}
    for name, path in {**paths, "late": late_path}.items():
        args = f"K8S_POD_NAMESPACE=shop;K8S_POD_NAME={name}"
        assert cni_node.cni("DEL", f"felix-{name}", cni_node.conf(), path, args=args)[0] == 0
