"""Policy rules: ``Rule`` and its parts (``EntityRule``, ``ICMPFields``, service-account and service
matches, HTTP match, rule metadata), shared by NetworkPolicy, GlobalNetworkPolicy and Profile.

What it is: the wire shape (Calico's JSON names and Go field order) and the semantic checks Calico's
validator applies to one rule.  What it is not: how rules are evaluated or rendered (Felix's
business), nor the policy-level checks (``pycalico.model.policy``).

Invariants: rule checks report every problem with the full field path; a rule's nets are all of one
IP family and agree with ``ipVersion``; ports appear only with a protocol that has ports; ICMP
fields appear only with protocol ICMP/ICMPv6 and an ICMP code only with a type.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

from pydantic import Field

from pycalico.model.fields import (
    Port,
    Protocol,
    name_problem,
    network_of,
    network_problem,
    protocol_is,
    protocol_supports_ports,
    qualified_name_problem,
    selector_problem,
)
from pycalico.model.validation import Checked, Issue, child_issues, join, wire_name

Action = Literal["Allow", "Deny", "Log", "Pass"]
GLOBAL_SELECTOR = "global()"
_PORTS_NEED_PROTOCOL = "rules that specify ports must set protocol to TCP, UDP or SCTP"


class ICMPFields(Checked):
    type: int | None = Field(default=None, ge=0, le=254)
    code: int | None = Field(default=None, ge=0, le=255)

    def issues(self, path: str) -> Iterator[Issue]:
        if self.code is not None and self.type is None:
            yield join(path, "code"), "an ICMP code needs an ICMP type"


class ServiceAccountMatch(Checked):
    names: list[str] | None = None
    selector: str | None = None

    def issues(self, path: str) -> Iterator[Issue]:
        if self.selector:
            problem = selector_problem(self.selector)
            if problem:
                yield join(path, "selector"), problem


class ServiceMatch(Checked):
    name: str | None = None
    namespace: str | None = None

    def issues(self, path: str) -> Iterator[Issue]:
        if not self.name:
            yield join(path, "name"), "a service match must name a service"
        for field in ("name", "namespace"):
            value = getattr(self, field)
            if value:
                problem = name_problem(value)
                if problem:
                    yield join(path, field), problem


class HTTPPath(Checked):
    exact: str | None = Field(default=None, max_length=1024)
    prefix: str | None = Field(default=None, max_length=1024)

    def issues(self, path: str) -> Iterator[Issue]:
        if self.exact and self.prefix:
            yield path, "set either 'exact' or 'prefix', not both"
            return
        value = self.exact or self.prefix
        if not value:
            yield path, "set one of 'exact' or 'prefix'"
        elif not value.startswith("/") or any(c in value for c in "? #"):
            yield path, f"HTTP path {value!r} must start with '/' and not contain '?', '#' or ' '"


class HTTPMatch(Checked):
    methods: list[str] | None = Field(default=None, max_length=20)
    paths: list[HTTPPath] | None = Field(default=None, max_length=20)

    def issues(self, path: str) -> Iterator[Issue]:
        if self.methods and len(set(self.methods)) != len(self.methods):
            yield join(path, "methods"), "HTTP methods are listed more than once"
        for index, item in enumerate(self.paths or ()):
            yield from item.issues(f"{join(path, 'paths')}[{index}]")


class RuleMetadata(Checked):
    annotations: dict[str, str] | None = None

    def issues(self, path: str) -> Iterator[Issue]:
        for key in self.annotations or {}:
            problem = qualified_name_problem(key.lower())
            if problem:
                yield join(path, "annotations"), problem


class EntityRule(Checked):
    """Match criteria for the source or the destination of a rule (Go field order)."""

    nets: list[str] | None = Field(default=None, max_length=256)
    selector: str | None = Field(default=None, max_length=1024)
    namespace_selector: str | None = Field(default=None, max_length=1024)
    services: ServiceMatch | None = None
    ports: list[Port] | None = Field(default=None, max_length=50)
    not_nets: list[str] | None = Field(default=None, max_length=256)
    not_selector: str | None = Field(default=None, max_length=1024)
    not_ports: list[Port] | None = Field(default=None, max_length=50)
    service_accounts: ServiceAccountMatch | None = None

    def is_empty(self) -> bool:
        return all(getattr(self, name) in (None, [], "") for name in type(self).model_fields)

    def issues(self, path: str) -> Iterator[Issue]:
        for field in ("nets", "not_nets"):
            for index, net in enumerate(getattr(self, field) or ()):
                problem = network_problem(net)
                if not problem and field == "not_nets" and _is_catch_all(net):
                    problem = "a catch-all network in notNets matches no traffic at all"
                if problem:
                    yield f"{join(path, wire_name(field))}[{index}]", problem
        for field in ("selector", "not_selector", "namespace_selector"):
            value = getattr(self, field)
            if value:
                problem = selector_problem(value)
                if problem:
                    yield join(path, wire_name(field)), problem
        if self.selector and GLOBAL_SELECTOR in self.selector:
            yield join(path, "selector"), "global() can only be used in a namespaceSelector"
        if self.not_selector and GLOBAL_SELECTOR in self.not_selector:
            yield join(path, "notSelector"), "global() can only be used in a namespaceSelector"
        namespace_selector = (self.namespace_selector or "").strip()
        if "global(" in namespace_selector and namespace_selector != GLOBAL_SELECTOR:
            yield (
                join(path, "namespaceSelector"),
                "global() cannot be combined with other selectors",
            )
        yield from child_issues(path, "serviceAccounts", self.service_accounts)
        yield from child_issues(path, "services", self.services)
        if self.services is not None:
            conflicts = [
                wire
                for field, wire in (
                    ("namespace_selector", "namespaceSelector"),
                    ("selector", "selector"),
                    ("not_selector", "notSelector"),
                    ("service_accounts", "serviceAccounts"),
                    ("nets", "nets"),
                    ("not_nets", "notNets"),
                )
                if getattr(self, field)
            ]
            if conflicts:
                yield (
                    join(path, "services"),
                    f"services cannot be combined with {', '.join(conflicts)} on the same rule",
                )


def _is_named(port: int | str) -> bool:
    return isinstance(port, str) and ":" not in port


def _is_catch_all(net: str) -> bool:
    # Calico compares the IPv4 text exactly ("0.0.0.0/0") but any spelling of ::/0.
    network = network_of(net)
    if network is None or network.prefixlen != 0:
        return False
    return net == "0.0.0.0/0" if network.version == 4 else not int(network.network_address)


class Rule(Checked):
    """One policy rule (Go field order: action, ipVersion, protocol, icmp, notProtocol, ...)."""

    action: Action
    ip_version: Literal[4, 6] | None = Field(default=None, alias="ipVersion")
    protocol: Protocol | None = None
    icmp: ICMPFields | None = None
    not_protocol: Protocol | None = None
    not_icmp: ICMPFields | None = Field(default=None, alias="notICMP")
    source: EntityRule | None = None
    destination: EntityRule | None = None
    http: HTTPMatch | None = None
    metadata: RuleMetadata | None = None

    def issues(self, path: str) -> Iterator[Issue]:
        yield from child_issues(path, "icmp", self.icmp)
        yield from child_issues(path, "notICMP", self.not_icmp)
        yield from child_issues(path, "source", self.source)
        yield from child_issues(path, "destination", self.destination)
        yield from child_issues(path, "http", self.http)
        yield from child_issues(path, "metadata", self.metadata)

        if not protocol_supports_ports(self.protocol):
            # With no protocol, named ports are allowed (they match any protocol the port is
            # declared with); numbers and ranges need TCP, UDP or SCTP, as in Calico.
            for side in ("source", "destination"):
                entity: EntityRule | None = getattr(self, side)
                if entity is None:
                    continue
                for field, wire in (("ports", "ports"), ("not_ports", "notPorts")):
                    ports = getattr(entity, field) or ()
                    if self.protocol is None:
                        ports = [port for port in ports if not _is_named(port)]
                    if ports:
                        yield f"{path}.{side}.{wire}", _PORTS_NEED_PROTOCOL

        if (
            self.http is not None
            and self.protocol is not None
            and not protocol_is(self.protocol, "TCP")
        ):
            yield join(path, "protocol"), "rules with an HTTP match must use protocol TCP"
        if self.http is not None and self.action != "Allow":
            yield join(path, "http"), "an HTTP match is only valid on Allow rules"

        is_icmp = protocol_is(self.protocol, "ICMP") or protocol_is(self.protocol, "ICMPv6")
        if self.icmp is not None and not is_icmp:
            yield join(path, "icmp"), "rules with ICMP fields must set protocol to ICMP or ICMPv6"
        # Calico does not tie notICMP to a protocol (a rule may say "any protocol, but not
        # ICMP echo"), so neither do we.
        for field, wire in (("protocol", "protocol"), ("not_protocol", "notProtocol")):
            value = getattr(self, field)
            if protocol_is(value, "ICMP") and self.ip_version == 6:
                yield join(path, wire), "protocol ICMP needs ipVersion 4"
            if protocol_is(value, "ICMPv6") and self.ip_version == 4:
                yield join(path, wire), "protocol ICMPv6 needs ipVersion 6"

        yield from self._family_issues(path)

        destination = self.destination
        services_with_ports = (
            destination is not None
            and destination.services is not None
            and (destination.ports or destination.not_ports)
        )
        if services_with_ports:
            yield (
                join(path, "destination.ports"),
                "ports cannot be specified with a service match",
            )

    def _family_issues(self, path: str) -> Iterator[Issue]:
        """Every net in a rule is one family, and agrees with ``ipVersion`` if set."""
        seen: set[int] = set()
        for side in ("source", "destination"):
            entity: EntityRule | None = getattr(self, side)
            if entity is None:
                continue
            for field, wire in (("nets", "nets"), ("not_nets", "notNets")):
                families = {
                    network.version
                    for net in getattr(entity, field) or ()
                    if (network := network_of(net)) is not None
                }
                where = f"{path}.{side}.{wire}"
                if self.ip_version is not None and families - {self.ip_version}:
                    yield where, f"contains a network that is not IPv{self.ip_version} (ipVersion)"
                elif len(families) > 1 or (families and seen and families != seen):
                    yield where, "a rule's nets must all be IPv4 or all be IPv6, not both"
                seen |= families
