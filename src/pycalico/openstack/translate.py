"""Neutron objects -> Calico's data model, as networking-calico writes it (pure).

What it is: the translation of Neutron port, security-group and subnet dicts (the API shapes
Neutron's plugin returns) into Calico v3 resources as JSON-ready dicts and their etcd keys:

* a bound VM port -> WorkloadEndpoint ``<host>-openstack-<device>-<port>`` (each part's ``-``
  doubled, as Calico derives the name) in namespace ``openstack``: interface ``tap<port id[:11]>``, MAC, /32 and /128
  addresses, gateways, allowed address pairs, floating IPs as ``ipNATs``, security-group labels
  ``sg.projectcalico.org/openstack-<sgid>`` (value: the group's sanitised name) plus
  ``sg-name.projectcalico.org/openstack-<name>``, project labels, the network in an annotation;
* a security group -> NetworkPolicy ``ossg.default.<sgid>`` in namespace ``openstack``,
  selecting ``has(sg.projectcalico.org/openstack-<sgid>)``, one Allow rule per Neutron rule;
* a subnet -> Calico's DHCP view, ``/calico/dhcp/v2/no-region/subnet/<id>``;
* Felix's endpoint status value -> Neutron's port status.

What it is not: I/O.  It imports only the standard library, because it runs inside Neutron's
own virtualenv (the ``openstack`` import contract); the tests check its output against
``pycalico.model``'s codec instead.

Invariants: equal inputs give equal output (sorted labels, rules in Neutron's order), so the
mirror can compare stored and desired objects field by field; every key built here is one that
``owned_key`` recognises, and nothing else is.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

NAMESPACE = "openstack"
RESOURCES = "/calico/resources/v3/projectcalico.org/"
WEP_PREFIX = f"{RESOURCES}workloadendpoints/{NAMESPACE}/"
POLICY_PREFIX = f"{RESOURCES}networkpolicies/{NAMESPACE}/"
SUBNET_PREFIX = "/calico/dhcp/v2/no-region/subnet/"
SG_POLICY_PREFIX = "ossg.default."
SG_LABEL_PREFIX = "sg.projectcalico.org/openstack-"
SG_NAME_LABEL_PREFIX = "sg-name.projectcalico.org/openstack-"
PROJECT_ID_LABEL = "projectcalico.org/openstack-project-id"
NETWORK_ANNOTATION = "openstack.projectcalico.org/network-id"
LABEL_VALUE_MAX = 63
SG_NAME_MAX = LABEL_VALUE_MAX - len(SG_NAME_LABEL_PREFIX) + len("sg-name.projectcalico.org/")
# The VIF binding networking-calico reports to Nova: a routed tap device with a fixed MAC for
# the host side (every VM's gateway answers from it).
VIF_TYPE = "tap"
VIF_DETAILS = {"port_filter": True, "mac_address": "00:61:fe:ed:ca:fe"}
PORT_STATUS = {"up": "ACTIVE", "down": "DOWN", "error": "ERROR"}
_PROTOCOLS = {"tcp": "TCP", "udp": "UDP", "icmp": "ICMP", "sctp": "SCTP", "udplite": "UDPLite"}
_BAD_LABEL_CHARS = re.compile(r"[^A-Za-z0-9_.-]")

JSON = dict[str, Any]


def interface_name(port_id: str) -> str:
    return "tap" + port_id[:11]


def endpoint_name(host: str, device_id: str, port_id: str) -> str:
    host, device_id, port_id = (part.replace("-", "--") for part in (host, device_id, port_id))
    return f"{host}-openstack-{device_id}-{port_id}"


def sanitize_label_value(value: str, max_length: int = LABEL_VALUE_MAX) -> str:
    """A Kubernetes-valid label value: bad characters become ``_``, trimmed to ``max_length``
    and to alphanumeric ends."""
    cleaned = _BAD_LABEL_CHARS.sub("_", value)[:max_length]
    return cleaned.strip("_.-")


def is_vm_port(port: Mapping[str, Any]) -> bool:
    owner = str(port.get("device_owner") or "")
    return owner.startswith("compute:") or owner.startswith("kuryr:container")


def bound_host(port: Mapping[str, Any]) -> str | None:
    """The host a VM port is bound to, or None: unbound, failed binding, or not a VM port."""
    host = port.get("binding:host_id") or ""
    vif = port.get("binding:vif_type") or ""
    if not host or vif in ("unbound", "binding_failed") or not is_vm_port(port):
        return None
    return str(host)


def endpoint_key(port: Mapping[str, Any]) -> str | None:
    host = bound_host(port)
    if host is None:
        return None
    return WEP_PREFIX + endpoint_name(host, str(port["device_id"]), str(port["id"]))


def _addresses(port: Mapping[str, Any], gateways: Mapping[str, str | None]) -> JSON:
    spec: JSON = {}
    nets: list[str] = []
    for fixed in port.get("fixed_ips") or ():
        address = str(fixed["ip_address"])
        v6 = ":" in address
        nets.append(address + ("/128" if v6 else "/32"))
        gateway = gateways.get(str(fixed.get("subnet_id")))
        if gateway:
            spec["ipv6Gateway" if v6 else "ipv4Gateway"] = gateway
    # Allowed address pairs are routed to the VM like its fixed IPs.  (networking-calico also
    # copies them to ``allowedIps``; pycalico's WorkloadEndpoint has no such field.)  A pair
    # that names a whole prefix is skipped: an endpoint holds single addresses only.
    for pair in port.get("allowed_address_pairs") or ():
        address = str(pair["ip_address"])
        if "/" not in address:
            nets.append(address + ("/128" if ":" in address else "/32"))
    spec["ipNetworks"] = nets
    return spec


def endpoint_labels(port: Mapping[str, Any], sg_names: Mapping[str, str]) -> dict[str, str]:
    labels = {
        "projectcalico.org/namespace": NAMESPACE,
        "projectcalico.org/orchestrator": "openstack",
    }
    for sgid in port.get("security_groups") or ():
        name = sanitize_label_value(sg_names.get(sgid, ""), SG_NAME_MAX)
        labels[SG_LABEL_PREFIX + sgid] = name
        if name:
            labels[SG_NAME_LABEL_PREFIX + name] = sgid
    project = port.get("project_id") or port.get("tenant_id")
    if project:
        labels[PROJECT_ID_LABEL] = str(project)
    return dict(sorted(labels.items()))


def endpoint(
    port: Mapping[str, Any],
    *,
    gateways: Mapping[str, str | None] = {},
    sg_names: Mapping[str, str] = {},
    floating_ips: Iterable[tuple[str, str]] = (),
) -> JSON | None:
    """The WorkloadEndpoint for ``port``, or None when it should have none (unbound, not a VM).
    ``gateways``: subnet id -> gateway IP; ``floating_ips``: (fixed IP, floating IP) pairs."""
    host = bound_host(port)
    if host is None:
        return None
    port_id, device = str(port["id"]), str(port["device_id"])
    spec: JSON = {
        "orchestrator": "openstack",
        "workload": device,
        "node": host,
        "endpoint": port_id,
        "interfaceName": interface_name(port_id),
        "mac": str(port["mac_address"]),
    }
    spec.update(_addresses(port, gateways))
    nats = [{"internalIP": inner, "externalIP": outer} for inner, outer in floating_ips]
    if nats:
        spec["ipNATs"] = nats
    metadata = {
        "name": endpoint_name(host, device, port_id),
        "namespace": NAMESPACE,
        "labels": endpoint_labels(port, sg_names),
        "annotations": {NETWORK_ANNOTATION: str(port.get("network_id") or "")},
    }
    return {"apiVersion": "projectcalico.org/v3", "kind": "WorkloadEndpoint",
            "metadata": metadata, "spec": spec}  # fmt: skip


def policy_name(sgid: str) -> str:
    return SG_POLICY_PREFIX + sgid


def policy_key(sgid: str) -> str:
    return POLICY_PREFIX + policy_name(sgid)


def _icmp(rule: Mapping[str, Any]) -> JSON:
    fields: JSON = {}
    if rule.get("port_range_min") not in (None, -1):
        fields["type"] = int(rule["port_range_min"])
    if rule.get("port_range_max") not in (None, -1):
        fields["code"] = int(rule["port_range_max"])
    return fields


def _protocol(protocol: Any, v6: bool) -> str | int | None:
    if protocol in (None, -1, 0, "any", "0"):
        return None
    if protocol in ("icmp", "ipv6-icmp", "icmpv6", 1, 58, "1", "58"):
        return "ICMPv6" if v6 else "ICMP"
    if isinstance(protocol, int) or str(protocol).isdigit():
        return int(protocol)
    return _PROTOCOLS.get(str(protocol).lower(), str(protocol).upper())


def _ports(rule: Mapping[str, Any]) -> list[int | str] | None:
    low, high = rule.get("port_range_min"), rule.get("port_range_max")
    if low is None or low == -1:
        return None
    if high is None or low == high:
        return [int(low)]
    return [f"{int(low)}:{int(high)}"]


def policy_rule(rule: Mapping[str, Any]) -> JSON:
    """One Neutron security-group rule as a Calico Allow rule."""
    v6 = rule.get("ethertype") == "IPv6"
    out: JSON = {"action": "Allow", "ipVersion": 6 if v6 else 4}
    protocol = _protocol(rule.get("protocol"), v6)
    if protocol is not None:
        out["protocol"] = protocol
    peer: JSON = {}
    if rule.get("remote_group_id"):
        peer["selector"] = f"has({SG_LABEL_PREFIX}{rule['remote_group_id']})"
    if rule.get("remote_ip_prefix"):
        peer["nets"] = [str(rule["remote_ip_prefix"])]
    if protocol in ("ICMP", "ICMPv6"):
        if icmp := _icmp(rule):
            out["icmp"] = icmp
    elif (ports := _ports(rule)) is not None:
        out["destination"] = {"ports": ports}
    ingress = rule.get("direction") == "ingress"
    if peer and ingress:
        out["source"] = peer
    elif peer:
        out["destination"] = {**out.get("destination", {}), **peer}
    return out


def policy(sgid: str, rules: Iterable[Mapping[str, Any]]) -> JSON:
    """The NetworkPolicy for security group ``sgid`` from its rules (others are ignored)."""
    mine = [rule for rule in rules if rule.get("security_group_id") == sgid]
    ingress = [policy_rule(r) for r in mine if r.get("direction") == "ingress"]
    egress = [policy_rule(r) for r in mine if r.get("direction") != "ingress"]
    spec: JSON = {"selector": f"has({SG_LABEL_PREFIX}{sgid})", "types": ["Ingress", "Egress"],
                  "ingress": ingress, "egress": egress}  # fmt: skip
    return {"apiVersion": "projectcalico.org/v3", "kind": "NetworkPolicy",
            "metadata": {"name": policy_name(sgid), "namespace": NAMESPACE}, "spec": spec}  # fmt: skip


def subnet_key(subnet_id: str) -> str:
    return SUBNET_PREFIX + subnet_id


def subnet(sub: Mapping[str, Any]) -> JSON | None:
    """Calico's DHCP view of a subnet (only DHCP-enabled subnets are written)."""
    if not sub.get("enable_dhcp"):
        return None
    return {
        "network_id": str(sub["network_id"]),
        "cidr": str(sub["cidr"]),
        "gateway_ip": sub.get("gateway_ip"),
        "host_routes": list(sub.get("host_routes") or []),
        "dns_servers": list(sub.get("dns_nameservers") or []),
    }


