"""etcd as a mirror of Neutron: the resync plan (pure) and its application, and the leader lease.

What it is: ``plan`` compares what Neutron says should exist (key -> object) with what etcd
holds under the mirror's prefixes and returns the writes that make etcd equal Neutron; ``apply``
carries them out with compare-and-swap, so a concurrent write by the driver's own post-commit
path is never overwritten by a stale resync; ``Election`` holds the leader key under a lease.
What it is not: the Neutron side (``mech_driver`` gathers the desired objects).

Invariants: only keys that ``translate.owned_key`` accepts are ever deleted; a stored value
that equals the desired one (``translate.comparable``) is not rewritten; ``Election`` is leader
only while its lease is alive, and ``resign`` frees the key for the next candidate at once.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pycalico.openstack import translate
from pycalico.openstack.etcd_gateway import EtcdError, EtcdGateway, KeyValue

log = logging.getLogger(__name__)

PREFIXES = (translate.WEP_PREFIX, translate.POLICY_PREFIX + translate.SG_POLICY_PREFIX,
            translate.SUBNET_PREFIX)  # fmt: skip
ELECTION_KEY = "/calico/openstack/v1/neutron_election"


@dataclass
class Plan:
    create: dict[str, str] = field(default_factory=dict)
    update: dict[str, tuple[str, int]] = field(default_factory=dict)  # key -> (value, revision)
    delete: dict[str, int] = field(default_factory=dict)  # key -> mod revision

    def __len__(self) -> int:
        return len(self.create) + len(self.update) + len(self.delete)


def plan(desired: Mapping[str, dict[str, Any]], stored: Mapping[str, KeyValue]) -> Plan:
    """The writes that turn ``stored`` into ``desired``; ``stored`` keys not owned by the
    mirror are left alone."""
    out = Plan()
    for key, obj in desired.items():
        value = translate.encode(obj)
        have = stored.get(key)
        if have is None:
            out.create[key] = value
        elif translate.comparable(have.value) != translate.comparable(value):
            out.update[key] = (value, have.mod_revision)
    for key, have in stored.items():
        if key not in desired and translate.owned_key(key):
            out.delete[key] = have.mod_revision
    return out


def stored_objects(etcd: EtcdGateway) -> dict[str, KeyValue]:
    found: dict[str, KeyValue] = {}
    for prefix in PREFIXES:
        items, _ = etcd.get_prefix(prefix)
        found.update((item.key, item) for item in items)
    return found


def apply(etcd: EtcdGateway, todo: Plan) -> int:
    """Carry out ``todo``; returns the writes that took effect (a lost compare-and-swap means
    someone wrote meanwhile, and the next resync looks again)."""
    done = 0
    for key, value in todo.create.items():
        done += etcd.put_if(key, value, 0)
    for key, (value, revision) in todo.update.items():
        done += etcd.put_if(key, value, revision)
    for key, revision in todo.delete.items():
        done += etcd.delete_if(key, revision)
    return done


def resync(etcd: EtcdGateway, desired: Mapping[str, dict[str, Any]]) -> Plan:
    todo = plan(desired, stored_objects(etcd))
    if todo:
        log.info("resync: %d created, %d updated, %d deleted", len(todo.create),
                 len(todo.update), len(todo.delete))  # fmt: skip
    apply(etcd, todo)
    return todo


class Election:
    """One leader among neutron-server processes (and servers): the holder of ``ELECTION_KEY``,
    written under a lease of ``ttl`` seconds and refreshed by ``campaign``."""

    def __init__(self, etcd: EtcdGateway, ttl: int = 15, key: str = ELECTION_KEY) -> None:
        self.etcd = etcd
        self.ttl = ttl
        self.key = key
        self.identity = f"{socket.gethostname()}:{os.getpid()}"
        self.lease = 0

    def campaign(self) -> bool:
        """One round: keep or take the leadership; True while this process leads."""
        try:
            if self.lease and self.etcd.refresh(self.lease):
                held = self.etcd.get(self.key)
                if held is not None and held.value.decode() == self.identity:
                    return True
            self.lease = self.etcd.grant(self.ttl)
            if self.etcd.put_if(self.key, self.identity, 0, lease=self.lease):
                return True
            self.etcd.revoke(self.lease)
            self.lease = 0
            return False
        except EtcdError as error:
            log.warning("election: %s", error)
            self.lease = 0
            return False

    def resign(self) -> None:
        if self.lease:
            try:
                self.etcd.revoke(self.lease)
            except EtcdError as error:
                log.warning("election: resign: %s", error)
            self.lease = 0
