"""The ML2 mechanism driver ``calico``: Calico as the network implementation of Neutron.

What it is: the Neutron glue.  It binds ports on ``local`` and ``flat`` segments as routed
``tap`` VIFs (no Neutron agent involved), writes each change to etcd after Neutron commits it
(ports -> WorkloadEndpoints, security groups -> ``ossg.default.<id>`` policies, DHCP subnets),
and starts ``background.Background`` in each neutron-server worker: the elected leader resyncs
etcd to Neutron every ``[calico] resync_interval`` seconds and turns Felix's endpoint status into
Neutron port status.  Loaded by ML2 through the ``neutron.ml2.mechanism_drivers`` entry point.

What it is not: the translation (``translate``, pure) or etcd access (``etcd_gateway``).  It
runs inside Neutron's own virtualenv, so it imports only Neutron, the standard library and the
``pycalico.openstack`` modules (import contract ``openstack``).

Invariants: etcd is written only in post-commit hooks and callbacks that run after the
transaction; a status-only port update writes nothing; a port that loses its binding or moves
to another host loses its old endpoint; any etcd failure is logged and left to the resync.
"""
# mypy: disable-error-code="misc"
# (Neutron ships no type information: its base classes are ``Any`` to mypy.)

from __future__ import annotations

import logging
import os
from typing import Any

from neutron_lib import context as n_context
from neutron_lib.callbacks import events, registry, resources
from neutron_lib.plugins import directory
from neutron_lib.plugins.ml2 import api
from oslo_config import cfg

from pycalico.openstack import translate
from pycalico.openstack.background import Background
from pycalico.openstack.etcd_gateway import EtcdError, EtcdGateway

log = logging.getLogger(__name__)

OPTIONS = [
    cfg.ListOpt("etcd_endpoints", default=["http://127.0.0.1:2379"],
                help="etcd client URLs (the v3 JSON gateway is used)"),
    cfg.FloatOpt("resync_interval", default=60.0,
                 help="Seconds between the leader's resyncs of etcd to Neutron"),
    cfg.IntOpt("election_ttl", default=15, help="Lease of the leader key, seconds"),
]  # fmt: skip
# Port fields whose change alone does not alter the endpoint.
_NOISE = ("status", "revision_number", "updated_at", "binding:vif_details")
BINDABLE = ("local", "flat")


