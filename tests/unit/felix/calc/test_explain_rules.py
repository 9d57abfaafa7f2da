"""explain's rule evaluator agrees with the nftables rules Felix renders, for generated rules.

``verdicts.rule_matches`` is the executable form of the ``ResolvedRule`` contract; the renderer
(``felix.rules.policy.render_rules``) is the other.  Here a small interpreter of the rendered
rule text — only the forms our renderer emits, with nft's semantics: an ``ip``/``ip6`` match
implies that family, ``icmp type`` implies ICMP, ``{ ... }`` is OR, ``!=`` of a set is none of
it, one rule's variants are ORed — decides each generated (rule, packet) pair, and the
evaluator must decide the same.  The real kernel's verdicts for the same code are in
``tests/integration/felix/test_explain_felix.py``.
"""

from __future__ import annotations

import ipaddress
import re

from hypothesis import given, settings
from hypothesis import strategies as st

from pycalico.felix.calc.verdicts import Packet, SetMembers, rule_matches
from pycalico.felix.messages import PortRange, ResolvedRule
from pycalico.felix.rules import names
from pycalico.felix.rules.model import RenderConfig
from pycalico.felix.rules.policy import render_rules

ADDRESSES = ["10.0.0.1", "10.0.0.2", "10.0.1.5", "192.0.2.9", "fd00::1", "fd00::2", "fd00:1::3"]
NETS = ["10.0.0.0/24", "10.0.0.2/32", "10.0.0.0/8", "192.0.2.0/24", "fd00::/64", "fd00::2/128"]
SETS: SetMembers = {
    "s:A": frozenset({"10.0.0.1", "fd00::1", "192.0.2.0/24"}),
    "s:B": frozenset({"10.0.0.2", "10.0.1.5", "fd00::2"}),
    "n:http": frozenset({"10.0.0.2,tcp:8080", "fd00::2,tcp:8080", "10.0.0.1,udp:53"}),
}
PORTS = [53, 79, 80, 81, 8080]
_TOKENS = [
    ("nfproto", r"meta nfproto (ipv4|ipv6)"),
    ("l4proto", r"meta l4proto (!= )?(\w+)"),
    ("icmp_pair", r"(icmpv6|icmp) type \. \w+ code != \{ (\d+) \. (\d+) \}"),
    ("icmp", r"(icmpv6|icmp) (type|code) (!= )?(\d+)"),
    ("named", r"(ip6|ip) (s|d)addr \. meta l4proto \. th (s|d)port (!= )?@(\S+)"),
    ("addr", r"(ip6|ip) (s|d)addr (!= )?(@\S+|\{ [^}]* \}|\S+)"),
    ("port", r"th (s|d)port (!= )?(\{ [^}]* \}|\S+)"),
]
_NUMBERS = {"tcp": 6, "udp": 17, "icmp": 1, "icmpv6": 58, "sctp": 132}


def _set_name_to_id() -> dict[str, str]:
    return {names.ip_set_name(s, f): s for s in SETS for f in (4, 6)}


def _items(text: str) -> list[str]:
    return [i.strip() for i in text.strip("{} ").split(",")] if text.startswith("{") else [text]


def _in_item(value: str, item: str) -> bool:
    if "-" in item and ":" not in item:
        first, last = item.split("-")
        return int(first) <= int(value) <= int(last)
    if item.isdigit():
        return int(value) == int(item)
    address = ipaddress.ip_address(value)
    net = ipaddress.ip_network(item, strict=False)
    return address.version == net.version and address in net


def _in_selector_set(set_id: str, address: str) -> bool:
    return any(_in_item(address, member) for member in SETS[set_id])


def _token(kind: str, groups: tuple[str | None, ...], packet: Packet) -> bool:
    family = ipaddress.ip_address(packet.destination).version
    number = _NUMBERS[packet.protocol]
    if kind == "nfproto":
        return groups[0] == f"ipv{family}"
    if kind == "l4proto":
        negated, value = groups
        wanted = _NUMBERS.get(str(value), int(value) if str(value).isdigit() else -1)
        return (number != wanted) if negated else (number == wanted)
    if kind in ("icmp", "icmp_pair"):
        icmp = "icmpv6" if family == 6 else "icmp"
        if groups[0] != icmp or packet.protocol != icmp:
            return False
        if kind == "icmp_pair":
            return (packet.icmp_type, packet.icmp_code) != (
                int(str(groups[1])),
                int(str(groups[2])),
            )
        field, negated, value = groups[1], groups[2], int(str(groups[3]))
        actual = packet.icmp_type if field == "type" else packet.icmp_code
        return (actual != value) if negated else (actual == value)
    if kind == "named":
        fam, side, _, negated, name = groups
        if (fam == "ip6") != (family == 6):
            return False
        address = packet.source if side == "s" else packet.destination
        port = packet.source_port if side == "s" else packet.destination_port
        member = f"{address},{packet.protocol}:{port}"
        found = member in SETS[_set_name_to_id()[str(name)]]
        return not found if negated else found
    if kind == "addr":
        fam, side, negated, value = groups
        if (fam == "ip6") != (family == 6):
            return False
        address = packet.source if side == "s" else packet.destination
        if str(value).startswith("@"):
            found = _in_selector_set(_set_name_to_id()[str(value)[1:]], address)
        else:
            found = any(_in_item(address, item) for item in _items(str(value)))
        return not found if negated else found
    side, negated, value = groups
    port = packet.source_port if side == "s" else packet.destination_port
    found = port is not None and any(_in_item(str(port), i) for i in _items(str(value)))
    return not found if negated else found


