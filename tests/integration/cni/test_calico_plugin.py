"""The ``calico`` executable end to end: real pod namespaces behind real veths, a real etcd,
``calicoctl`` as a process.  Each test runs the plugin inside a node namespace, as a runtime on
that node would."""

from __future__ import annotations

import ipaddress
import json
import subprocess
from typing import Any

import pytest

from pycalico.datastore.api import KVStore
from pycalico.datastore.resources import ResourceStore
from pycalico.ipam.check import check
from pycalico.model.endpoints import WorkloadEndpoint
from pycalico.testing.ipam import ipam_keys

from .conftest import CALICO, CALICOCTL, CniNode, ip

pytestmark = pytest.mark.root

VERSIONS = ("0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
POD_ARGS = "IgnoreUnknown=1;K8S_POD_NAMESPACE=ns-{n};K8S_POD_NAME=web-{n}"


def pod_ip(result: dict[str, Any], version: str) -> str:
    if version in ("0.1.0", "0.2.0"):
        return str(result["ip4"]["ip"])
    (entry,) = result["ips"]
    return str(entry["address"])


def assert_result_shape(result: dict[str, Any], version: str) -> None:
    assert result["cniVersion"] == version
    if version in ("0.1.0", "0.2.0"):
        assert set(result) <= {"cniVersion", "ip4", "ip6", "dns"}
        assert result["ip4"]["ip"].endswith("/32")
        assert {"dst": "0.0.0.0/0", "gw": "169.254.1.1"} in result["ip4"]["routes"]
        return
    assert "ip4" not in result
    (entry,) = result["ips"]
    assert entry["address"].endswith("/32")
    assert ("version" in entry) == (version in ("0.3.0", "0.3.1", "0.4.0"))
    host, container = result["interfaces"]
    assert host["name"].startswith("cali") and host["mac"] == "ee:ee:ee:ee:ee:ee"
    assert container["name"] == "eth0" and container["sandbox"].startswith("/var/run/netns/")
    assert entry["interface"] == 1
    assert {"dst": "0.0.0.0/0", "gw": "169.254.1.1"} in result["routes"]


def pod_state(netns: str) -> tuple[set[str], list[dict[str, Any]]]:
    name = netns.rsplit("/", 1)[1]
    addresses = json.loads(ip("-n", name, "-j", "addr", "show", "dev", "eth0"))
    inet = {f"{a['local']}/{a['prefixlen']}" for a in addresses[0]["addr_info"]}
    routes = json.loads(ip("-n", name, "-j", "route", "show"))
    return inet, routes


async def test_add_at_every_version_then_del(cni_node: CniNode, kv: KVStore) -> None:
    for n, version in enumerate(VERSIONS):
        netns = cni_node.pod(str(n))
        container = f"c{n}"
        args = POD_ARGS.format(n=n)
        code, result, err = cni_node.cni("ADD", container, cni_node.conf(version), netns, args=args)
        assert code == 0, (version, result, err)
        assert_result_shape(result, version)
        address = pod_ip(result, version)
        assert ipaddress.ip_interface(address) in ipaddress.ip_network("10.65.0.0/16") or (
            ipaddress.ip_interface(address).ip in ipaddress.ip_network("10.65.0.0/16")
        )
        inet, routes = pod_state(netns)
        assert address in inet
        assert {"dst": "default", "gateway": "169.254.1.1", "dev": "eth0"}.items() <= next(
            r for r in routes if r["dst"] == "default"
        ).items()
        link = json.loads(ip("-n", netns.rsplit("/", 1)[1], "-j", "link", "show", "eth0"))[0]
        assert link["mtu"] == 1450
    assert len(cni_node.cali_links()) == len(VERSIONS)
    for n, version in enumerate(VERSIONS):
        code, out, err = cni_node.cni(
            "DEL",
            f"c{n}",
            cni_node.conf(version),
            f"/var/run/netns/{cni_node.pods[n]}",
            args=POD_ARGS.format(n=n),
        )
        assert code == 0, (version, out, err)
    assert cni_node.cali_links() == []
    assert (await check(kv)).clean


async def test_two_pods_ping_and_endpoints_in_calicoctl(cni_node: CniNode, kv: KVStore) -> None:
    addresses = []
    for n in range(2):
        netns = cni_node.pod(str(n))
        code, result, err = cni_node.cni(
            "ADD", f"ping{n}", cni_node.conf(), netns, args=POD_ARGS.format(n=n)
        )
        assert code == 0, (result, err)
        addresses.append(result["ips"][0]["address"].split("/")[0])
    first = cni_node.pods[0]
    done = subprocess.run(
        ["ip", "netns", "exec", first, "ping", "-c", "2", "-W", "2", "-i", "0.2", addresses[1]],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    listed = subprocess.run(
        [CALICOCTL, "get", "workloadendpoints", "-A", "-o", "wide"],
        capture_output=True,
        text=True,
        env={"ETCD_ENDPOINTS": cni_node.etcd.endpoint, "PATH": "/usr/bin:/bin"},
        timeout=30,
    )
    assert listed.returncode == 0, listed.stderr
    for n, address in enumerate(addresses):
        line = next(line for line in listed.stdout.splitlines() if f"web--{n}" in line)
        assert line.split()[:2] == [f"ns-{n}", f"node--1-k8s-web--{n}-eth0"]
        assert f"{address}/32" in line and "cali" in line
    endpoint = await ResourceStore(kv).get(WorkloadEndpoint, "node--1-k8s-web--0-eth0", "ns-0")
    assert isinstance(endpoint, WorkloadEndpoint)
    assert endpoint.metadata.labels == {
        "projectcalico.org/namespace": "ns-0",
        "projectcalico.org/orchestrator": "k8s",
    }
    assert endpoint.spec.profiles == ["k8s-pod-network"]
    assert endpoint.spec.container_id == "ping0"


async def test_add_then_del_twice_leaves_nothing(cni_node: CniNode, kv: KVStore) -> None:
    before = await ipam_keys(kv)
    netns = cni_node.pod("a")
    args = POD_ARGS.format(n="a")
    code, result, err = cni_node.cni("ADD", "gone", cni_node.conf(), netns, args=args)
    assert code == 0, (result, err)
    assert cni_node.routes() == [result["ips"][0]["address"].split("/")[0]]
    for _ in range(2):
        code, out, err = cni_node.cni("DEL", "gone", cni_node.conf(), netns, args=args)
        assert (code, out) == (0, None), err
    assert cni_node.cali_links() == []
    assert cni_node.routes() == []
    assert (await ResourceStore(kv).list(WorkloadEndpoint)).items == []
    keys = await ipam_keys(kv)
    assert not [k for k in keys if "/handle/" in k]
    for key, value in keys.items():
        if "/assignment/" in key:
            assert all(a is None for a in json.loads(value)["allocations"]), key
    assert set(before) <= set(keys)
    ctl = subprocess.run(
        [CALICOCTL, "ipam", "check"],
        capture_output=True,
        text=True,
        env={"ETCD_ENDPOINTS": cni_node.etcd.endpoint, "PATH": "/usr/bin:/bin"},
        timeout=30,
    )
    assert ctl.returncode == 0, ctl.stdout + ctl.stderr  # exit 1 on any finding
    # DEL with the namespace already gone (the runtime removed it first) succeeds too.
    other = cni_node.pod("b")
    code, result, err = cni_node.cni("ADD", "early", cni_node.conf(), other, args=args)
    assert code == 0, err
    ip("netns", "del", other.rsplit("/", 1)[1])
    code, out, err = cni_node.cni("DEL", "early", cni_node.conf(), other, args=args)
    assert code == 0, (out, err)
    assert cni_node.cali_links() == []
    assert (await check(kv)).allocations == 0


async def test_failure_after_allocation_undoes_everything(cni_node: CniNode, kv: KVStore) -> None:
    netns = cni_node.pod("busy")
    name = netns.rsplit("/", 1)[1]
    # The pod already has an eth0: the veth cannot be made after IPAM assigned the address.
    ip("-n", name, "link", "add", "eth0", "type", "veth", "peer", "name", "other0")
    code, out, _ = cni_node.cni("ADD", "fail1", cni_node.conf(), netns, args=POD_ARGS.format(n=1))
    assert code == 1
    assert out["code"] == 999 and "eth0 already exists" in out["msg"], out
    # A WorkloadEndpoint that cannot be written (an invalid label key), after the veth exists.
    bad = cni_node.conf(args={"cni": {"labels": [{"key": "bad key!", "value": "x"}]}})
    clean = cni_node.pod("clean")
    code, out, _err = cni_node.cni("ADD", "fail2", bad, clean, args=POD_ARGS.format(n=2))
    assert code == 1 and "WorkloadEndpoint" in out["msg"], out
    assert cni_node.cali_links() == []
    assert cni_node.routes() == []
    clean_links = json.loads(ip("-n", clean.rsplit("/", 1)[1], "-j", "link", "show"))
    assert [link["ifname"] for link in clean_links] == ["lo"]
    assert (await ResourceStore(kv).list(WorkloadEndpoint)).items == []
    assert not [k for k in await ipam_keys(kv) if "/handle/" in k]
    report = await check(kv)
    assert report.clean and report.allocations == 0, report.findings


@pytest.mark.parametrize(
    ("change", "code", "text"),
    [
        ({"drop": "CNI_NETNS"}, 4, "CNI_NETNS"),
        ({"drop": "CNI_IFNAME"}, 4, "CNI_IFNAME"),
        ({"set": ("CNI_IFNAME", "eth/0")}, 4, "CNI_IFNAME"),
        ({"set": ("CNI_IFNAME", "a-name-longer-than-15")}, 4, "CNI_IFNAME"),
        ({"stdin": "{not json"}, 6, "netconf"),
        ({"version": "9.9.9"}, 1, "incompatible"),
        ({"conf": {"mtu": "big"}}, 7, "mtu"),
        ({"conf": {"ipam": {}}}, 7, "ipam.type"),
        ({"conf": {"ipam": {"type": "no-such-ipam"}}}, 7, "no-such-ipam"),
    ],
)
async def test_bad_inputs_get_spec_codes_and_create_nothing(
    cni_node: CniNode, kv: KVStore, change: dict[str, Any], code: int, text: str
) -> None:
    netns = cni_node.pod("x")
    conf = cni_node.conf(change.get("version", "1.0.0"), **change.get("conf", {}))
    env = cni_node.env("ADD", "bad", netns)
    if "drop" in change:
        del env[change["drop"]]
    if "set" in change:
        env[change["set"][0]] = change["set"][1]
    status, out, err = cni_node.run(CALICO, env, change.get("stdin", json.dumps(conf)))
    assert status == 1, (out, err)
    assert out["code"] == code and text in out["msg"], out
    assert set(out) == {"cniVersion", "code", "msg", "details"}
    assert cni_node.cali_links() == []
    assert not [k for k in await ipam_keys(kv) if "/handle/" in k or "/block/" in k]


async def test_check_verifies_and_repeated_add_returns_same(cni_node: CniNode) -> None:
    netns = cni_node.pod("chk")
    args = POD_ARGS.format(n="chk")
    code, result, err = cni_node.cni("ADD", "chk", cni_node.conf(), netns, args=args)
    assert code == 0, err
    again = cni_node.cni("ADD", "chk", cni_node.conf(), netns, args=args)
    assert again[0] == 0 and again[1]["ips"] == result["ips"], again
    checked = cni_node.conf(prevResult=result)
    code, out, err = cni_node.cni("CHECK", "chk", checked, netns, args=args)
    assert (code, out) == (0, None), (out, err)
    address = result["ips"][0]["address"]
    cni_node.exec("ip", "route", "del", address)
    code, out, err = cni_node.cni("CHECK", "chk", checked, netns, args=args)
    assert code == 1 and "no route" in out["msg"], out
    code, out, err = cni_node.cni("CHECK", "chk", cni_node.conf("0.3.1"), netns, args=args)
    assert code == 1 and out["code"] == 1, out
    assert cni_node.cni("DEL", "chk", cni_node.conf(), netns, args=args)[0] == 0


async def test_del_keeps_endpoint_of_another_container(cni_node: CniNode, kv: KVStore) -> None:
    args = POD_ARGS.format(n="r")
    old, new = cni_node.pod("old"), cni_node.pod("new")
    assert cni_node.cni("ADD", "sandbox1", cni_node.conf(), old, args=args)[0] == 0
    ip("netns", "del", old.rsplit("/", 1)[1])  # the old sandbox is gone, its DEL comes late
    code, _result, err = cni_node.cni("ADD", "sandbox2", cni_node.conf(), new, args=args)
    assert code == 0, err
    assert cni_node.cni("DEL", "sandbox1", cni_node.conf(), old, args=args)[0] == 0
    endpoint = await ResourceStore(kv).get(WorkloadEndpoint, "node--1-k8s-web--r-eth0", "ns-r")
    assert isinstance(endpoint, WorkloadEndpoint) and endpoint.spec.container_id == "sandbox2"
    report = await check(kv)
    assert report.allocations == 1  # sandbox1's address was released all the same
    assert len(cni_node.cali_links()) == 1


async def test_gc_releases_what_is_not_valid(cni_node: CniNode, kv: KVStore) -> None:
    for n in range(2):
        code, _, err = cni_node.cni(
            "ADD",
            f"gc{n}",
            cni_node.conf("1.1.0"),
            cni_node.pod(f"g{n}"),
            args=POD_ARGS.format(n=n),
        )
        assert code == 0, err
    conf = cni_node.conf(
        "1.1.0", **{"cni.dev/valid-attachments": [{"containerID": "gc0", "ifname": "eth0"}]}
    )
    code, out, err = cni_node.run(
        CALICO, cni_node.env("GC", "", None, ifname=None), json.dumps(conf)
    )
    assert (code, out) == (0, None), (out, err)
    names = [e.metadata.name for e in (await ResourceStore(kv).list(WorkloadEndpoint)).items]
    assert names == ["node--1-k8s-web--0-eth0"]
    assert (await check(kv)).allocations == 1
    code, out, err = cni_node.run(
        CALICO,
        cni_node.env("STATUS", "", None, ifname=None),
        json.dumps(cni_node.conf("1.1.0")),
    )
    assert (code, out) == (0, None), (out, err)


async def test_through_the_node_agent(cni_node: CniNode, kv: KVStore) -> None:
    cni_node.start_agent()
    args = POD_ARGS.format(n="ag")
    netns = cni_node.pod("ag")
    code, result, err = cni_node.cni(
        "ADD", "viaagent", cni_node.conf(), netns, args=args, agent=True
    )
    assert code == 0, (result, err)
    inet, _ = pod_state(netns)
    assert result["ips"][0]["address"] in inet
    assert len(cni_node.cali_links()) == 1  # made in the node namespace, where the agent runs
    code, out, err = cni_node.cni("DEL", "viaagent", cni_node.conf(), netns, args=args, agent=True)
    assert code == 0, (out, err)
    assert cni_node.cali_links() == []
    assert (await check(kv)).allocations == 0


async def test_dual_stack_pods_reach_each_other_over_ipv6(cni_node: CniNode, kv: KVStore) -> None:
    from pycalico.testing.ipam import put_pool

    await put_pool(kv, "default-ipv6-ippool", "fd65::/48")
    cni_node.exec("sysctl", "-qw", "net.ipv6.conf.all.forwarding=1")
    cni_node.exec("ip", "-6", "route", "add", "default", "dev", "lo")
    conf = cni_node.conf(ipam={"type": "calico-ipam", "assign_ipv6": "true"})
    v6 = []
    for n in range(2):
        netns = cni_node.pod(f"v6{n}")
        code, result, err = cni_node.cni("ADD", f"ds{n}", conf, netns, args=POD_ARGS.format(n=n))
        assert code == 0, (result, err)
        addresses = [ip["address"] for ip in result["ips"]]
        assert addresses[0].endswith("/32") and addresses[1].endswith("/128"), addresses
        assert {"dst": "::/0", "gw": "fe80::ecee:eeff:feee:eeee"} in result["routes"]
        v6.append(addresses[1].split("/")[0])
        inet, _ = pod_state(netns)
        assert addresses[1] in inet
    routes6 = json.loads(cni_node.exec("ip", "-6", "-j", "route", "show"))
    assert {
        r["dst"]
        for r in routes6
        if r.get("dev", "").startswith("cali") and not r["dst"].startswith("fe80:")
    } == set(v6)
    done = subprocess.run(
        ["ip", "netns", "exec", cni_node.pods[0], "ping", "-6", "-c", "2", "-W", "2", "-i",
         "0.2", v6[1]],
        capture_output=True, text=True, timeout=20,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    for n in range(2):
        path = f"/var/run/netns/{cni_node.pods[n]}"
        assert cni_node.cni("DEL", f"ds{n}", conf, path, args=POD_ARGS.format(n=n))[0] == 0
    assert (await check(kv)).allocations == 0


async def test_other_ipam_plugins_are_called_from_cni_path(cni_node: CniNode, kv: KVStore) -> None:
    data_dir = cni_node.tmp / "host-local"
    conf = cni_node.conf(
        ipam={"type": "host-local", "subnet": "10.77.0.0/24", "dataDir": str(data_dir)}
    )
    netns = cni_node.pod("hl")
    args = POD_ARGS.format(n="hl")
    code, result, err = cni_node.cni("ADD", "hostlocal", conf, netns, args=args)
    assert code == 0, (result, err)
    assert result["ips"][0]["address"] == "10.77.0.2/32"  # host-local's /24, as a /32 on eth0
    inet, _ = pod_state(netns)
    assert "10.77.0.2/32" in inet
    assert (data_dir / "k8s-pod-network" / "10.77.0.2").exists()
    assert (await check(kv)).allocations == 0  # Calico IPAM was not involved
    # The delegated plugin's failure is reported with its own code, and undone.
    exhausted = cni_node.conf(
        ipam={"type": "host-local", "subnet": "10.77.1.0/31", "dataDir": str(data_dir)}
    )
    code, out, err = cni_node.cni("ADD", "nospace", exhausted, cni_node.pod("hl2"), args=args)
    assert code == 1 and out["msg"].startswith("host-local:"), out
    code, out, err = cni_node.cni("DEL", "hostlocal", conf, netns, args=args)
    assert code == 0, (out, err)
    assert not (data_dir / "k8s-pod-network" / "10.77.0.2").exists()
    assert cni_node.cali_links() == []


async def test_not_ready_cluster_is_try_again_later(cni_node: CniNode, kv: KVStore) -> None:
    info = {
        "apiVersion": "projectcalico.org/v3",
        "kind": "ClusterInformation",
        "metadata": {"name": "default"},
        "spec": {"datastoreReady": False},
    }
    key = "/calico/resources/v3/projectcalico.org/clusterinformations/default"
    await kv.put(key, json.dumps(info).encode())
    netns = cni_node.pod("nr")
    code, out, _ = cni_node.cni("ADD", "notready", cni_node.conf(), netns)
    assert code == 1 and out["code"] == 11 and "not ready" in out["msg"], out
    assert cni_node.cali_links() == [] and (await check(kv)).allocations == 0
    status = cni_node.run(
        CALICO, cni_node.env("STATUS", "", None, ifname=None), json.dumps(cni_node.conf("1.1.0"))
    )
    assert status[0] == 1 and status[1]["code"] == 50, status
    info["spec"]["datastoreReady"] = True
    await kv.put(key, json.dumps(info).encode())
    assert cni_node.cni("ADD", "notready", cni_node.conf(), netns)[0] == 0
    assert cni_node.cni("DEL", "notready", cni_node.conf(), netns)[0] == 0
