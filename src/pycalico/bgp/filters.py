"""BGPFilters as BIRD: one function per filter, family and direction, and the calls a peer's
import and export filters make to them (reference §4, Calico's confd template functions).

PURE: strings from models.  What it is not: choosing the peers (``processor``) or printing the
whole file (``render``).

Calico's rendering, kept:

* Function names are ``'bgp_<filter>_importFilterV4'`` (``export``, ``V6``), single-quoted
  because filter names hold ``-`` and ``.``; a name that would make the symbol longer than
  BIRD's 64 characters is cut and suffixed with ``_`` + the first 16 hex digits (upper case)
  of its SHA-256.
* A filter gets a function for a family and direction only when it has rules there, and each
  rule becomes one line, in order: ``if (<conditions>) then { <operations> accept; }`` (or
  ``reject;``), the bare body when a rule has no condition.  Operations: ``addCommunity`` is
  ``bgp_community.add((a, b));`` (``bgp_large_community`` for ``a:b:c``), ``prependASPath``
  prepends its ASNs last first (so the path starts with them in order), ``setPriority`` is
  ``bgp_local_pref = 2147483647 - <priority>;``.  A rule with ``peerType`` is wrapped in
  ``if (is_same_as) then { ... }`` (iBGP) or ``if (!is_same_as) ...`` (eBGP), and that
  function takes ``(bool is_same_as)``: the peer passes whether its AS is this node's.  Conditions are AND-ed: ``(net ~ 10.0.0.0/8)``
  (``=`` Equal, ``!=`` NotEqual, ``~`` In, ``!~`` NotIn), with ``prefixLength`` the CIDR becomes
  the set ``[ 10.0.0.0/8{16,24} ]`` (min raised to the CIDR's length, max lowered to 32/128);
  ``source: RemotePeers`` is ``((defined(source))&&(source ~ [ RTS_BGP ]))``; ``interface`` is
  ``((defined(ifname))&&(ifname ~ "<pattern>"))``; ``communities`` (its first value) is
  ``((a, b) ~ bgp_community)`` or ``((a, b, c) ~ bgp_large_community)``; ``asPathPrefix`` is
  ``(bgp_path ~ [= a b * =])``; ``priority`` is
  ``(defined(bgp_local_pref)&&(bgp_local_pref = 2147483647 - <priority>))``.
* A peer calls the functions of its ``filters`` in order: on import before Calico's preference
  rule, on export after Calico's metric/local-preference rule and before
  ``calico_export_to_bgp_peers(...)``.  The
  first rule that matches decides (``accept``/``reject`` inside a function ends the filter); a
  route no rule matches falls through to the next filter and finally to Calico's default.

Invariants: every string returned is BIRD syntax (``bird -p`` accepts it); a rule this module
cannot render safely (data that bypassed validation) is left out with a note, never printed.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence

from pycalico.bgp.config import BirdFilterFunction, bird_safe
from pycalico.model.bgpfilter import BGPFilter, BGPFilterRule, effective_prefix_lengths

MAX_SYMBOL_LENGTH = 64
BIRD_INT_MAX = 2147483647  # Calico's priorities become BIRD local preferences below this
HASH_CHARACTERS = 16
DIRECTIONS = ("import", "export")

_OPERATORS = {"Equal": "=", "NotEqual": "!=", "In": "~", "NotIn": "!~"}
_COMMUNITY_RE = re.compile(r"^\d+:\d+(:\d+)?$")
_REMOTE_PEERS = "((defined(source))&&(source ~ [ RTS_BGP ]))"


def truncate_and_hash(name: str, max_length: int) -> str:
    """``name`` if it fits, else its head + ``_`` + 16 hex digits of its SHA-256."""
    if len(name) <= max_length:
        return name
    suffix_length = HASH_CHARACTERS + 1
    if max_length <= suffix_length:
        raise ValueError(f"cannot shorten {name!r} to {max_length} characters")
    digest = hashlib.sha256(name.encode()).hexdigest().upper()
    return f"{name[: max_length - suffix_length]}_{digest[:HASH_CHARACTERS]}"


def function_name(filter_name: str, direction: str, version: int) -> str:
    """``'bgp_<name>_<direction>FilterV<version>'``, quoted, the symbol at most 64 long."""
    normalized = direction.lower()
    if normalized not in DIRECTIONS:
        raise ValueError(f"direction {direction!r} is neither 'import' nor 'export'")
    fixed = f"bgp__{normalized}FilterV{version}"
    shortened = truncate_and_hash(filter_name, MAX_SYMBOL_LENGTH - len(fixed))
    return f"'bgp_{shortened}_{normalized}FilterV{version}'"


def _rule_list(version: int, direction: str) -> str:
    return f"{direction}V{version}"


def rule_condition(rule: BGPFilterRule) -> str:
    """The AND of ``rule``'s conditions ("" when it has none).  ``rule`` must be valid."""
    conditions = []
    if rule.cidr:
        assert rule.match_operator is not None
        target = rule.cidr
        if rule.prefix_length is not None:
            low, high = effective_prefix_lengths(rule)
            target = f"[ {rule.cidr}{{{low},{high}}} ]"
        conditions.append(f"(net {_OPERATORS[rule.match_operator]} {target})")
    if rule.source == "RemotePeers":
        conditions.append(_REMOTE_PEERS)
    if rule.interface:
        conditions.append(f'((defined(ifname))&&(ifname ~ "{rule.interface}"))')
    if rule.communities is not None and rule.communities.values:
        parts = rule.communities.values[0].split(":")
        attribute = "bgp_community" if len(parts) == 2 else "bgp_large_community"
        conditions.append(f"(({', '.join(parts)}) ~ {attribute})")
    if rule.as_path_prefix:
        conditions.append(f"(bgp_path ~ [= {' '.join(map(str, rule.as_path_prefix))} * =])")
    if rule.priority is not None:
        preference = BIRD_INT_MAX - rule.priority
        conditions.append(f"(defined(bgp_local_pref)&&(bgp_local_pref = {preference}))")
    return "&&".join(conditions)


