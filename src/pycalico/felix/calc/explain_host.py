"""What Felix's host endpoint chains do with one packet: the stages, in the order they run.

What it is: the walk of a packet through the chains ``rules.prefilter`` and
``rules.endpoints`` render for one host endpoint, over the ``HostEndpointUpdate`` the
calculation graph sends (its untracked, pre-DNAT, normal and applyOnForward tiers) and the
node's ``RenderConfig`` (failsafe ports, DefaultEndpointToHostAction).  Each stage's policies
are run by ``verdicts.evaluate_direction``.  What it is not: which policies select the endpoint
(the graph, driven by ``explain``) or routing (the caller says which walk the packet takes).

The walks (those of the rendered chains):

* **input** (to the host, arriving on the endpoint's interface): untracked ingress
  (``raw-PREROUTING``: failsafe inbound ports, and replies of outbound failsafe connections, are
  accepted there and go on; Allow accepts the packet untracked, Deny drops, nothing: on), then
  pre-DNAT (``mangle-PREROUTING``: failsafe inbound goes on; Allow accepts, Deny drops), then
  the normal chain (``filter-INPUT``: failsafe inbound accepts; tiers, profiles, drop).
* **output** (from the host, leaving by the endpoint's interface): untracked egress
  (``raw-OUTPUT``: failsafe outbound, replies of inbound failsafe connections go on), then the
  normal chain (``filter-OUTPUT``: failsafe outbound accepts; tiers, profiles, drop).
* **forward in / out** (through the host, arriving on / leaving by the endpoint's interface):
  in: untracked and pre-DNAT ingress as for input (an Allow there also skips the forward
  policy), then the applyOnForward ingress tiers; out: the applyOnForward egress tiers.  With
  no applyOnForward policy the host endpoint does not police forwarded traffic.
* **workload to its own host**: the workload's egress (``cali-fw-*``), then
  DefaultEndpointToHostAction (``cali-wl-to-host``); host endpoint policy is not consulted.

Invariant: pure; a stage's verdict is "none" exactly when it neither accepted nor dropped, and
the walk's verdict is that of its last stage.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from pycalico.felix.calc.verdicts import (
    DirectionTrace,
    Packet,
    SetMembers,
    evaluate_direction,
    in_nets,
)
from pycalico.felix.messages import HostEndpointUpdate, PolicyID, ProfileID, ResolvedRule, TierInfo

StageName = Literal["untracked", "preDNAT", "normal", "forward", "workload-to-host", "local"]
Walk = Literal["input", "output", "forward-in", "forward-out"]


class FailsafePort(Protocol):
    """A failsafe port as Felix's config parses it (``felix.rules.model.FailsafePort``)."""

    @property
    def protocol(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def net(self) -> str: ...


class NodeSettings(Protocol):
    """The node's Felix settings explain reads: ``felix.rules.model.RenderConfig``, as the
    node's Felix parses it (``felix.config``; ``ctl.explain`` builds it).  A protocol because
    ``calc`` sits below ``rules`` and ``config`` in Felix's layers."""

    @property
    def failsafe_inbound(self) -> Sequence[FailsafePort]: ...
    @property
    def failsafe_outbound(self) -> Sequence[FailsafePort]: ...
    @property
    def default_endpoint_to_host_action(self) -> str: ...
    @property
    def vxlan_port(self) -> int: ...
    @property
    def allow_vxlan_packets_from_workloads(self) -> bool: ...
    @property
    def allow_ipip_packets_from_workloads(self) -> bool: ...


PolicyRules = Callable[[PolicyID], Sequence[ResolvedRule]]
ProfileRules = Callable[[ProfileID], Sequence[ResolvedRule]]


@dataclass(frozen=True, slots=True)
class Stage:
    """One chain of the walk: which stage, what its policies did, the failsafe port it used."""

    name: StageName
    trace: DirectionTrace
    failsafe: str = ""  # "tcp 22 (failsafeInboundHostPorts)" when a failsafe rule accepted


def failsafe_match(
    ports: Sequence[FailsafePort], packet: Packet, inbound: bool, *, replies: bool = False
) -> FailsafePort | None:
    """The failsafe port ``rules.endpoints.failsafe_rules`` accepts ``packet`` for, if any:
    same protocol, destination port (source port for ``replies``), remote side in ``net``."""
    if not packet.has_ports:
        return None
    port = packet.source_port if replies else packet.destination_port
    remote = packet.source if inbound else packet.destination
    for candidate in ports:
        if candidate.protocol != packet.protocol or candidate.port != port:
            continue
        if candidate.net and not in_nets(remote, [candidate.net]):
            continue
        return candidate
    return None


def _has(tiers: Sequence[TierInfo], ingress: bool) -> bool:
    return any(t.ingress_policies if ingress else t.egress_policies for t in tiers)


@dataclass(frozen=True)
class _Context:
    endpoint: HostEndpointUpdate
    policy_rules: Callable[[bool], PolicyRules]
    profile_rules: Callable[[bool], ProfileRules]
    packet: Packet
    sets: SetMembers
    config: NodeSettings

    def run(
        self,
        tiers: Sequence[TierInfo],
        ingress: bool,
        *,
        end_of_tier: bool = True,
        after: Literal["profiles", "none", "allow"] = "profiles",
    ) -> DirectionTrace:
        return evaluate_direction(
            ingress=ingress,
            tiers=tiers,
            profile_ids=self.endpoint.profile_ids if after == "profiles" else (),
            policy_rules=self.policy_rules(ingress),
            profile_rules=self.profile_rules(ingress),
            packet=self.packet,
            sets=self.sets,
            end_of_tier=end_of_tier,
            after=after,
        )

    def failsafe(self, outbound_side: bool, *, raw: bool) -> str:
        """The failsafe rule of a chain that accepts the packet ("" if none): the chain's own
        direction's ports, and in raw also the other direction's replies."""
        config, packet = self.config, self.packet
        own, own_name = (
            (config.failsafe_outbound, "failsafeOutboundHostPorts")
            if outbound_side
            else (config.failsafe_inbound, "failsafeInboundHostPorts")
        )
        other, other_name = (
            (config.failsafe_inbound, "failsafeInboundHostPorts")
            if outbound_side
            else (config.failsafe_outbound, "failsafeOutboundHostPorts")
        )
        inbound = not outbound_side
        found = failsafe_match(own, packet, inbound)
        if found is not None:
            return f"{found.protocol} {found.port} ({own_name})"
        if raw:
            found = failsafe_match(other, packet, inbound, replies=True)
            if found is not None:
                return f"{found.protocol} source port {found.port} (reply, {other_name})"
        return ""


def _failsafe_trace(ingress: bool, port: str, final: bool) -> DirectionTrace:
    if final:
        return DirectionTrace(ingress, (), (), "allow", f"failsafe port {port}")
    return DirectionTrace(
        ingress, (), (), "none", f"failsafe port {port}: accepted here, on to the next stage"
    )


def _prefilter(ctx: _Context, stages: list[Stage], name: StageName, ingress: bool) -> bool:
    """One untracked or pre-DNAT stage; True when it decided (its trace says how)."""
    tiers = ctx.endpoint.untracked_tiers if name == "untracked" else ctx.endpoint.pre_dnat_tiers
    if not _has(tiers, ingress):
        return False
    port = ctx.failsafe(not ingress, raw=name == "untracked")
    if port:
        stages.append(Stage(name, _failsafe_trace(ingress, port, final=False), port))
        return False
    trace = ctx.run(tiers, ingress, end_of_tier=False, after="none")
    if trace.verdict == "allow":
        what = "untracked policy (not conntracked)" if name == "untracked" else "pre-DNAT policy"
        trace = _with_reason(trace, f"{trace.reason}: accepted by {what}")
    stages.append(Stage(name, trace))
    return trace.verdict != "none"


def _with_reason(trace: DirectionTrace, reason: str) -> DirectionTrace:
    return DirectionTrace(
        trace.ingress, trace.tiers, trace.profiles, trace.verdict, reason, trace.pre_policy
    )


def host_walk(
    walk: Walk,
    endpoint: HostEndpointUpdate,
    policy_rules: Callable[[bool], PolicyRules],
    profile_rules: Callable[[bool], ProfileRules],
    packet: Packet,
    sets: SetMembers,
    config: NodeSettings,
) -> tuple[Stage, ...]:
    """The stages ``packet`` meets at ``endpoint`` on ``walk``; the last one decided."""
    ctx = _Context(endpoint, policy_rules, profile_rules, packet, sets, config)
    stages: list[Stage] = []
    ingress = walk in ("input", "forward-in")
    if walk != "forward-out" and _prefilter(ctx, stages, "untracked", ingress):
        return tuple(stages)
    if ingress and _prefilter(ctx, stages, "preDNAT", ingress):
        return tuple(stages)
    if walk in ("forward-in", "forward-out"):
        stages.append(Stage("forward", ctx.run(endpoint.forward_tiers, ingress, after="allow")))
        return tuple(stages)
    port = ctx.failsafe(not ingress, raw=False)
    if port:
        stages.append(Stage("normal", _failsafe_trace(ingress, port, final=True), port))
    else:
        stages.append(Stage("normal", ctx.run(endpoint.tiers, ingress)))
    return tuple(stages)


def workload_to_host(egress: DirectionTrace, config: NodeSettings) -> Stage:
    """``cali-wl-to-host`` after the workload's egress allowed the packet (a denied packet
    never gets here): the configured DefaultEndpointToHostAction decides."""
    action = config.default_endpoint_to_host_action
    if egress.verdict != "allow":
        trace = DirectionTrace(True, (), (), "deny", "the workload's egress dropped it")
    elif action == "Drop":
        trace = DirectionTrace(True, (), (), "deny", "DefaultEndpointToHostAction Drop")
    elif action == "Accept":
        trace = DirectionTrace(True, (), (), "allow", "DefaultEndpointToHostAction Accept")
    else:
        reason = "DefaultEndpointToHostAction Return: Calico's chains accept it (other input rules of the host may not)"
        trace = DirectionTrace(True, (), (), "allow", reason)
    return Stage("workload-to-host", trace)
