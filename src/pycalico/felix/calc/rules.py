"""The rule scanner's pure half: one v3 ``Rule`` → one ``ResolvedRule`` plus the IP sets it needs.

What it is: Go Felix's ``ruleToParsedRule`` and the rule part of ``proto`` conversion.  A rule's
source/destination selectors (with namespace and service-account scoping, ``labels.py``) become
IP-set ids, ``notSelector`` becomes a negated IP-set id, named ports become named-port IP sets
(``addr,proto:port`` members) keyed by the side's selector, protocol, and port name; numeric ports
become ``PortRange``; actions are lower-cased, protocols normalised, nets normalised.  What it is
not: reference counting of the sets or their members (``ipsets.py``), or kernel syntax.

Semantics the dataplane must follow (the contract of ``ResolvedRule`` fields):

* Within one side, an address must be in every ``*_ip_set_ids`` set and in none of the
  ``not_*_ip_set_ids`` sets.  A side with both a selector and a notSelector gets one set,
  ``(selector) && !(notSelector)``; a notSelector alone gets a negated set (it must also match
  addresses that are not Calico endpoints).
* Ports: the packet's port matches if it is in one of ``*_ports`` OR ``(address, port)`` is in one
  of ``*_named_port_ip_set_ids`` (Calico ORs numeric and named ports of one field).  A named-port
  set already contains only endpoints of the side's selector, so when a side has named ports and
  no numeric ports the selector set is left out (it would be redundant).
* ``not_*_ports`` and ``not_*_named_port_ip_set_ids``: the packet must match none of them.

Invariants: ``resolve_rule`` is a pure function of (rule, namespace, owner, direction, index);
``rule_id`` is a stable 16-character hash of those; every IP-set id in a resolved rule appears in
the returned set specs.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
from dataclasses import dataclass

from pycalico.felix.calc.labels import entity_not_selector, entity_selector
from pycalico.felix.messages import Action, IPSetType, PortRange, ResolvedRule
from pycalico.model.rules import EntityRule, Rule
from pycalico.model.selectors import ALL, Selector, and_selectors, negate

_PROTOCOL_NAMES_BY_NUMBER = {
    1: "icmp",
    6: "tcp",
    17: "udp",
    58: "icmpv6",
    132: "sctp",
    136: "udplite",
}


@dataclass(frozen=True, slots=True)
class IPSetSpec:
    """An IP set a rule needs: its id, the selector of its members, and for a named-port set the
    (protocol, port name) that picks each member endpoint's port."""

    id: str
    selector: Selector
    type: IPSetType
    named_port: tuple[str, str] | None = None


def _hash_id(prefix: str, text: str) -> str:
    digest = hashlib.sha224(f"{prefix}:{text}".encode()).digest()
    return f"{prefix}:" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def selector_ip_set(selector: Selector) -> IPSetSpec:
    """The set of every address selected: selector sets hold addresses and CIDRs (hash:net)."""
    return IPSetSpec(selector.unique_id, selector, IPSetType.NET)


def named_port_ip_set(selector: Selector, protocol: str, port_name: str) -> IPSetSpec:
    # Calico's rule scanner hashes "<selector id>,<protocol>,<port name>" (IPSetData.UniqueID).
    set_id = _hash_id("n", f"{selector.unique_id},{protocol},{port_name}")
    return IPSetSpec(set_id, selector, IPSetType.IP_AND_PORT, (protocol, port_name))


def normalise_protocol(protocol: str | int | None) -> str | int | None:
    if protocol is None:
        return None
    if isinstance(protocol, int):
        return protocol
    return protocol.lower()


def _port_protocol(protocol: str | int | None) -> str:
    """The protocol a named port is looked up under (only TCP, UDP, SCTP have ports); a rule
    without a protocol looks it up under every protocol ("any", Calico's ProtocolAny)."""
    if isinstance(protocol, int):
        return _PROTOCOL_NAMES_BY_NUMBER.get(protocol, str(protocol))
    return (protocol or "any").lower()


def normalise_net(net: str) -> str:
    return str(ipaddress.ip_network(net, strict=False))


def _port_range(port: int | str) -> PortRange | None:
    if isinstance(port, int):
        return PortRange(port, port)
    if ":" in port:
        first, _, last = port.partition(":")
        return PortRange(int(first), int(last))
    if port.isdigit():
        return PortRange(int(port), int(port))
    return None  # a named port


@dataclass(slots=True)
class _Side:
    nets: tuple[str, ...] = ()
    not_nets: tuple[str, ...] = ()
    ip_set_ids: tuple[str, ...] = ()
    not_ip_set_ids: tuple[str, ...] = ()
    ports: tuple[PortRange, ...] = ()
    not_ports: tuple[PortRange, ...] = ()
    named_port_ip_set_ids: tuple[str, ...] = ()
    not_named_port_ip_set_ids: tuple[str, ...] = ()


