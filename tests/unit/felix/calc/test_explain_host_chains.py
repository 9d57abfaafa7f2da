"""explain's host endpoint stages agree with the raw, mangle and filter chains Felix renders.

For a generated host endpoint (untracked, pre-DNAT, normal and applyOnForward tiers of
generated policies, maybe a profile), generated failsafe ports and a generated packet, the
chains ``rules.endpoints`` and ``rules.prefilter`` render — base chains, dispatch verdict maps
with the entries the dataplane writes, endpoint chains, policy and profile chains — are run by
a small interpreter of their nft forms (marks, ``jump``/``goto``/``return``, verdict maps,
``accept`` ending one hook, ``drop`` ending the packet; policy rule bodies by
``test_explain_rules``' interpreter) hook by hook (prerouting raw then mangle, then the filter
hook of the walk); ``explain_host.host_walk``'s verdict must be the same.  The kernel's own
verdicts for a few of these cases are in ``tests/integration/felix/test_explain_host_felix.py``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st
from tests.unit.felix.calc.test_explain_rules import nft_body_matches

from pycalico.felix import messages as m
from pycalico.felix.calc.explain_host import Walk, host_walk
from pycalico.felix.calc.verdicts import Packet
from pycalico.felix.rules import endpoints, names, prefilter
from pycalico.felix.rules.model import Chain, FailsafePort, RenderConfig
from pycalico.felix.rules.policy import policy_chains, profile_chains

IFACE = "eth1"  # the host endpoint's interface; "eth9" is a host interface without one
HOST_IP, REMOTE = "10.0.0.1", "10.0.0.2"
PORTS = [22, 53, 80, 81, 8080]
SOURCE_PORTS = [40000, 22, 53]
HOOKS: dict[Walk, tuple[str, ...]] = {
    "input": (names.CHAIN_RAW_PREROUTING, names.CHAIN_MANGLE_PREROUTING, names.CHAIN_INPUT),
    "output": (names.CHAIN_RAW_OUTPUT, names.CHAIN_OUTPUT),
    "forward-in": (names.CHAIN_RAW_PREROUTING, names.CHAIN_MANGLE_PREROUTING, names.CHAIN_FORWARD),
    "forward-out": (names.CHAIN_RAW_PREROUTING, names.CHAIN_MANGLE_PREROUTING, names.CHAIN_FORWARD),
}
INTERFACES: dict[Walk, tuple[str, str]] = {  # (iif, oif)
    "input": (IFACE, ""),
    "output": ("", IFACE),
    "forward-in": (IFACE, "eth9"),
    "forward-out": ("eth9", IFACE),
}
Rules = dict[
    m.PolicyID | m.ProfileID, tuple[tuple[m.ResolvedRule, ...], tuple[m.ResolvedRule, ...]]
]
_POLICY_ACTION = re.compile(
    r" ?(meta mark set meta mark \| (0x[0-9a-f]+) return|drop|log prefix \"[^\"]*\")$"
)


@dataclass
class _Packet:
    packet: Packet
    iif: str
    oif: str
    mark: int = 0
    trace: list[str] = field(default_factory=list)


class _Stop(Exception):
    """A terminal verdict of the hook: "accept" or "drop"."""

    def __init__(self, verdict: str) -> None:
        self.verdict = verdict


class Ruleset:
    """The rendered chains and verdict maps, run by nft's semantics for one packet."""

    def __init__(self, chains: list[Chain], maps: dict[str, dict[str, str]]) -> None:
        self.chains = {chain.name: chain for chain in chains}
        self.maps = maps

    def run_hook(self, base: str, state: _Packet) -> str:
        """The hook's verdict: "accept" (end of chain: policy accept) or "drop"."""
        if base not in self.chains:
            return "accept"
        try:
            self._run(base, state)
        except _Stop as stop:
            return stop.verdict
        return "accept"

    def _run(self, name: str, state: _Packet) -> None:
        """Run a chain; returning normally is nft's return to the caller."""
        state.trace.append(name)
        policy = name.startswith(("cali-pi-", "cali-po-", "cali-pri-", "cali-pro-"))
        for rule in self.chains[name].rules:
            outcome = (self._policy_rule if policy else self._rule)(rule, state)
            if outcome == "return":
                return

    def _policy_rule(self, rule: str, state: _Packet) -> str:
        action = _POLICY_ACTION.search(rule)
        assert action is not None, rule
        if not nft_body_matches(rule, state.packet):
            return ""
        if action.group(2):
            state.mark |= int(action.group(2), 16)
            return "return"
        if action.group(1) == "drop":
            raise _Stop("drop")
        return ""  # log: continue

    def _rule(self, rule: str, state: _Packet) -> str:
        text = re.sub(r' comment "[^"]*"$', "", rule)
        while text:
            text = text.strip()
            if found := re.match(r"meta mark & (0x[0-9a-f]+) == (0x[0-9a-f]+)", text):
                if state.mark & int(found.group(1), 16) != int(found.group(2), 16):
                    return ""
            elif found := re.match(r'(iif|oif)name (!= )?"([^"]*)"', text):
                actual = state.iif if found.group(1) == "iif" else state.oif
                pattern = found.group(3)
                hit = (
                    actual.startswith(pattern[:-1]) if pattern.endswith("*") else actual == pattern
                )
                if hit == bool(found.group(2)):
                    return ""
            elif found := re.match(r"ct state \S+", text):
                return ""  # a new flow is neither established, related nor invalid
            elif found := re.match(r"icmpv6 type \{[^}]*\}", text):
                return ""  # neighbour discovery: not our packets
            elif found := re.match(r"meta l4proto \. th (s|d)port \{ ([^}]*) \}", text):
                if not self._port_pair(state.packet, found.group(1), found.group(2)):
                    return ""
            elif found := re.match(r"(tcp|udp|sctp) (s|d)port (\d+)", text):
                if not self._port_pair(state.packet, found.group(2), f"{found[1]} . {found[3]}"):
                    return ""
            elif found := re.match(r"(ip6|ip) (s|d)addr (\S+)", text):
                if not nft_body_matches(found.group(0), state.packet):
                    return ""
            elif found := re.match(r"meta mark set meta mark ([&|]) (0x[0-9a-f]+)", text):
                value = int(found.group(2), 16)
                state.mark = state.mark & value if found.group(1) == "&" else state.mark | value
            elif found := re.match(r"(iif|oif)name vmap @(\S+)", text):
                interface = state.iif if found.group(1) == "iif" else state.oif
                verdict = self.maps.get(found.group(2), {}).get(interface)
                if verdict is not None:
                    return self._verdict(verdict, state)
            elif found := re.match(r"notrack", text):
                pass
            elif found := re.match(r"(accept|drop|return|jump \S+|goto \S+)$", text):
                return self._verdict(found.group(1), state)
            else:
                raise AssertionError(f"the interpreter does not know {text!r} (in {rule!r})")
            text = text[found.end() :]
        return ""

    def _verdict(self, verdict: str, state: _Packet) -> str:
        if verdict in ("accept", "drop"):
            raise _Stop(verdict)
        if verdict == "return":
            return "return"
        kind, target = verdict.split()
        self._run(target, state)
        return "return" if kind == "goto" else ""

    @staticmethod
    def _port_pair(packet: Packet, side: str, items: str) -> bool:
        port = packet.source_port if side == "s" else packet.destination_port
        return f"{packet.protocol} . {port}" in [i.strip() for i in items.split(",")]