def owned_key(key: str) -> bool:
    """Whether the mirror owns ``key``: OpenStack endpoints, ``ossg.`` policies, DHCP subnets."""
    if key.startswith(WEP_PREFIX) or key.startswith(SUBNET_PREFIX):
        return True
    return key.startswith(POLICY_PREFIX + SG_POLICY_PREFIX)


def comparable(value: bytes | str) -> Any:
    """A stored value reduced to what the mirror writes (metadata noise such as uid or
    creationTimestamp dropped), for deciding whether it needs rewriting."""
    try:
        data = json.loads(value)
    except ValueError:
        return None
    if isinstance(data, dict) and isinstance(data.get("metadata"), dict):
        meta = data["metadata"]
        data["metadata"] = {k: meta[k] for k in ("name", "namespace", "labels", "annotations")
                            if meta.get(k)}  # fmt: skip
    return data


def encode(obj: JSON) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def port_status(status_value: bytes | str | None) -> str:
    """Felix's endpoint status JSON (``{"status": "up"}``) -> Neutron port status; a missing
    or unreadable status is ERROR (as networking-calico reports it)."""
    if status_value is None:
        return "ERROR"
    try:
        status = json.loads(status_value).get("status")
    except (ValueError, AttributeError):
        return "ERROR"
    return PORT_STATUS.get(str(status), "ERROR")


def status_key_port(key: str) -> tuple[str, str] | None:
    """``(host, port id)`` from an OpenStack endpoint status key under ``/calico/felix/v2/``."""
    parts = key.split("/")
    # ['', 'calico', 'felix', 'v2', region, 'host', host, 'workload', 'openstack', wl,
    #  'endpoint', port]
    if len(parts) != 12 or parts[5] != "host" or parts[7:9] != ["workload", "openstack"]:
        return None
    if parts[10] != "endpoint":
        return None
    return parts[6], parts[11]