def _resolve_side(
    entity: EntityRule | None,
    namespace: str | None,
    protocol: str | int | None,
    sets: dict[str, IPSetSpec],
) -> _Side:
    side = _Side()
    if entity is None:
        return side
    side.nets = tuple(normalise_net(n) for n in entity.nets or ())
    side.not_nets = tuple(normalise_net(n) for n in entity.not_nets or ())
    selector = entity_selector(entity, namespace)
    not_selector = entity_not_selector(entity)
    if selector is not None and not_selector is not None:
        # With a positive selector the side only matches known endpoints, so the notSelector
        # can narrow that one set instead of needing its own (Go's combineMatchesIfPossible).
        selector = and_selectors(selector, negate(not_selector))
        not_selector = None
    port_protocol = _port_protocol(protocol)

    def split(ports: list[int | str] | None) -> tuple[tuple[PortRange, ...], tuple[str, ...]]:
        ranges: list[PortRange] = []
        named: list[str] = []
        for port in ports or ():
            resolved = _port_range(port)
            if resolved is not None:
                ranges.append(resolved)
                continue
            spec = named_port_ip_set(selector or ALL, port_protocol, str(port))
            sets[spec.id] = spec
            named.append(spec.id)
        return tuple(ranges), tuple(dict.fromkeys(named))

    side.ports, side.named_port_ip_set_ids = split(entity.ports)
    side.not_ports, side.not_named_port_ip_set_ids = split(entity.not_ports)
    subsumed = bool(side.named_port_ip_set_ids) and not side.ports
    if selector is not None and not subsumed:
        spec = selector_ip_set(selector)
        sets[spec.id] = spec
        side.ip_set_ids = (spec.id,)
    if not_selector is not None:
        spec = selector_ip_set(not_selector)
        sets[spec.id] = spec
        side.not_ip_set_ids = (spec.id,)
    return side


def rule_id(owner: str, direction: str, index: int, rule: Rule) -> str:
    content = rule.model_dump_json(by_alias=True, exclude_none=True)
    digest = hashlib.sha224(f"{owner}|{direction}|{index}|{content}".encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")[:16]


def resolve_rule(
    rule: Rule, namespace: str | None, owner: str, direction: str, index: int
) -> tuple[ResolvedRule, dict[str, IPSetSpec]]:
    """``rule`` with selectors replaced by IP-set ids, and the specs of those sets by id."""
    sets: dict[str, IPSetSpec] = {}
    source = _resolve_side(rule.source, namespace, rule.protocol, sets)
    destination = _resolve_side(rule.destination, namespace, rule.protocol, sets)
    action: Action = rule.action.lower()  # type: ignore[assignment]
    resolved = ResolvedRule(
        action=action,
        ip_version=rule.ip_version,
        protocol=normalise_protocol(rule.protocol),
        not_protocol=normalise_protocol(rule.not_protocol),
        icmp_type=rule.icmp.type if rule.icmp else None,
        icmp_code=rule.icmp.code if rule.icmp else None,
        not_icmp_type=rule.not_icmp.type if rule.not_icmp else None,
        not_icmp_code=rule.not_icmp.code if rule.not_icmp else None,
        source_nets=source.nets,
        not_source_nets=source.not_nets,
        source_ip_set_ids=source.ip_set_ids,
        not_source_ip_set_ids=source.not_ip_set_ids,
        source_ports=source.ports,
        not_source_ports=source.not_ports,
        source_named_port_ip_set_ids=source.named_port_ip_set_ids,
        not_source_named_port_ip_set_ids=source.not_named_port_ip_set_ids,
        destination_nets=destination.nets,
        not_destination_nets=destination.not_nets,
        destination_ip_set_ids=destination.ip_set_ids,
        not_destination_ip_set_ids=destination.not_ip_set_ids,
        destination_ports=destination.ports,
        not_destination_ports=destination.not_ports,
        destination_named_port_ip_set_ids=destination.named_port_ip_set_ids,
        not_destination_named_port_ip_set_ids=destination.not_named_port_ip_set_ids,
        rule_id=rule_id(owner, direction, index, rule),
    )
    return resolved, sets


def resolve_rules(
    rules: list[Rule] | None, namespace: str | None, owner: str, direction: str
) -> tuple[tuple[ResolvedRule, ...], dict[str, IPSetSpec]]:
    out: list[ResolvedRule] = []
    sets: dict[str, IPSetSpec] = {}
    for index, rule in enumerate(rules or ()):
        resolved, needed = resolve_rule(rule, namespace, owner, direction, index)
        out.append(resolved)
        sets.update(needed)
    return tuple(out), sets