def render(endpoint: m.HostEndpointUpdate, rules: Rules, config: RenderConfig) -> Ruleset:
    """Everything Felix programs for this one host endpoint (named interface ``IFACE``)."""
    use = prefilter.use([endpoint])
    pre = prefilter.host_endpoint_chains(endpoint, config)
    chains = [
        *endpoints.static_chains(config, "", use),
        *endpoints.host_endpoint_chains(endpoint, config),
        *prefilter.static_chains(config, use),
        *(chain for _, chain in pre.by_map() if chain is not None),
    ]
    for owner, (inbound, outbound) in rules.items():
        render_owner = profile_chains if isinstance(owner, m.ProfileID) else policy_chains
        chains += render_owner(owner, inbound, outbound, config)  # type: ignore[arg-type]
    filter_maps = (names.MAP_FROM_HEP, names.MAP_TO_HEP, names.MAP_FROM_HEP_FORWARD,
                   names.MAP_TO_HEP_FORWARD)  # fmt: skip
    maps = {
        map_name: {IFACE: f"goto {chain}"}
        for map_name, chain in zip(
            filter_maps, names.host_endpoint_chains(endpoint.id), strict=True
        )
    }
    for map_name, chain in pre.by_map():
        maps[map_name] = {IFACE: prefilter.map_verdict(chain)}
    return Ruleset(chains, maps)