def nft_body_matches(body: str, packet: Packet) -> bool:
    text = re.sub(r' comment "[^"]*"$', "", body)
    text = re.sub(
        r" ?(meta mark set meta mark \| \S+ return|drop|reject|log prefix \"[^\"]*\")$", "", text
    )
    while text:
        for kind, pattern in _TOKENS:
            found = re.match(pattern + r"(?: |$)", text)
            if found:
                if not _token(kind, found.groups(), packet):
                    return False
                text = text[found.end() :]
                break
        else:
            raise AssertionError(f"the interpreter does not know {text!r} (in {body!r})")
    return True


def nft_matches(rule: ResolvedRule, packet: Packet) -> bool:
    return any(nft_body_matches(b, packet) for b in render_rules([rule], RenderConfig()))


def _ranges() -> st.SearchStrategy[tuple[PortRange, ...]]:
    single = st.sampled_from(PORTS).map(lambda p: PortRange(p, p))
    span = st.sampled_from([(79, 81), (50, 60), (8000, 9000)]).map(lambda r: PortRange(*r))
    some = st.lists(st.one_of(single, span), min_size=1, max_size=2, unique=True).map(tuple)
    return st.one_of(st.just(()), st.just(()), some)  # mostly unconstrained: matches happen


def _subset(pool: list[str], size: int = 2) -> st.SearchStrategy[tuple[str, ...]]:
    if not pool:
        return st.just(())
    some = st.lists(st.sampled_from(pool), min_size=1, max_size=size, unique=True).map(tuple)
    return st.one_of(st.just(()), st.just(()), st.just(()), some)


@st.composite
def rules(draw: st.DrawFn) -> ResolvedRule:
    protocol = draw(st.sampled_from([None, "tcp", "udp", "icmp", "icmpv6"]))
    ported = protocol in ("tcp", "udp")
    icmp = protocol in ("icmp", "icmpv6")
    named = ["n:http"] if ported else []
    empty = st.just(())
    return ResolvedRule(
        "allow",
        ip_version=draw(st.sampled_from([None, None, 4, 6])),
        protocol=protocol,
        not_protocol=draw(st.sampled_from([None, None, "udp"])) if protocol is None else None,
        icmp_type=draw(st.sampled_from([None, 8, 0])) if icmp else None,
        icmp_code=draw(st.sampled_from([None, 0])) if icmp else None,
        not_icmp_type=draw(st.sampled_from([None, 3])) if icmp else None,
        not_icmp_code=draw(st.sampled_from([None, 1])) if icmp else None,
        source_nets=draw(_subset(NETS)),
        not_source_nets=draw(_subset(NETS)),
        source_ip_set_ids=draw(_subset(["s:A", "s:B"], 1)),
        not_source_ip_set_ids=draw(_subset(["s:A", "s:B"], 1)),
        destination_nets=draw(_subset(NETS)),
        not_destination_nets=draw(_subset(NETS)),
        destination_ip_set_ids=draw(_subset(["s:A", "s:B"], 1)),
        not_destination_ip_set_ids=draw(_subset(["s:A", "s:B"], 1)),
        source_ports=draw(_ranges() if ported else empty),
        not_source_ports=draw(_ranges() if ported else empty),
        destination_ports=draw(_ranges() if ported else empty),
        not_destination_ports=draw(_ranges() if ported else empty),
        destination_named_port_ip_set_ids=draw(_subset(named, 1)),
        not_destination_named_port_ip_set_ids=draw(_subset(named, 1)),
    )


@st.composite
def packets(draw: st.DrawFn) -> Packet:
    source = draw(st.sampled_from(ADDRESSES))
    family = ipaddress.ip_address(source).version
    destination = draw(
        st.sampled_from([a for a in ADDRESSES if ipaddress.ip_address(a).version == family])
    )
    protocol = draw(st.sampled_from(["tcp", "udp", "icmpv6" if family == 6 else "icmp"]))
    if protocol.startswith("icmp"):
        return Packet(source, destination, protocol, icmp_type=draw(st.sampled_from([8, 3, 0])),
                      icmp_code=draw(st.sampled_from([0, 1])))  # fmt: skip
    return Packet(
        source, destination, protocol, draw(st.sampled_from(PORTS)), draw(st.sampled_from(PORTS))
    )


@settings(max_examples=600, deadline=None)
@given(rules(), packets())
def test_evaluator_agrees_with_the_rendered_nft_rules(rule: ResolvedRule, packet: Packet) -> None:
    assert rule_matches(rule, packet, SETS) == nft_matches(rule, packet), render_rules(
        [rule], RenderConfig()
    )


def test_the_interpreter_can_disagree() -> None:
    """The check can fail: a rule the evaluator matches but the rendered text does not."""
    rule = ResolvedRule("allow", protocol="tcp", destination_ports=(PortRange(80, 80),))
    packet = Packet("10.0.0.1", "10.0.0.2", "tcp", 1000, 80)
    assert rule_matches(rule, packet, SETS) and nft_matches(rule, packet)
    other = Packet("10.0.0.1", "10.0.0.2", "tcp", 1000, 81)
    assert not nft_matches(rule, other) and not rule_matches(rule, other, SETS)
