"""Kubernetes NetworkPolicy to Calico NetworkPolicy, as kube-controllers writes it.

Calico's facts followed here (libcalico-go's conversion and kube-controllers' policy converter):

* The result is a NetworkPolicy ``knp.default.<name>`` in the Kubernetes policy's namespace,
  tier ``default``, order 1000, selector = the ``podSelector`` rendered with the orchestrator
  clause (``selectors``).  Only name and namespace are kept in its metadata.
* Each ingress (egress) rule becomes Allow rules: one per protocol (sorted by Calico's protocol
  name) times one per peer (in order).  The peer goes on the source for ingress, on the
  destination for egress; the ports always go on the destination.
* A port without a protocol is TCP.  Ports are grouped per protocol and merged into ranges
  (``ports.simplify_ports``); a port entry without a port number allows every port of its
  protocol, whatever other entries say.  No ports at all: no protocol, no ports.  No peers:
  any peer.
* A peer with an ``ipBlock`` gives ``nets: [cidr]`` and ``notNets: except`` (normalised to the
  network address) and no selectors.  A CIDR that does not parse leaves the peer empty (that is,
  any peer) and an ``except`` that does not parse ends the ``notNets`` there; the API server
  validates these fields, so neither reaches kube-controllers from a real cluster.
* Otherwise the peer's ``podSelector`` becomes ``selector`` (with the orchestrator clause, even
  when only a ``namespaceSelector`` was given) and its ``namespaceSelector`` becomes
  ``namespaceSelector`` (absent: same namespace; empty: ``all()``).
* ``types``: Ingress and/or Egress as listed in ``policyTypes`` (always in that order); none
  listed means [Ingress].  Egress rules are kept even when Egress is not listed (Calico warns).
* A Kubernetes rule with a port Calico cannot parse is dropped whole, with the reason; the rest
  of the policy is still converted and written (kube-controllers ignores the conversion error).
  A rule our model refuses (e.g. port 0) is dropped the same way.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import ValidationError

from pycalico.k8s.conversion.objects import (
    ConversionError,
    KubeObject,
    name_of,
    namespace_of,
    spec_of,
)
from pycalico.k8s.conversion.ports import (
    PortError,
    PortValue,
    parse_port,
    protocol_name,
    simplify_ports,
)
from pycalico.k8s.conversion.selectors import namespace_selector, pod_selector
from pycalico.model.policy import DEFAULT_TIER, NetworkPolicy
from pycalico.model.rules import Rule

log = logging.getLogger(__name__)

POLICY_NAME_PREFIX = "knp.default."
POLICY_ORDER = 1000.0
Direction = Literal["ingress", "egress"]
_PEERS: dict[Direction, str] = {"ingress": "from", "egress": "to"}


@dataclass(frozen=True)
class DroppedRule:
    """A Kubernetes rule left out of the Calico policy, and why."""

    direction: Direction
    index: int
    reason: str

    def __str__(self) -> str:
        return f"spec.{self.direction}[{self.index}]: {self.reason}"


@dataclass(frozen=True)
class ConvertedPolicy:
    policy: NetworkPolicy
    dropped: tuple[DroppedRule, ...] = ()


def policy_name(kubernetes_name: str) -> str:
    """The Calico name of the Kubernetes NetworkPolicy ``kubernetes_name``."""
    return POLICY_NAME_PREFIX + kubernetes_name


def kubernetes_name(calico_name: str) -> str | None:
    """The Kubernetes policy a Calico policy was converted from, or None if it was not."""
    if not calico_name.startswith(POLICY_NAME_PREFIX):
        return None
    return calico_name.removeprefix(POLICY_NAME_PREFIX) or None


def _network(text: object) -> str | None:
    """Go's ParseCIDR: ``address/prefix`` (digits only), normalised to the network."""
    if not isinstance(text, str) or "%" in text:
        return None
    _, slash, prefix = text.partition("/")
    if not slash or not prefix.isascii() or not prefix.isdigit():
        return None
    try:
        return str(ipaddress.ip_network(text, strict=False))
    except ValueError:
        return None


def _peer_fields(peer: Mapping[str, Any] | None) -> dict[str, Any]:
    if peer is None:
        return {}
    block = peer.get("ipBlock")
    if block is not None:
        cidr = _network(block.get("cidr"))
        if cidr is None:
            log.error("ipBlock CIDR %r does not parse: the peer matches any address", block)
            return {}
        fields: dict[str, Any] = {"nets": [cidr]}
        not_nets: list[str] = []
        for text in block.get("except") or ():
            network = _network(text)
            if network is None:
                log.error("ipBlock except %r does not parse: later excepts are ignored", text)
                break
            not_nets.append(network)
        if not_nets:
            fields["notNets"] = not_nets
        return fields
    fields = {"selector": pod_selector(peer.get("podSelector"))}
    namespaces = namespace_selector(peer.get("namespaceSelector"))
    if namespaces:
        fields["namespaceSelector"] = namespaces
    return fields


