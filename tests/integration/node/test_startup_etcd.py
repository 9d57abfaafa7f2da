"""calico-node startup against a real etcd: Node registration (create, update, conflicts),
default pools, EnsureInitialized; and the supervisor restarting a real child with backoff."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from pycalico.model.ipam import IPPool
from pycalico.model.node import ClusterInformation, FelixConfiguration, Node
from pycalico.model.policy import Tier
from pycalico.node.agent import ChildSpec, Supervisor
from pycalico.node.startup import (
    StartupError,
    StartupSettings,
    ensure_default_pools,
    ensure_initialized,
    register_node,
    run_startup,
)


def settings(tmp_path: Path, **env: str) -> StartupSettings:
    return StartupSettings.from_env(
        {"NODENAME": "node1", "CALICO_NODENAME_FILE": str(tmp_path / "nodename"), **env}
    )


async def test_startup_registers_node_pools_and_cluster(store: Any, tmp_path: Path) -> None:
    result = await run_startup(
        store,
        settings(
            tmp_path,
            IP="10.0.0.5/24",
            IP6="fd00::5/64",
            AS="65001",
            CALICO_IPV4POOL_CIDR="10.70.0.0/16",
            CALICO_IPV6POOL_CIDR="fd70::/48",
        ),
    )
    node = await store.get(Node, "node1")
    assert node.spec.bgp.ipv4_address == "10.0.0.5/24"
    assert node.spec.bgp.ipv6_address == "fd00::5/64"
    assert node.spec.bgp.as_number == 65001
    assert result.pools_created == ("default-ipv4-ippool", "default-ipv6-ippool")
    pool = await store.get(IPPool, "default-ipv4-ippool")
    assert pool.spec.cidr == "10.70.0.0/16" and pool.spec.nat_outgoing
    assert pool.spec.ipip_mode == "Never" and pool.spec.block_size == 26
    pool6 = await store.get(IPPool, "default-ipv6-ippool")
    assert pool6.spec.block_size == 122 and not pool6.spec.nat_outgoing
    info = await store.get(ClusterInformation, "default")
    assert info.spec.datastore_ready is True and len(info.spec.cluster_guid) == 32
    assert info.spec.cluster_type == "bgp"
    for tier in ("kube-admin", "default", "kube-baseline"):
        await store.get(Tier, tier)
    felix = await store.get(FelixConfiguration, "default")
    assert felix.spec.reporting_interval == "0s"
    assert (tmp_path / "nodename").read_text() == "node1"

    # A second start changes nothing it does not own, and creates no second pool.
    labelled = node.with_metadata(labels={"rack": "a"})
    await store.update(labelled)
    again = await run_startup(store, settings(tmp_path, IP="10.0.0.6/24"))
    assert again.pools_created == ()
    node = await store.get(Node, "node1")
    assert node.metadata.labels == {"rack": "a"}
    assert node.spec.bgp.ipv4_address == "10.0.0.6/24" and node.spec.bgp.as_number == 65001
    assert (
        await store.get(ClusterInformation, "default")
    ).spec.cluster_guid == info.spec.cluster_guid


async def test_locked_datastore_stays_locked(store: Any) -> None:
    await ensure_initialized(store)
    info = await store.get(ClusterInformation, "default")
    await store.update(
        info.model_copy(update={"spec": info.spec.model_copy(update={"datastore_ready": False})})
    )
    assert (await ensure_initialized(store)).spec.datastore_ready is False


async def test_address_conflict_is_refused(store: Any) -> None:
    await register_node(store, "node1", "10.0.0.5/24", None, None)
    with pytest.raises(StartupError, match="already in use by node 'node1'"):
        await register_node(store, "node2", "10.0.0.5/24", None, None)
    await register_node(store, "node2", "10.0.0.5/24", None, None, check_conflicts=False)


async def test_concurrent_registrations_all_land(store: Any) -> None:
    await asyncio.gather(
        *(register_node(store, f"node{i}", f"10.0.1.{i}/24", None, None) for i in range(1, 9))
    )
    listed = await store.list(Node)
    assert sorted(n.name for n in listed.items) == [f"node{i}" for i in range(1, 9)]


async def test_no_default_pools(store: Any, tmp_path: Path) -> None:
    assert await ensure_default_pools(store, settings(tmp_path, NO_DEFAULT_POOLS="true")) == []
    assert (await store.list(IPPool)).items == []


async def test_supervisor_restarts_a_dying_child(tmp_path: Path) -> None:
    marker = tmp_path / "starts"
    script = f"import sys; open({str(marker)!r}, 'a').write('x'); sys.exit(3)"
    supervisor = Supervisor(str(tmp_path / "log"))
    task = asyncio.create_task(
        supervisor.supervise(ChildSpec("dier", [sys.executable, "-c", script]))
    )
    exit_seen = None
    try:
        for _ in range(100):
            state = supervisor.children.get("dier")
            ran = marker.read_text().count("x") if marker.exists() else 0
            # Read the exit status before stop_all: stopping may catch the third child alive
            # and record its SIGTERM instead.
            if state and state.starts >= 3 and ran >= 3:
                exit_seen = state.last_exit
                break
            await asyncio.sleep(0.05)
    finally:
        await supervisor.stop_all()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    state = supervisor.children["dier"]
    assert state.starts >= 3 and exit_seen == 3
    assert marker.read_text().startswith("xxx")
    gaps = [b - a for a, b in zip(state.history, state.history[1:], strict=False)]
    assert gaps[0] >= 0.45 and gaps[1] >= 0.95  # 0.5 s, then 1 s: the backoff doubles
    assert os.path.exists(tmp_path / "log" / "dier.log")


async def test_supervisor_stop_terminates_the_child(tmp_path: Path) -> None:
    supervisor = Supervisor(str(tmp_path))
    task = asyncio.create_task(supervisor.supervise(ChildSpec("sleeper", ["sleep", "30"])))
    for _ in range(100):
        state = supervisor.children.get("sleeper")
        if state and state.process is not None:
            break
        await asyncio.sleep(0.02)
    process = supervisor.children["sleeper"].process
    assert process is not None and process.returncode is None
    await supervisor.stop_all()
    await asyncio.wait_for(task, 5)
    assert process.returncode is not None
    assert supervisor.children["sleeper"].starts == 1


def test_calico_node_startup_command(etcd: Any, tmp_path: Path) -> None:
    """``calico-node -startup`` registers the node and exits 0; a second node claiming the same
    address is refused with exit status 1 and one line naming the problem."""
    import subprocess

    executable = Path(sys.executable).parent / "calico-node"
    base = {
        "PATH": os.environ.get("PATH", ""),
        "ETCD_ENDPOINTS": etcd.endpoint,
        "IP": "10.0.0.5/24",
        "CALICO_IPV4POOL_CIDR": "10.70.0.0/16",
        "CALICO_NODENAME_FILE": str(tmp_path / "nodename"),
    }
    # The kv fixture is not used here: start from an empty keyspace on our own.
    subprocess.run(
        ["etcdctl", "--endpoints", etcd.endpoint, "del", "", "--from-key"],
        capture_output=True,
        env={**base, "ETCDCTL_API": "3"},
        check=True,
    )
    first = subprocess.run(
        [str(executable), "-startup"],
        env={**base, "NODENAME": "cli-node1"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert first.returncode == 0, first.stderr
    second = subprocess.run(
        [str(executable), "-startup"],
        env={**base, "NODENAME": "cli-node2"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert second.returncode == 1
    assert second.stderr.strip().splitlines()[-1] == (
        "calico-node: IP: address 10.0.0.5 is already in use by node 'cli-node1' "
        "(set DISABLE_NODE_IP_CHECK=true to allow it)"
    )
