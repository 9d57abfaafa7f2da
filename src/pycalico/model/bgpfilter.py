"""BGPFilter: ordered accept/reject rules that a BGPPeer (``spec.filters``) applies to the
routes it imports from and exports to its peer, per IP family.

What it is: the wire shape of Calico's ``BGPFilter`` (``projectcalico.org/v3``, cluster-scoped,
etcd plural ``BGPFilters``) and the checks of Calico's validator and CRD rules.  What it is not:
how confd turns the rules into BIRD functions (``pycalico.bgp.filters``).

Calico's rules, kept here (errors name the field path, e.g. ``spec.exportV4[1].cidr``):

* ``action`` is required: ``Accept`` or ``Reject``.
* ``cidr`` and ``matchOperator`` (``Equal``, ``NotEqual``, ``In``, ``NotIn``) are set together
  or not at all; the CIDR is a strictly masked network of the rule's family (``exportV4`` and
  ``importV4`` hold IPv4 CIDRs, the V6 lists IPv6 ones).
* ``prefixLength`` (``min``/``max``, 0-32 for V4, 0-128 for V6) needs ``cidr``.
* ``source`` is ``RemotePeers`` (routes learned from BGP peers) or unset.
* ``interface`` is 1-15 of letters, digits, ``_ . - *`` (a BIRD pattern, ``*`` a wildcard).

One check is pycalico's own: the prefix-length range that BIRD gets (``min`` raised to the
CIDR's own length, ``max`` lowered to the family's maximum) must not be empty.  Calico lets
``{min: 24, max: 16}`` through and BIRD then refuses the whole configuration.

Also carried (wire shape only, for confd): ``peerType`` (``eBGP``/``iBGP``), ``communities``
(``values``: the first is matched), ``asPathPrefix``, ``priority`` and ``operations``
(``addCommunity``, ``prependASPath``, ``setPriority``), as in Calico 3.32.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import ClassVar, Literal

from pydantic import Field

from pycalico.model.fields import network_problem, parse_cidr_or_ip
from pycalico.model.validation import Checked, CheckedResource, Issue, list_issues

FilterAction = Literal["Accept", "Reject"]
MatchOperator = Literal["Equal", "NotEqual", "In", "NotIn"]
MatchSource = Literal["RemotePeers"]

_INTERFACE_RE = re.compile(r"^[a-zA-Z0-9_.*-]{1,15}$")
MAX_PREFIX_LENGTH = {4: 32, 6: 128}


class BGPFilterPrefixLength(Checked):
    """Bounds on the prefix length of a matching route (both optional)."""

    min: int | None = None
    max: int | None = None


class BGPFilterCommunityMatch(Checked):
    values: list[str]


class BGPFilterCommunityValue(Checked):
    value: str | None = None


class BGPFilterPrependASPath(Checked):
    prefix: list[int]


class BGPFilterPriorityValue(Checked):
    value: int | None = None


class BGPFilterOperation(Checked):
    """One of ``addCommunity``, ``prependASPath``, ``setPriority``."""

    add_community: BGPFilterCommunityValue | None = None
    prepend_as_path: BGPFilterPrependASPath | None = Field(default=None, alias="prependASPath")
    set_priority: BGPFilterPriorityValue | None = None

    def issues(self, path: str) -> Iterator[Issue]:
        # Calico's CRD: a discriminated union, exactly one field set (Min/MaxProperties 1).
        chosen = [self.add_community, self.prepend_as_path, self.set_priority]
        if sum(value is not None for value in chosen) != 1:
            yield path, "set exactly one of addCommunity, prependASPath, setPriority"


class BGPFilterRule(Checked):
    """One rule; ``VERSION`` (4 or 6) is the family of the list that holds it."""

    VERSION: ClassVar[int] = 4

    action: FilterAction
    match_operator: MatchOperator | None = None
    cidr: str | None = None
    prefix_length: BGPFilterPrefixLength | None = None
    source: MatchSource | None = None
    interface: str | None = None
    peer_type: Literal["eBGP", "iBGP"] | None = None
    communities: BGPFilterCommunityMatch | None = None
    as_path_prefix: list[int] | None = Field(default=None, alias="asPathPrefix")
    priority: int | None = None
    operations: list[BGPFilterOperation] | None = None

    def issues(self, path: str) -> Iterator[Issue]:
        if bool(self.cidr) != bool(self.match_operator):
            field = "matchOperator" if self.cidr else "cidr"
            yield f"{path}.{field}", "cidr and matchOperator must both be set or both be empty"
        if self.cidr:
            problem = network_problem(self.cidr, self.VERSION)
            if problem:
                yield f"{path}.cidr", problem
        if self.prefix_length is not None:
            yield from self._prefix_length_issues(f"{path}.prefixLength")
        if self.interface is not None and not (
            self.interface == "*" or _INTERFACE_RE.match(self.interface)
        ):
            yield (
                f"{path}.interface",
                f"{self.interface!r} is not an interface name or pattern "
                "(1-15 of letters, digits, '_', '.', '-', '*')",
            )
        yield from list_issues(path, "operations", self.operations)
        if self.operations and self.action != "Accept":
            yield f"{path}.operations", "may only be used with action Accept"

    def _prefix_length_issues(self, path: str) -> Iterator[Issue]:
        assert self.prefix_length is not None
        if not self.cidr:
            yield path, "cidr is required when prefixLength is set"
        top = MAX_PREFIX_LENGTH[self.VERSION]
        bounds = {"min": self.prefix_length.min, "max": self.prefix_length.max}
        bad = False
        for name, value in bounds.items():
            if value is not None and not 0 <= value <= top:
                bad = True
                yield f"{path}.{name}", f"{value} is not a prefix length between 0 and {top}"
        if bad or not self.cidr or parse_cidr_or_ip(self.cidr) is None:
            return  # a bad cidr is reported on its own field
        low, high = effective_prefix_lengths(self)
        if low > high:
            yield (
                path,
                f"matches no route: lengths {low} to {high} once bounded by {self.cidr} and /{top}",
            )


class BGPFilterRuleV4(BGPFilterRule):
    VERSION: ClassVar[int] = 4


class BGPFilterRuleV6(BGPFilterRule):
    VERSION: ClassVar[int] = 6


def effective_prefix_lengths(rule: BGPFilterRule) -> tuple[int, int]:
    """The prefix-length range BIRD is given for ``rule`` (which has a valid ``cidr``): Calico
    raises ``min`` to the CIDR's length and lowers ``max`` to the family's maximum."""
    assert rule.cidr is not None
    parsed = parse_cidr_or_ip(rule.cidr)
    assert parsed is not None
    top = MAX_PREFIX_LENGTH[parsed.version]
    low, high = parsed.network.prefixlen, top
    if rule.prefix_length is not None:
        if rule.prefix_length.min is not None:
            low = max(low, rule.prefix_length.min)
        if rule.prefix_length.max is not None:
            high = min(high, rule.prefix_length.max)
    return low, high


class BGPFilterSpec(Checked):
    export_v4: list[BGPFilterRuleV4] | None = Field(default=None, alias="exportV4")
    import_v4: list[BGPFilterRuleV4] | None = Field(default=None, alias="importV4")
    export_v6: list[BGPFilterRuleV6] | None = Field(default=None, alias="exportV6")
    import_v6: list[BGPFilterRuleV6] | None = Field(default=None, alias="importV6")

    def issues(self, path: str) -> Iterator[Issue]:
        for wire in ("exportV4", "importV4", "exportV6", "importV6"):
            for index, rule in enumerate(self.rules(wire)):
                yield from rule.issues(f"{path}.{wire}[{index}]")

    def rules(self, wire: str) -> list[BGPFilterRule]:
        """The rules of one list by its wire name (``exportV4`` ...), empty when unset."""
        value: list[BGPFilterRule] | None = {
            "exportV4": self.export_v4,
            "importV4": self.import_v4,
            "exportV6": self.export_v6,
            "importV6": self.import_v6,
        }[wire]  # type: ignore[assignment]
        return list(value or [])


class BGPFilter(CheckedResource):
    KIND: ClassVar[str] = "BGPFilter"
    PLURAL: ClassVar[str] = "bgpfilters"
    NAMESPACED: ClassVar[bool] = False

    kind: str = "BGPFilter"
    spec: BGPFilterSpec = Field(default_factory=BGPFilterSpec)

    def spec_issues(self) -> Iterator[Issue]:
        yield from self.spec.issues("spec")