def _port_text(entry: Mapping[str, Any]) -> str | None:
    port = entry.get("port")
    if port is None:
        return None
    text = str(port)
    if entry.get("endPort") is not None:
        text = f"{text}:{entry['endPort']}"
    return text


def _ports_by_protocol(entries: Sequence[Mapping[str, Any]]) -> dict[str, list[PortValue] | None]:
    """Protocol (``""``: none) -> its ports (None: every port).  Raises PortError."""
    if not entries:
        return {"": None}
    grouped: dict[str, list[PortValue] | None] = {}
    for index, entry in enumerate(entries):
        protocol = protocol_name(str(entry.get("protocol") or "TCP"))
        text = _port_text(entry)
        if text is None:
            grouped[protocol] = None  # every port of the protocol: absorbs the others
            continue
        try:
            port = parse_port(text)
        except PortError as error:
            raise PortError(f"ports[{index}]: {error}") from error
        if protocol not in grouped:
            grouped[protocol] = [port]
        elif (known := grouped[protocol]) is not None:
            known.append(port)
    return grouped


def _rules(rule: Mapping[str, Any], direction: Direction) -> list[Rule]:
    """The Calico rules of one Kubernetes rule.  Raises PortError or ValidationError."""
    peers: list[Mapping[str, Any] | None] = list(rule.get(_PEERS[direction]) or ()) or [None]
    grouped = _ports_by_protocol(rule.get("ports") or ())
    rules: list[Rule] = []
    for protocol in sorted(grouped):
        ports = grouped[protocol]
        ports = simplify_ports(ports) if ports else None
        for peer in peers:
            peer_fields = _peer_fields(peer)
            ports_field = {"ports": ports} if ports else {}
            wire: dict[str, Any] = {"action": "Allow"}
            if protocol:
                wire["protocol"] = protocol
            if direction == "ingress":
                wire["source"] = peer_fields
                wire["destination"] = ports_field
            else:
                wire["source"] = {}
                wire["destination"] = {**ports_field, **peer_fields}
            rules.append(Rule.model_validate(wire))
    return rules


def _direction_rules(
    spec: Mapping[str, Any], direction: Direction, dropped: list[DroppedRule]
) -> list[Rule]:
    converted: list[Rule] = []
    for index, rule in enumerate(spec.get(direction) or ()):
        try:
            converted += _rules(rule, direction)
        except (PortError, ValidationError) as error:
            reason = str(error) if isinstance(error, PortError) else _first_problem(error)
            dropped.append(DroppedRule(direction, index, reason))
    return converted


def _first_problem(error: ValidationError) -> str:
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"])
    return f"{where}: {first['msg']}"


def _types(spec: Mapping[str, Any]) -> list[str]:
    listed = spec.get("policyTypes") or ()
    types = [kind for kind in ("Ingress", "Egress") if kind in listed]
    return types or ["Ingress"]


def convert_network_policy(obj: KubeObject) -> ConvertedPolicy:
    """The Calico policy for Kubernetes NetworkPolicy ``obj`` (wire form).  Raises
    ConversionError only for an object with no name; bad rules are dropped (see module doc)."""
    name = name_of(obj)
    spec = spec_of(obj)
    dropped: list[DroppedRule] = []
    ingress = _direction_rules(spec, "ingress", dropped)
    egress = _direction_rules(spec, "egress", dropped)
    types = _types(spec)
    if egress and "Egress" not in types:
        log.warning("NetworkPolicy %s has egress rules but its policyTypes omit Egress", name)
    for rule in dropped:
        log.warning("NetworkPolicy %s: dropping a rule that cannot be converted: %s", name, rule)
    calico_spec: dict[str, Any] = {
        "tier": DEFAULT_TIER,
        "order": POLICY_ORDER,
        "selector": pod_selector(spec.get("podSelector")),
        "types": types,
    }
    if ingress:
        calico_spec["ingress"] = ingress
    if egress:
        calico_spec["egress"] = egress
    metadata = {"name": policy_name(name), "namespace": namespace_of(obj)}
    try:
        policy = NetworkPolicy.model_validate({"metadata": metadata, "spec": calico_spec})
    except ValidationError as error:
        raise ConversionError(f"NetworkPolicy {name}: {_first_problem(error)}") from error
    return ConvertedPolicy(policy=policy, dropped=tuple(dropped))
