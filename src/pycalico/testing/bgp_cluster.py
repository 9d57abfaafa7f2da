"""``BgpCluster``: N calico-nodes with real BIRD on a ``Fabric``, driven synchronously, for the
BGP integration tests and ``bench.bgp_convergence``.

Test support only (root).  Datastore writes go through a fresh ``EtcdKVStore`` per call
(``asyncio.run``), so callers stay synchronous and never share an event loop with the nodes'
etcd relay.  Everything is removed by ``close()`` (the fabric's namespaces and processes).
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import subprocess
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

from pycalico.bgp.bird import BirdControl, BirdError, ProtocolRow
from pycalico.datastore.etcd import EtcdKVStore
from pycalico.datastore.resources import ResourceStore
from pycalico.ipam.allocator import IPAM, AutoAssignRequest
from pycalico.model.codec import decode_resource
from pycalico.model.meta import Resource
from pycalico.testing.netns_fabric import Fabric, FabricNode, netns_exec

T = TypeVar("T")


class BgpCluster:
    def __init__(
        self,
        etcd_endpoint: str,
        size: int,
        *,
        prefix: str = "pcb",
        pool: str = "10.70.0.0/16",
        subnet: str = "10.213.0",
        subnet6: str | None = None,
        pool6: str | None = None,
        extra_env: Mapping[str, str] | None = None,
    ) -> None:
        self.endpoint = etcd_endpoint
        self.fabric = Fabric(prefix, subnet=subnet, subnet6=subnet6, etcd_endpoint=etcd_endpoint)
        self.env = {"CALICO_IPV4POOL_CIDR": pool, **(extra_env or {})}
        if pool6:
            self.env["CALICO_IPV6POOL_CIDR"] = pool6
        try:
            self.nodes = [self.fabric.add_node(index) for index in range(1, size + 1)]
        except BaseException:
            self.fabric.close()
            raise

    # --- datastore ----------------------------------------------------------------------------

    def call(self, work: Callable[[EtcdKVStore], Awaitable[T]]) -> T:
        async def main() -> T:
            kv = EtcdKVStore([self.endpoint])
            try:
                return await work(kv)
            finally:
                await kv.close()

        return asyncio.run(main())

    def apply(self, *manifests: Mapping[str, Any]) -> None:
        resources = [decode_resource(dict(m)) for m in manifests]

        async def work(kv: EtcdKVStore) -> None:
            store = ResourceStore(kv)
            for resource in resources:
                await store.apply(resource)

        self.call(work)

    def delete(self, kind: str, name: str) -> None:
        self.call(lambda kv: ResourceStore(kv).delete(kind, name))

    def get(self, kind: str, name: str) -> Resource:
        return self.call(lambda kv: ResourceStore(kv).get(kind, name))

    def assign(self, node: FabricNode, handle: str, version: int = 4) -> ipaddress.IPv4Interface:
        """One IPAM address for a workload on ``node`` (claiming a block if needed)."""
        request = AutoAssignRequest(
            num4=1 if version == 4 else 0,
            num6=1 if version == 6 else 0,
            handle_id=handle,
            attrs={"node": node.name},
            node=node.name,
        )
        v4, v6 = self.call(lambda kv: IPAM(kv).auto_assign(request))
        addresses = v4.addresses if version == 4 else v6.addresses
        assert addresses, f"IPAM gave {node.name} no address: {v4.messages} {v6.messages}"
        return addresses[0]  # type: ignore[return-value]

    # --- nodes --------------------------------------------------------------------------------

    def start(self, nodes: Sequence[FabricNode] | None = None) -> None:
        for node in nodes or self.nodes:
            self.fabric.start_node(node, self.env)

    def protocols(self, node: FabricNode) -> list[ProtocolRow]:
        try:
            return asyncio.run(BirdControl(node.bird_socket, timeout=2.0).protocols())
        except BirdError:
            return []

    def established(self, node: FabricNode) -> dict[str, str]:
        """BGP protocol name -> info, for the sessions that are Established."""
        return {
            row.name: row.info
            for row in self.protocols(node)
            if row.proto == "BGP" and row.info.startswith("Established")
        }

    def bgp_protocols(self, node: FabricNode) -> dict[str, str]:
        return {row.name: row.info for row in self.protocols(node) if row.proto == "BGP"}

    def bird_pid(self, node: FabricNode) -> int | None:
        for pid in self.fabric.pids(node.namespace):
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as file:
                    words = file.read().split(b"\0")
            except OSError:
                continue
            if words and os.path.basename(words[0].decode()) == "bird":
                return pid
        return None

    def kernel_routes(self, node: FabricNode, version: int = 4) -> dict[str, dict[str, Any]]:
        """Destination -> route, for BIRD's routes in the node's main table."""
        return {
            str(route["dst"]): route
            for route in self.fabric.routes(node.namespace, version)
            if route.get("protocol") == "bird"
        }

    def ping(self, namespace: str, address: str, count: int = 1, timeout: int = 1) -> bool:
        result = subprocess.run(
            [
                "nsenter",
                f"--net=/var/run/netns/{namespace}",
                "ping",
                "-n",
                "-q",
                "-c",
                str(count),
                "-W",
                str(timeout),
                address,
            ],
            capture_output=True,
            timeout=count * timeout + 10,
            check=False,
        )
        return result.returncode == 0

    def logs(self, node: FabricNode) -> str:
        parts = []
        directory = os.path.join(node.directory, "log")
        for name in sorted(os.listdir(directory)) if os.path.isdir(directory) else []:
            with open(os.path.join(directory, name), errors="replace") as file:
                parts.append(f"--- {node.name} {name}\n" + file.read()[-4000:])
        return "\n".join(parts)

    def close(self) -> None:
        self.fabric.close()

    def __enter__(self) -> BgpCluster:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def wait_for(predicate: Callable[[], T], timeout: float, interval: float = 0.1) -> T:
    """Poll until ``predicate()`` is truthy; returns it, or raises ``TimeoutError``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"still false after {timeout:.0f}s: {predicate}")
        time.sleep(interval)