# --- generation -------------------------------------------------------------------------------

_ports = st.lists(st.sampled_from(PORTS), max_size=2, unique=True)


@st.composite
def resolved_rules(draw: st.DrawFn) -> tuple[m.ResolvedRule, ...]:
    out = []
    for _ in range(draw(st.integers(1, 3))):
        protocol = draw(st.sampled_from([None, "tcp", "udp"]))
        ports = tuple(m.PortRange(p, p) for p in draw(_ports)) if protocol else ()
        out.append(
            m.ResolvedRule(
                draw(st.sampled_from(["allow", "deny", "pass", "log"])),
                protocol=protocol,
                destination_ports=ports,
                source_nets=draw(st.sampled_from([(), (), ("10.0.0.0/24",), ("10.9.0.0/16",)])),
            )
        )
    return tuple(out)


def _policy_ids(prefix: str, count: int) -> list[m.PolicyID]:
    return [m.PolicyID("default", f"{prefix}-{n}", "GlobalNetworkPolicy") for n in range(count)]


@st.composite
def worlds(draw: st.DrawFn) -> tuple[m.HostEndpointUpdate, dict, RenderConfig]:  # type: ignore[type-arg]
    rules: dict[m.PolicyID | m.ProfileID, tuple[tuple[m.ResolvedRule, ...], ...]] = {}

    def tiers(prefix: str, ingress_only: bool = False) -> tuple[m.TierInfo, ...]:
        out = []
        for tier_number in range(draw(st.integers(0, 2))):
            ids = _policy_ids(f"{prefix}{tier_number}", draw(st.integers(1, 2)))
            for pid in ids:
                rules[pid] = (draw(resolved_rules()), draw(resolved_rules()))
            ingress = tuple(p for p in ids if draw(st.booleans()) or ingress_only)
            egress = (
                ()
                if ingress_only
                else tuple(p for p in ids if p not in ingress or draw(st.booleans()))
            )
            action = draw(st.sampled_from(["deny", "deny", "pass"]))
            out.append(m.TierInfo(f"{prefix}{tier_number}", action, ingress, egress))  # type: ignore[arg-type]
        return tuple(out)

    profiles: tuple[m.ProfileID, ...] = ()
    if draw(st.booleans()):
        profiles = (m.ProfileID("prof"),)
        rules[profiles[0]] = (draw(resolved_rules()), draw(resolved_rules()))
    endpoint = m.HostEndpointUpdate(
        m.HostEndpointID("hep"), IFACE, (HOST_IP,), (), profiles,
        tiers("n"), tiers("u"), tiers("p", ingress_only=True), tiers("f"),
    )  # fmt: skip
    failsafe = st.lists(
        st.sampled_from([FailsafePort("tcp", 22), FailsafePort("udp", 53),
                         FailsafePort("tcp", 8080, "10.9.0.0/16"), FailsafePort("tcp", 81)]),
        max_size=3, unique=True,
    ).map(tuple)  # fmt: skip
    config = RenderConfig(failsafe_inbound=draw(failsafe), failsafe_outbound=draw(failsafe))
    return endpoint, rules, config


