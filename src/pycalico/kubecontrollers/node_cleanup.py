"""Everything that hangs on a Calico Node, removed once its Kubernetes node is gone (Calico's
``clientv3`` node delete, as kube-controllers' node controller triggers it).

``remove_node(store, gc, node)`` removes, in this order: the node's IPAM addresses (pods' and
tunnel addresses: every allocation whose ``node`` attribute names it, released by the IPAM GC's
own re-checked, sequence-checked release, which also counts down and removes their handles);
its block affinities (``IPAM.release_host_affinities``: empty blocks are deleted, blocks still
holding other nodes' borrowed addresses lose their affinity); its WorkloadEndpoints; the
BGPPeers with ``spec.node`` naming it; ``FelixConfiguration``/``BGPConfiguration``
``node.<name>``; its HostEndpoints; and last the Node itself, deleted at the revision the caller
read (a Node that changed meanwhile -- calico-node came back -- stays, and the caller's worker
re-checks Kubernetes).

Not here: deciding that a node is gone (``node``: a list, then a live read that answers 404).
Invariants: an object already gone counts as removed (the steps can be repeated after a crash);
the Node goes last, so a crash leaves it behind to be found by the next sweep.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass

from pycalico.datastore.api import KeyNotFound
from pycalico.datastore.resources import ResourceStore
from pycalico.kubecontrollers.ipam_gc import IPAMGarbageCollector
from pycalico.model.meta import Resource
from pycalico.model.node import Node

log = logging.getLogger(__name__)

# Kinds whose objects carry ``spec.node``: removed with their node.
NODE_SCOPED_KINDS = ("WorkloadEndpoint", "BGPPeer", "HostEndpoint")
# Kinds with a per-node object named ``node.<name>``.
PER_NODE_CONFIG_KINDS = ("FelixConfiguration", "BGPConfiguration")


@dataclass
class Removed:
    addresses: int = 0
    affinities: int = 0
    objects: int = 0


async def _delete(store: ResourceStore, resource: Resource) -> bool:
    with contextlib.suppress(KeyNotFound):
        await store.delete(
            resource.kind or type(resource).KIND,
            resource.metadata.name,
            resource.metadata.namespace,
        )
        return True
    return False


async def _node_scoped(store: ResourceStore, kind: str, node: str) -> list[Resource]:
    listed = await store.list(kind)
    return [
        item for item in listed.items if getattr(getattr(item, "spec", None), "node", None) == node
    ]


async def remove_node(store: ResourceStore, gc: IPAMGarbageCollector, node: Node) -> Removed:
    """Remove ``node``'s data and then ``node`` (at its revision); see the module docstring."""
    name = node.metadata.name
    removed = Removed()
    removed.addresses = await gc.release_node_addresses(name)
    removed.affinities = await gc.ipam.release_host_affinities(name, require_empty=False)
    for kind in NODE_SCOPED_KINDS:
        for item in await _node_scoped(store, kind, name):
            removed.objects += await _delete(store, item)
    for kind in PER_NODE_CONFIG_KINDS:
        with contextlib.suppress(KeyNotFound):
            await store.delete(kind, f"node.{name}")
            removed.objects += 1
    with contextlib.suppress(KeyNotFound):
        await store.delete("Node", name, revision=node.metadata.resource_version)
    log.info(
        "node controller: removed Calico node %s (%d addresses, %d block affinities, %d objects)",
        name,
        removed.addresses,
        removed.affinities,
        removed.objects,
    )
    return removed