def community_add(value: str) -> str:
    """``bgp_community.add((a, b));`` for ``a:b``, the large-community form for ``a:b:c``."""
    parts = value.split(":")
    attribute = "bgp_community" if len(parts) == 2 else "bgp_large_community"
    return f"{attribute}.add(({', '.join(parts)}));"


def operation_statements(rule: BGPFilterRule) -> list[str]:
    statements: list[str] = []
    for operation in rule.operations or ():
        if operation.add_community is not None and operation.add_community.value:
            statements.append(community_add(operation.add_community.value))
        elif operation.prepend_as_path is not None:
            # Prepending the last ASN first leaves the path starting with the list in order.
            for asn in reversed(operation.prepend_as_path.prefix):
                statements.append(f"bgp_path.prepend({asn});")
        elif operation.set_priority is not None and operation.set_priority.value is not None:
            statements.append(f"bgp_local_pref = {BIRD_INT_MAX - operation.set_priority.value};")
    return statements


def rule_statement(rule: BGPFilterRule) -> str:
    """One line of a filter function: ``if (<conditions>) then { <operations> accept; }``."""
    body = " ".join([*operation_statements(rule), f"{rule.action.lower()};"])
    condition = rule_condition(rule)
    line = f"if ({condition}) then {{ {body} }}" if condition else body
    if rule.peer_type == "iBGP":
        return f"if (is_same_as) then {{ {line} }}"
    if rule.peer_type == "eBGP":
        return f"if (!is_same_as) then {{ {line} }}"
    return line


def _unrenderable(rule: BGPFilterRule) -> str | None:
    for _, problem in rule.issues("rule"):
        return problem
    if rule.interface is not None and not bird_safe(rule.interface):
        return "interface cannot be written as a BIRD string"
    values = list(rule.communities.values[:1]) if rule.communities is not None else []
    values += [o.add_community.value for o in rule.operations or () if o.add_community]  # type: ignore[misc]
    for value in values:
        if not _COMMUNITY_RE.match(value or ""):
            return f"community {value!r} is not 'aa:nn' or 'aa:nn:mm'"
    return None


def filter_functions(
    filters: Mapping[str, BGPFilter], version: int
) -> tuple[tuple[BirdFilterFunction, ...], tuple[str, ...]]:
    """The functions of every filter for ``version`` (filters by name, import before export),
    and notes about rules left out."""
    functions = []
    notes = []
    for filter_name in sorted(filters):
        spec = filters[filter_name].spec
        for direction in DIRECTIONS:
            wire = _rule_list(version, direction)
            rules = spec.rules(wire)
            if not rules:
                continue
            lines = []
            for index, rule in enumerate(rules):
                problem = _unrenderable(rule)
                if problem:
                    notes.append(f"BGPFilter {filter_name} {wire}[{index}] left out: {problem}")
                    continue
                lines.append(rule_statement(rule))
            functions.append(
                BirdFilterFunction(
                    filter_name=filter_name,
                    version=version,
                    direction=direction,
                    name=function_name(filter_name, direction, version),
                    lines=tuple(lines),
                    takes_peer_type=any(rule.peer_type for rule in rules),
                )
            )
    return tuple(functions), tuple(notes)


def peer_calls(
    names: Sequence[str] | None,
    functions: Sequence[BirdFilterFunction],
    direction: str,
    same_as: bool,
) -> tuple[str, ...]:
    """The function calls, in the peer's ``filters`` order, for one direction; a filter that
    does not exist or has no rules for this family and direction contributes nothing.  A
    function with ``peerType`` rules is told whether the peer is in this node's AS."""
    by_filter = {f.filter_name: f for f in functions if f.direction == direction}
    argument = "true" if same_as else "false"
    return tuple(
        f"{by_filter[name].name}({argument if by_filter[name].takes_peer_type else ''})"
        for name in names or ()
        if name in by_filter
    )


def missing_filters(
    names: Sequence[str] | None, filters: Mapping[str, BGPFilter]
) -> tuple[str, ...]:
    return tuple(name for name in names or () if name not in filters)