class CalicoMechanismDriver(api.MechanismDriver):
    def initialize(self) -> None:
        cfg.CONF.register_opts(OPTIONS, "calico")
        conf = cfg.CONF.calico
        self.etcd = EtcdGateway(list(conf.etcd_endpoints))
        self.background: Background | None = None
        self._pid = 0
        registry.subscribe(self._after_init, resources.PROCESS, events.AFTER_INIT)
        for resource in (resources.SECURITY_GROUP, resources.SECURITY_GROUP_RULE):
            for event in (events.AFTER_CREATE, events.AFTER_UPDATE, events.AFTER_DELETE):
                registry.subscribe(self._security_group_changed, resource, event)
        log.info("calico: mechanism driver initialised, etcd %s", conf.etcd_endpoints)

    # --- background work, once per worker process -------------------------------------

    def _after_init(self, resource: Any, event: Any, trigger: Any, payload: Any = None) -> None:
        self.start_background()

    def start_background(self) -> None:
        if self._pid == os.getpid():
            return
        self._pid = os.getpid()
        conf = cfg.CONF.calico
        self.background = Background(self.etcd, self.desired, self.set_status,
                                     conf.resync_interval, conf.election_ttl)  # fmt: skip
        self.background.start()

    @property
    def plugin(self) -> Any:
        return directory.get_plugin()

    def set_status(self, port_id: str, status: str) -> None:
        """Neutron's port status from Felix's; a port that is gone is not an error."""
        self.plugin.update_port_status(n_context.get_admin_context(), port_id, status)

    # --- binding -----------------------------------------------------------------------

    def bind_port(self, context: Any) -> None:
        for segment in context.segments_to_bind:
            if segment[api.NETWORK_TYPE] in BINDABLE:
                context.set_binding(segment[api.ID], translate.VIF_TYPE,
                                    dict(translate.VIF_DETAILS))  # fmt: skip
                return

    # --- ports -------------------------------------------------------------------------

    def _endpoint(self, ctx: Any, port: dict[str, Any]) -> dict[str, Any] | None:
        if translate.bound_host(port) is None:
            return None
        plugin = self.plugin
        subnet_ids = [fixed["subnet_id"] for fixed in port.get("fixed_ips") or ()]
        subnets = plugin.get_subnets(ctx, filters={"id": subnet_ids}) if subnet_ids else []
        sgids = list(port.get("security_groups") or ())
        groups = plugin.get_security_groups(ctx, filters={"id": sgids}, default_sg=True) if sgids else []  # fmt: skip
        for sgid in sgids:
            self._write_policy(ctx, sgid)
        return translate.endpoint(
            port,
            gateways={s["id"]: s.get("gateway_ip") for s in subnets},
            sg_names={g["id"]: g.get("name") or "" for g in groups},
            floating_ips=self._floating_ips(ctx, port["id"]),
        )

    def _floating_ips(self, ctx: Any, port_id: str | None = None) -> list[tuple[str, str]]:
        l3 = directory.get_plugin("L3_ROUTER_NAT")
        if l3 is None:
            return []
        filters = {"port_id": [port_id]} if port_id else {}
        return [(f["fixed_ip_address"], f["floating_ip_address"])
                for f in l3.get_floatingips(ctx, filters=filters) if f.get("fixed_ip_address")]  # fmt: skip

    def _write_port(self, ctx: Any, port: dict[str, Any], old: dict[str, Any] | None) -> None:
        key = translate.endpoint_key(port)
        old_key = translate.endpoint_key(old) if old else None
        try:
            if old_key and old_key != key:
                self.etcd.delete(old_key)
            wep = self._endpoint(ctx, port) if key else None
            if key and wep is not None:
                self.etcd.put(key, translate.encode(wep))
                if self.background is not None:
                    self.background.forget(port["id"])
        except EtcdError as error:
            log.warning("calico: port %s not written (the resync will): %s", port["id"], error)

    def create_port_postcommit(self, context: Any) -> None:
        self._write_port(context._plugin_context, context.current, None)

    def update_port_postcommit(self, context: Any) -> None:
        old, new = context.original or {}, context.current
        if {k: v for k, v in old.items() if k not in _NOISE} == {
            k: v for k, v in new.items() if k not in _NOISE
        }:
            return  # status-only (e.g. our own ACTIVE): nothing to write
        self._write_port(context._plugin_context, new, old)

    def delete_port_postcommit(self, context: Any) -> None:
        key = translate.endpoint_key(context.current)
        if key:
            try:
                self.etcd.delete(key)
            except EtcdError as error:
                log.warning("calico: endpoint %s not deleted (the resync will): %s", key, error)

    # --- subnets -----------------------------------------------------------------------

    def _write_subnet(self, sub: dict[str, Any], deleted: bool = False) -> None:
        value = None if deleted else translate.subnet(sub)
        try:
            if value is None:
                self.etcd.delete(translate.subnet_key(sub["id"]))
            else:
                self.etcd.put(translate.subnet_key(sub["id"]), translate.encode(value))
        except EtcdError as error:
            log.warning("calico: subnet %s not written (the resync will): %s", sub["id"], error)

    def create_subnet_postcommit(self, context: Any) -> None:
        self._write_subnet(context.current)

    def update_subnet_postcommit(self, context: Any) -> None:
        self._write_subnet(context.current)

    def delete_subnet_postcommit(self, context: Any) -> None:
        self._write_subnet(context.current, deleted=True)

    # --- security groups ---------------------------------------------------------------

    def _write_policy(self, ctx: Any, sgid: str) -> None:
        rules = self.plugin.get_security_group_rules(ctx, filters={"security_group_id": [sgid]})
        self.etcd.put(translate.policy_key(sgid), translate.encode(translate.policy(sgid, rules)))

    def _security_group_changed(self, resource: Any, event: Any, trigger: Any,
                                payload: Any = None) -> None:  # fmt: skip
        if payload is None:
            return
        state = payload.latest_state or {}
        if resource == resources.SECURITY_GROUP:
            sgid = payload.resource_id
        else:
            sgid = (payload.metadata or {}).get("security_group_id") or state.get("security_group_id")  # fmt: skip
        if not sgid:
            return
        try:
            if resource == resources.SECURITY_GROUP and event == events.AFTER_DELETE:
                self.etcd.delete(translate.policy_key(sgid))
            else:
                self._write_policy(n_context.get_admin_context(), sgid)
        except EtcdError as error:
            log.warning("calico: policy for %s not written (the resync will): %s", sgid, error)

    # --- the mirror's view of Neutron --------------------------------------------------

    def desired(self) -> dict[str, dict[str, Any]]:
        """Every object etcd should hold, from Neutron's database (the resync's target)."""
        ctx = n_context.get_admin_context()
        plugin = self.plugin
        subnets = plugin.get_subnets(ctx)
        groups = plugin.get_security_groups(ctx, default_sg=True)
        rules = plugin.get_security_group_rules(ctx)
        gateways = {s["id"]: s.get("gateway_ip") for s in subnets}
        names = {g["id"]: g.get("name") or "" for g in groups}
        nats: dict[str, list[tuple[str, str]]] = {}
        for inner, outer, port_id in self._floating_ips_by_port(ctx):
            nats.setdefault(port_id, []).append((inner, outer))
        out: dict[str, dict[str, Any]] = {}
        for group in groups:
            out[translate.policy_key(group["id"])] = translate.policy(group["id"], rules)
        for sub in subnets:
            if (value := translate.subnet(sub)) is not None:
                out[translate.subnet_key(sub["id"])] = value
        for port in plugin.get_ports(ctx):
            key = translate.endpoint_key(port)
            wep = translate.endpoint(port, gateways=gateways, sg_names=names,
                                     floating_ips=nats.get(port["id"], ()))  # fmt: skip
            if key and wep is not None:
                out[key] = wep
        return out

    def _floating_ips_by_port(self, ctx: Any) -> list[tuple[str, str, str]]:
        l3 = directory.get_plugin("L3_ROUTER_NAT")
        if l3 is None:
            return []
        return [(f["fixed_ip_address"], f["floating_ip_address"], f["port_id"])
                for f in l3.get_floatingips(ctx) if f.get("port_id")]  # fmt: skip