class GoBgp:
    """A gobgpd in its own namespace (an external router), configured in TOML."""

    def __init__(self, fabric: Fabric, namespace: str, router_id: str, as_number: int) -> None:
        self.fabric = fabric
        self.namespace = namespace
        self.router_id = router_id
        self.as_number = as_number
        self.directory = os.path.join(fabric.directory, namespace)
        os.makedirs(self.directory, exist_ok=True)
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, neighbors: Sequence[tuple[str, int]], password: str | None = None) -> None:
        lines = [
            "[global.config]",
            f"  as = {self.as_number}",
            f'  router-id = "{self.router_id}"',
        ]
        for address, peer_as in neighbors:
            lines += [
                "[[neighbors]]",
                "  [neighbors.config]",
                f'    neighbor-address = "{address}"',
                f"    peer-as = {peer_as}",
            ]
            if password:
                lines.append(f'    auth-password = "{password}"')
        path = os.path.join(self.directory, "gobgpd.toml")
        with open(path, "w") as file:
            file.write("\n".join(lines) + "\n")
        with open(os.path.join(self.directory, "gobgpd.log"), "ab") as log:
            self.process = subprocess.Popen(
                [
                    "nsenter",
                    f"--net=/var/run/netns/{self.namespace}",
                    "gobgpd",
                    "-f",
                    path,
                    "--api-hosts",
                    "127.0.0.1:50051",
                    "--log-level",
                    "info",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def _gobgp(self, *args: str) -> Any:
        output = netns_exec(self.namespace, "gobgp", "-u", "127.0.0.1", "-p", "50051", "-j", *args)
        return json.loads(output or "null")

    def prefixes(self, family: str = "ipv4") -> set[str]:
        try:
            rib = self._gobgp("global", "rib", "-a", family)
        except (RuntimeError, ValueError):
            return set()
        return set(rib or {})

    def established(self) -> set[str]:
        try:
            neighbors = self._gobgp("neighbor")
        except (RuntimeError, ValueError):
            return set()
        found = set()
        for neighbor in neighbors or []:
            state = neighbor.get("state", {})
            if state.get("session_state") in (6, "established", "ESTABLISHED"):
                found.add(neighbor.get("conf", {}).get("neighbor_address", ""))
        return found

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