@st.composite
def walks_and_packets(draw: st.DrawFn) -> tuple[Walk, Packet]:
    walk: Walk = draw(st.sampled_from(["input", "output", "forward-in", "forward-out"]))
    remote = draw(st.sampled_from([REMOTE, "10.9.0.7"]))
    ingress = walk in ("input", "forward-in")
    source, destination = (remote, HOST_IP) if ingress else (HOST_IP, remote)
    protocol = draw(st.sampled_from(["tcp", "udp"]))
    return walk, Packet(source, destination, protocol, draw(st.sampled_from(SOURCE_PORTS)),
                        draw(st.sampled_from(PORTS)))  # fmt: skip


def kernel_verdict(ruleset: Ruleset, walk: Walk, packet: Packet) -> tuple[str, list[str]]:
    iif, oif = INTERFACES[walk]
    state = _Packet(packet, iif, oif)
    for hook in HOOKS[walk]:
        if ruleset.run_hook(hook, state) == "drop":
            return "deny", state.trace
    return "allow", state.trace


def explained(endpoint: m.HostEndpointUpdate, rules: dict, config: RenderConfig,  # type: ignore[type-arg]
              walk: Walk, packet: Packet) -> str:  # fmt: skip
    def policy_rules(ingress: bool):  # type: ignore[no-untyped-def]
        return lambda owner: rules.get(owner, ((), ()))[0 if ingress else 1]

    stages = host_walk(walk, endpoint, policy_rules, policy_rules, packet, {}, config)
    return stages[-1].trace.verdict


@settings(max_examples=500, deadline=None)
@given(worlds(), walks_and_packets())
def test_host_walk_agrees_with_the_rendered_chains(
    world: tuple[m.HostEndpointUpdate, dict, RenderConfig],  # type: ignore[type-arg]
    walk_packet: tuple[Walk, Packet],
) -> None:
    endpoint, rules, config = world
    walk, packet = walk_packet
    expected, trace = kernel_verdict(render(endpoint, rules, config), walk, packet)
    assert explained(endpoint, rules, config, walk, packet) == expected, (walk, packet, trace)


def test_the_interpreter_sees_failsafe_untracked_and_pre_dnat() -> None:
    """The check can fail: the chains' verdicts differ with the things explain must model."""
    deny = m.PolicyID("default", "deny", "GlobalNetworkPolicy")
    allow = m.PolicyID("default", "allow", "GlobalNetworkPolicy")
    rules: Rules = {
        deny: ((m.ResolvedRule("deny"),), ()),
        allow: ((m.ResolvedRule("allow"),), ()),
    }
    tier_deny = (m.TierInfo("default", "deny", (deny,), ()),)
    tier_allow = (m.TierInfo("default", "deny", (allow,), ()),)
    config = RenderConfig(failsafe_inbound=(FailsafePort("tcp", 22),))
    packet = Packet(REMOTE, HOST_IP, "tcp", 40000, 80)
    ssh = Packet(REMOTE, HOST_IP, "tcp", 40000, 22)
    normal_deny = m.HostEndpointUpdate(m.HostEndpointID("hep"), IFACE, (), (), (), tier_deny)
    ruleset = render(normal_deny, rules, config)
    assert kernel_verdict(ruleset, "input", packet)[0] == "deny"
    assert kernel_verdict(ruleset, "input", ssh)[0] == "allow"
    assert kernel_verdict(ruleset, "forward-in", packet)[0] == "allow"  # no applyOnForward
    untracked = m.HostEndpointUpdate(m.HostEndpointID("hep"), IFACE, (), (), (), tier_deny,
                                     untracked_tiers=tier_allow)  # fmt: skip
    assert kernel_verdict(render(untracked, rules, config), "input", packet)[0] == "allow"
    pre_dnat = m.HostEndpointUpdate(m.HostEndpointID("hep"), IFACE, (), (), (), tier_allow,
                                    pre_dnat_tiers=tier_deny)  # fmt: skip
    assert kernel_verdict(render(pre_dnat, rules, config), "input", packet)[0] == "deny"
    assert explained(pre_dnat, rules, config, "input", packet) == "deny"
