"""The ``calico-ipam`` executable as real processes against a real etcd: concurrency, DEL
idempotence, the agent-socket path, errors as CNI error JSON, and ``calicoctl ipam check``."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import sys
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from pycalico.cni.agent_server import AgentServer, ipam_handler
from pycalico.datastore.api import KVStore
from pycalico.ipam.allocator import IPAM
from pycalico.ipam.check import check
from pycalico.testing.etcd_server import EtcdServer
from pycalico.testing.ipam import ipam_keys, put_node, put_pool

PLUGIN = str(Path(sys.executable).parent / "calico-ipam")
CALICOCTL = str(Path(sys.executable).parent / "calicoctl")
NODES = ("node-a", "node-b", "node-c", "node-d")
PARALLEL = 8


def netconf(etcd: EtcdServer, tmp: Path, node: str, **ipam: Any) -> dict[str, Any]:
    return {
        "cniVersion": "1.0.0",
        "name": "k8s-pod-network",
        "type": "calico",
        "nodename": node,
        "etcd_endpoints": etcd.endpoint,
        # One lock per node name: each stands for a separate host, as in a real cluster.
        "ipam_lock_file": str(tmp / f"{node}.lock"),
        "ipam": {"type": "calico-ipam", **ipam},
    }


async def run_plugin(
    command: str,
    container: str,
    conf: Mapping[str, Any],
    socket_path: Path,
    extra_env: Mapping[str, str] | None = None,
) -> tuple[int, str, str]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": container,
        "CNI_NETNS": f"/var/run/netns/{container}",
        "CNI_IFNAME": "eth0",
        "CNI_PATH": "/opt/cni/bin",
        "CNI_ARGS": f"IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=pod-{container}",
        "CALICO_AGENT_SOCKET": str(socket_path),
        **(extra_env or {}),
    }
    process = await asyncio.create_subprocess_exec(
        PLUGIN,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    try:
        out, err = await asyncio.wait_for(
            process.communicate(json.dumps(conf).encode()), timeout=120
        )
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def run_all(jobs: list[Any]) -> list[tuple[int, str, str]]:
    gate = asyncio.Semaphore(PARALLEL)

    async def one(job: Any) -> tuple[int, str, str]:
        async with gate:
            return await job

    return list(await asyncio.gather(*(one(j) for j in jobs)))


@pytest.fixture
async def seeded(kv: KVStore) -> AsyncIterator[KVStore]:
    await put_pool(kv, "default-ipv4-ippool", "10.65.0.0/16")
    for node in NODES:
        await put_node(kv, node)
    yield kv


@pytest.fixture
async def agent(seeded: KVStore, tmp_path: Path) -> AsyncIterator[Path]:
    path = tmp_path / "cni.sock"
    server = AgentServer(str(path), {"calico-ipam": ipam_handler(seeded)})
    await server.start()
    try:
        yield path
    finally:
        await server.close()


@pytest.mark.slow
async def test_200_concurrent_adds_then_dels_twice(
    seeded: KVStore, etcd: EtcdServer, tmp_path: Path, agent: Path
) -> None:
    no_agent = tmp_path / "nobody-listens.sock"
    containers = [f"c{i:03d}" for i in range(200)]
    node_of = {c: NODES[i % 4] for i, c in enumerate(containers)}
    # Every other plugin process works in-process, the rest forward to the node agent: both
    # paths race each other (and themselves) on etcd compare-and-swaps.
    via = {c: (no_agent if i % 2 == 0 else agent) for i, c in enumerate(containers)}
    results = await run_all(
        [run_plugin("ADD", c, netconf(etcd, tmp_path, node_of[c]), via[c]) for c in containers]
    )
    addresses = {}
    for container, (code, out, err) in zip(containers, results, strict=True):
        assert code == 0, (container, out, err)
        result = json.loads(out)
        assert result["cniVersion"] == "1.0.0"
        (ip,) = result["ips"]
        addresses[container] = ipaddress.ip_interface(ip["address"])
    assert len({a.ip for a in addresses.values()}) == 200
    allocator = IPAM(seeded)
    blocks = {b.cidr: b for _, b in await allocator.list_blocks()}
    for container, address in addresses.items():
        block = blocks[address.network]
        assert block.host == node_of[container], (container, address)
        info = await allocator.allocation_info(address.ip)
        assert info is not None and info.handle_id == f"k8s-pod-network.{container}"
        assert info.attributes["pod"] == f"pod-{container}"
    report = await check(seeded)
    assert report.clean, report.findings
    assert report.allocations == 200
    code, out = await calicoctl_check(etcd, tmp_path / "after-add.json")
    assert code == 0 and "Found 200 allocated IPs." in out and "found 0 problems" in out, out

    # DEL twice, through the node agent: the second round finds nothing and succeeds.
    for _ in range(2):
        results = await run_all(
            [run_plugin("DEL", c, netconf(etcd, tmp_path, node_of[c]), agent) for c in containers]
        )
        failed = [(c, r) for c, r in zip(containers, results, strict=True) if r[0] or r[1]]
        assert failed == [], failed[:3]
    report = await check(seeded)
    assert report.clean, report.findings
    assert report.allocations == 0
    assert [k for k in await ipam_keys(seeded) if "/handle/" in k] == []

    # calicoctl ipam check, as the operator runs it, agrees.
    code, out = await calicoctl_check(etcd, tmp_path / "report.json")
    assert code == 0 and "Found 0 allocated IPs." in out and "found 0 problems" in out, out
    assert json.loads((tmp_path / "report.json").read_text())["findings"] == []


async def calicoctl_check(etcd: EtcdServer, report: Path) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        CALICOCTL,
        "ipam",
        "check",
        "-o",
        str(report),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "ETCD_ENDPOINTS": etcd.endpoint},
    )
    out, _ = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode()


async def test_result_shapes_check_and_version(
    seeded: KVStore, etcd: EtcdServer, tmp_path: Path
) -> None:
    nobody = tmp_path / "none.sock"
    conf = netconf(etcd, tmp_path, "node-a")
    for version in ("0.2.0", "0.3.1", "1.1.0"):
        code, out, err = await run_plugin(
            "ADD", f"v{version}", {**conf, "cniVersion": version}, nobody
        )
        assert code == 0, err
        result = json.loads(out)
        if version == "0.2.0":
            assert ipaddress.ip_interface(result["ip4"]["ip"]).network.prefixlen == 26
        elif version == "0.3.1":
            assert result["ips"][0]["version"] == "4"
        else:
            assert "version" not in result["ips"][0]
        prev = {**conf, "cniVersion": version, "prevResult": result}
        code, out, err = await run_plugin("CHECK", f"v{version}", prev, nobody)
        assert (code, out) == (0, ""), err
    code, out, _ = await run_plugin("CHECK", "never-added", conf, nobody)
    assert code == 1 and "no IPAM allocation" in json.loads(out)["msg"]
    code, out, _ = await run_plugin("VERSION", "", conf, nobody)
    assert code == 0 and "1.0.0" in json.loads(out)["supportedVersions"]


async def test_bad_requests_fail_cleanly_and_allocate_nothing(
    seeded: KVStore, etcd: EtcdServer, tmp_path: Path
) -> None:
    nobody = tmp_path / "none.sock"
    cases = [
        (netconf(etcd, tmp_path, "node-a", assign_ipv6="true"), "cannot find a qualified ippool"),
        (netconf(etcd, tmp_path, "node-a", ipv4_pools=["no-such-pool"]), "no-such-pool"),
        (
            netconf(etcd, tmp_path, "node-a", ipv4_pools=["10.9.0.0/16"]),
            "the given pool (10.9.0.0/16) does not exist, or is not enabled",
        ),
        (netconf(etcd, tmp_path, "node-a", assign_ipv4="false"), "both false"),
        ({**netconf(etcd, tmp_path, "node-a"), "cniVersion": "9.9.9"}, "incompatible CNI versions"),
        (netconf(etcd, tmp_path, "ghost-node"), "Node(ghost-node)"),
    ]
    for conf, message in cases:
        code, out, err = await run_plugin("ADD", "bad", conf, nobody)
        error = json.loads(out)
        assert code == 1 and message in error["msg"], (message, out, err)
        assert set(error) == {"cniVersion", "code", "msg", "details"}
    assert await ipam_keys(seeded) == {}

    conf = netconf(etcd, tmp_path, "node-a")
    code, out, _ = await run_plugin("ADD", "given", conf, nobody, {"CNI_ARGS": "IP=10.65.9.9"})
    assert code == 0 and json.loads(out)["ips"][0]["address"] == "10.65.9.9/32"
    for ip, message in (
        ("10.65.9.9", "already in use"),
        ("192.168.7.7", "not in a configured pool"),
    ):
        code, out, _ = await run_plugin("ADD", "other", conf, nobody, {"CNI_ARGS": f"IP={ip}"})
        assert code == 1 and message in json.loads(out)["msg"]
    code, _, _ = await run_plugin("DEL", "given", conf, nobody)
    assert code == 0
    report = await check(seeded)
    assert report.clean and report.allocations == 0


async def test_ipv4_pool_by_name_through_the_agent(
    seeded: KVStore, etcd: EtcdServer, tmp_path: Path, agent: Path
) -> None:
    await put_pool(seeded, "special", "10.80.0.0/24", block_size=28)
    conf = netconf(etcd, tmp_path, "node-b", ipv4_pools=["special"])
    code, out, err = await run_plugin("ADD", "named", conf, agent)
    assert code == 0, err
    address = ipaddress.ip_interface(json.loads(out)["ips"][0]["address"])
    assert address.ip in ipaddress.ip_network("10.80.0.0/24")
    assert address.network.prefixlen == 28
