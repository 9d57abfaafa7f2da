"""CNI DEL and Calico's legacy workload handle: addresses an older plugin assigned under the
workload ID are released too, and the node agent skips that lookup for containers whose address
it assigned itself (it knows the address is under the new handle)."""

from __future__ import annotations

import ipaddress
import json

from pycalico.cni import ipam_handler
from pycalico.datastore.api import KeyValue
from pycalico.ipam import keys
from pycalico.ipam.allocator import IPAM, AutoAssignRequest
from pycalico.testing.ipam import put_node, put_pool
from pycalico.testing.memory_kv import MemoryKVStore

CONFIG = json.dumps(
    {"cniVersion": "1.0.0", "name": "k8s-pod-network", "nodename": "node-1",
     "ipam": {"type": "calico-ipam"}}
)  # fmt: skip


def env(command: str, container: str = "c-1", pod: str = "web-0") -> dict[str, str]:
    return {
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": container,
        "CNI_NETNS": f"/var/run/netns/{container}",
        "CNI_IFNAME": "eth0",
        "CNI_PATH": "/opt/cni/bin",
        "CNI_ARGS": f"K8S_POD_NAMESPACE=default;K8S_POD_NAME={pod}",
    }


class CountingKV(MemoryKVStore):
    def __init__(self) -> None:
        super().__init__()
        self.reads: list[str] = []

    async def get(self, key: str) -> KeyValue | None:
        self.reads.append(key)
        return await super().get(key)


async def seeded() -> CountingKV:
    kv = CountingKV()
    await put_pool(kv, "default-ipv4-ippool", "10.65.0.0/16")
    await put_node(kv, "node-1")
    return kv


async def call(ipam: IPAM, command: str, **who: str) -> dict[str, object]:
    request = env(command, **who)
    response = await ipam_handler.handle(request, CONFIG, ipam=ipam, lock=ipam_handler.no_lock)
    assert response.exit_code == 0, response
    return json.loads(response.stdout) if response.stdout else {}


async def test_an_address_under_the_legacy_handle_is_released() -> None:
    kv = await seeded()
    older_plugin = IPAM(kv)
    legacy, _ = await older_plugin.auto_assign(
        AutoAssignRequest(node="node-1", handle_id="default.web-0", num4=1)
    )
    agent = IPAM(kv, cache_seconds=1.0)  # has not seen this container's ADD
    await call(agent, "DEL")
    assert keys.handle_key("default.web-0") in kv.reads
    assert await kv.get(keys.handle_key("default.web-0")) is None
    assert await agent.allocation_info(legacy.addresses[0].ip) is None


async def test_the_agent_skips_the_legacy_lookup_for_its_own_assignment() -> None:
    kv = await seeded()
    agent = IPAM(kv, cache_seconds=1.0)
    # The node's first ADD claims a block (handle written on its own, not remembered); from
    # then on the agent assigns from its hot block and remembers each handle it writes.
    await call(agent, "ADD", container="c-0", pod="web-a")
    added = await call(agent, "ADD")
    kv.reads.clear()
    await call(agent, "DEL")
    assert keys.handle_key("default.web-0") not in kv.reads
    assert await kv.get(keys.handle_key("k8s-pod-network.c-1")) is None
    address = str(added["ips"][0]["address"]).split("/")[0]  # type: ignore[index]
    assert await agent.allocation_info(ipaddress.ip_address(address)) is None
