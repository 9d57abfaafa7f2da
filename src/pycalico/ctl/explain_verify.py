"""``calicoctl explain --verify``: send the explained probe and ask the kernel which rule decided it.

What it is: the I/O around ``explain_trace``.  For one ``Explanation`` it finds the source pod's
network namespace and the namespaces of the source's and destination's nodes (named network
namespaces, as the lab and ``ip netns`` make them, or the current one: a node), installs in each
node a temporary table ``inet pycalico-verify-<pid>`` whose one rule, hooked at prerouting before
everything else (priority -350), sets ``meta nftrace`` on exactly the probe's packet (addresses,
protocol, source port 40000, destination port, or the ICMP echo id), subscribes to the node's
trace events (netlink group ``NFNLGRP_NFTRACE``: subscribed before the probe leaves, so nothing
is missed, and no process to start), deletes conntrack entries of the probe's tuple (a leftover
entry would accept it before policy), sends the probe from the pod (TCP connect / UDP datagram /
ICMP echo request) and reads events until each side's endpoint chain has decided or 2 s passed;
then maps rule handles to Felix's rule comments (``nft -j list table inet calico``) and those
to policy and rule index (the rule ids ``calc.active_rules`` gives the explained policies).
What it is not: the decision logic (``explain_trace``) or the explanation (``felix.calc``).

Invariants: the temporary table is deleted and every socket closed on every path, also on
failure and timeout; a side the packet never reached (dropped on egress) is "not reached",
not a disagreement.  Needs root.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import select
import socket
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pycalico.ctl import explain_trace as trace
from pycalico.felix.calc.active_rules import builtin_profile, policy_owner, profile_owner, resolve
from pycalico.felix.calc.explain import Cluster, Explanation, SideTrace, owner_name
from pycalico.felix.calc.policies import policy_id
from pycalico.felix.messages import ProfileID
from pycalico.felix.rules import names
from pycalico.model.endpoints import HostEndpoint, WorkloadEndpoint
from pycalico.model.policy import NetworkPolicy
from pycalico.netns.namespace import NETNS_DIR, enter, run

NETLINK_NETFILTER = 12
SOL_NETLINK = 270
NETLINK_ADD_MEMBERSHIP = 1
TABLE_PREFIX = "pycalico-verify-"
TIMEOUT = 2.0
ANSWER_WAIT = 1.0


class VerifyError(RuntimeError):
    """Verify cannot run here (not root, no namespace found...): the message names what is missing."""


@dataclass(frozen=True)
class SideCheck:
    side: str  # "egress" | "ingress"
    node: str
    explained: trace.Decision
    kernel: trace.Decision
    agrees: bool | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "kernel": self.kernel.verdict,
            "rule": self.kernel.text(),
            "kernelDecision": self.kernel.as_dict(),
            "explained": self.explained.as_dict(),
            "agrees": self.agrees,
        }


@dataclass(frozen=True)
class Verification:
    sides: tuple[SideCheck, ...]
    answered: bool  # TCP: the connection was accepted; UDP/ICMP: an answer came back
    seconds: float

    @property
    def disagrees(self) -> bool:
        return any(side.agrees is False for side in self.sides)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {side.side: side.as_dict() for side in self.sides}
        out["agrees"] = not self.disagrees
        out["answered"] = self.answered
        return out

    def text(self) -> str:
        lines = ["", "Verify (the probe sent from the source pod, traced in the kernel):"]
        for side in self.sides:
            mark = {True: "agrees", False: "DISAGREES", None: "not checked"}[side.agrees]
            lines.append(f"  {side.side} (node {side.node}): kernel {side.kernel.text()}: {mark}")
            if side.agrees is False:
                lines.append(f"    explain said: {side.explained.text()}")
        lines.append(f"  answered: {'yes' if self.answered else 'no'}")
        return "\n".join(lines) + "\n"


# --- which chains stand for which policies ------------------------------------------------------


def _rule_index(ingress: list[Any] | None, egress: list[Any] | None, namespace: str | None,
                owner: str, inbound: bool) -> dict[str, int]:  # fmt: skip
    rules = resolve(ingress, egress, namespace, owner)
    return {rule.rule_id: i for i, rule in enumerate(rules.inbound if inbound else rules.outbound)}


def owners(cluster: Cluster, side: SideTrace, ingress: bool) -> dict[str, trace.Owner]:
    """Chain -> ``Owner`` for every policy and profile explain evaluated on ``side``."""
    out: dict[str, trace.Owner] = {}
    wanted = {p.owner for tier in side.trace.tiers for p in tier.policies}
    for policy in cluster.policies:
        pid = policy_id(policy)
        if pid not in wanted:
            continue
        namespace = policy.metadata.namespace if isinstance(policy, NetworkPolicy) else None
        index = _rule_index(policy.spec.ingress, policy.spec.egress, namespace,
                            policy_owner(pid), ingress)  # fmt: skip
        out[names.policy_chain(pid, inbound=ingress)] = trace.Owner(
            owner_name(pid), "policy", index
        )
    profiles = {p.name: p for p in cluster.profiles}
    for step in side.trace.profiles:
        assert isinstance(step.owner, ProfileID)
        name = step.owner.name
        profile = profiles.get(name) or builtin_profile(name)
        ingress_rules = profile.spec.ingress if profile is not None else None
        egress_rules = profile.spec.egress if profile is not None else None
        index = _rule_index(ingress_rules, egress_rules, None, profile_owner(name), ingress)
        chain = names.profile_chain(step.owner, inbound=ingress)
        out[chain] = trace.Owner(owner_name(step.owner), "profile", index)
    return out


# --- namespaces ---------------------------------------------------------------------------------


def _links(namespace: str | None) -> list[dict[str, Any]]:
    base = ["ip", "-j", "addr"] if namespace is None else ["ip", "-n", namespace, "-j", "addr"]
    try:
        links = json.loads(run(*base) or "[]")
    except (RuntimeError, json.JSONDecodeError):
        return []
    return [link for link in links if isinstance(link, dict)]


def _namespace_ids(namespace: str | None) -> dict[int, str]:
    """The named namespaces ``namespace`` knows by a netns id (a veth's ``link_netnsid``)."""
    base = ["ip", "-j"] if namespace is None else ["ip", "-n", namespace, "-j"]
    try:
        listed = json.loads(run(*base, "netns", "list-id") or "[]")
    except (RuntimeError, json.JSONDecodeError):
        return {}
    return {
        entry["nsid"]: entry["name"]
        for entry in listed
        if isinstance(entry, dict) and isinstance(entry.get("nsid"), int) and entry.get("name")
    }


def _named_namespaces() -> list[str]:
    try:
        return sorted(os.listdir(NETNS_DIR))
    except OSError:
        return []


def _has_interface(namespace: str | None, name: str) -> bool:
    try:
        with _in_netns(namespace):
            socket.if_nametoindex(name)
    except OSError:
        return False
    return True


def _holds_address(namespace: str, address: str) -> bool:
    """Is ``address`` local in ``namespace``?  (Binding to it succeeds only then.)"""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    try:
        with enter(namespace):
            probe = socket.socket(family, socket.SOCK_DGRAM)
        with probe:
            probe.bind((address, 0))
    except OSError:
        return False
    return True


@dataclass(frozen=True)
class Place:
    node_netns: str | None  # None: the current namespace
    pod_netns: str


_found: dict[tuple[str, str], Place] = {}  # (interface, address) -> where, for repeated verifies


def find_place(endpoint: WorkloadEndpoint, address: str) -> Place:
    """The endpoint's node namespace (holding its host-side interface: the current one, or a
    named one) and its pod's (a named namespace holding ``address`` on that interface's veth
    peer).  Cheap checks in process first; ``ip`` only for the candidates.  A place found
    before is reused while it still holds the interface and the address."""
    interface = endpoint.spec.interface_name or ""
    known = _found.get((interface, address))
    if (
        known is not None
        and _has_interface(known.node_netns, interface)
        and _holds_address(known.pod_netns, address)
    ):
        return known
    place = _find_place(endpoint, interface, address)
    _found[(interface, address)] = place
    return place


def _find_place(endpoint: WorkloadEndpoint, interface: str, address: str) -> Place:
    named = _named_namespaces()
    nodes = [ns for ns in (None, *named) if _has_interface(ns, interface)]
    pods = [ns for ns in named if ns not in nodes and _holds_address(ns, address)]
    pairs = []
    for node in nodes:
        node_links = [link for link in _links(node) if link.get("ifname") == interface]
        # Interface indexes repeat across namespaces (two labs, or kind clusters, can hold the
        # same pod address behind the same indexes): the peer's namespace id tells them apart.
        peer_names = _namespace_ids(node)
        for pod in pods:
            pod_links = [link for link in _links(pod)
                         if any(a.get("local") == address for a in link.get("addr_info", ()))]  # fmt: skip
            if any(n.get("link_index") == p.get("ifindex") and p.get("link_index") == n.get("ifindex")
                   and peer_names.get(n.get("link_netnsid", -1)) == pod
                   for n in node_links for p in pod_links):  # fmt: skip
                pairs.append((node, pod))
    if len(pairs) > 1 and any(node is None for node, _ in pairs):
        pairs = [pair for pair in pairs if pair[0] is None]  # on a node: this one
    if len(pairs) != 1:
        what = f"{endpoint.metadata.namespace}/{endpoint.spec.pod or endpoint.metadata.name}"
        found = "none" if not pairs else ", ".join(f"{n or '(current)'}+{p}" for n, p in pairs)
        raise VerifyError(
            f"--verify: cannot find the network namespaces of {what}: want a namespace holding "
            f"interface {interface!r} (the node: the current one or one under {NETNS_DIR}) "
            f"whose veth peer holds {address} (the pod); found {found}"
        )
    return Place(*pairs[0])


# --- the node side: temporary table, trace socket -----------------------------------------------


def _in(namespace: str | None, *command: str, input: str | None = None, check: bool = True) -> str:
    """``command`` in ``namespace``; a missing tool or a failure is a ``VerifyError``."""
    enter_it = [] if namespace is None else ["nsenter", f"--net={NETNS_DIR}/{namespace}"]
    try:
        return run(*enter_it, *command, input=input, check=check)
    except FileNotFoundError as error:
        raise VerifyError(f"--verify needs the {command[0]!r} command: {error}") from error
    except RuntimeError as error:
        raise VerifyError(f"--verify: {error}") from error


@contextlib.contextmanager
def _in_netns(namespace: str | None) -> Iterator[None]:
    if namespace is None:
        yield
    else:
        with enter(namespace):
            yield


def probe_match(explanation: Explanation, icmp_id: int) -> str:
    packet = explanation.packet
    family = "ip6" if packet.family == 6 else "ip"
    match = f"{family} saddr {packet.source} {family} daddr {packet.destination}"
    if packet.is_icmp:
        icmp = "icmpv6" if packet.family == 6 else "icmp"
        return f"{match} {icmp} type echo-request {icmp} id {icmp_id}"
    return (f"{match} meta l4proto {packet.protocol} th sport {packet.source_port} "
            f"th dport {packet.destination_port}")  # fmt: skip


@contextlib.contextmanager
def traced(namespace: str | None, match: str) -> Iterator[socket.socket]:
    """A trace-event socket in ``namespace`` and the table marking the probe, both removed on
    exit.  The socket subscribes before the table exists: no event can be missed."""
    with _in_netns(namespace):
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
    table = f"{TABLE_PREFIX}{os.getpid()}"
    try:
        # Bound first: binding sets the first 32 groups from its mask, clearing a membership
        # added before; and the kernel's notifications skip a socket of port id 0 (unbound).
        sock.bind((0, 0))
        sock.setsockopt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, trace.NFNLGRP_NFTRACE)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
        _in(namespace, "nft", "-f", "-", input=(
            f"table inet {table}\ndelete table inet {table}\n"
            f"table inet {table} {{\n chain trace {{\n"
            f"  type filter hook prerouting priority -350; policy accept;\n"
            f"  {match} meta nftrace set 1\n }}\n}}\n"
        ))  # fmt: skip
        yield sock
    finally:
        _in(namespace, "nft", "delete", "table", "inet", table, check=False)
        sock.close()


def _conntrack_forget(namespace: str | None, explanation: Explanation) -> None:
    packet = explanation.packet
    if not packet.has_ports:
        return  # ICMP: a fresh echo id is a fresh flow
    family = "ipv6" if packet.family == 6 else "ipv4"
    _in(namespace, "conntrack", "-D", "-f", family, "-p", packet.protocol, "-s", packet.source,
        "-d", packet.destination, "--sport", str(packet.source_port), "--dport",
        str(packet.destination_port), check=False)  # fmt: skip


# --- the pod side: the probe --------------------------------------------------------------------


def _icmp_echo(identifier: int, family: int) -> bytes:
    header = struct.pack("!BBHHH", 128 if family == 6 else 8, 0, 0, identifier, 1)
    payload = b"pycalico explain --verify"
    if family == 6:
        return header + payload  # the kernel computes ICMPv6 checksums
    data = header + payload
    padded = data + b"\0" * (len(data) % 2)
    total = sum(struct.unpack(f"!{len(padded) // 2}H", padded))
    total = (total >> 16) + (total & 0xFFFF)
    checksum = ~(total + (total >> 16)) & 0xFFFF
    return data[:2] + struct.pack("!H", checksum) + data[4:]


def send_probe(explanation: Explanation, pod_netns: str, icmp_id: int) -> socket.socket:
    """The probe's socket, created in the pod's namespace (the caller closes it)."""
    packet = explanation.packet
    family = socket.AF_INET6 if packet.family == 6 else socket.AF_INET
    with enter(pod_netns):
        if packet.is_icmp:
            number = socket.IPPROTO_ICMPV6 if packet.family == 6 else socket.IPPROTO_ICMP
            sock = socket.socket(family, socket.SOCK_RAW, number)
        elif packet.protocol == "tcp":
            sock = socket.socket(family, socket.SOCK_STREAM)
            # Closed with a reset: no TIME_WAIT keeps port 40000 from the next probe.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        elif packet.protocol == "udp":
            sock = socket.socket(family, socket.SOCK_DGRAM)
        else:
            raise VerifyError(f"--verify: cannot send a {packet.protocol} probe (TCP, UDP, ICMP)")
    try:
        sock.setblocking(False)
        destination = (packet.destination, packet.destination_port or 0)
        if packet.is_icmp:
            sock.sendto(_icmp_echo(icmp_id, packet.family), (packet.destination, 0))
            return sock
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((packet.source, packet.source_port or 0))
        if packet.protocol == "tcp":
            sock.connect_ex(destination)
        else:
            sock.sendto(b"pycalico explain --verify", destination)
    except OSError as error:
        sock.close()
        raise VerifyError(
            f"--verify: sending the probe from {pod_netns} failed: {error}"
        ) from error
    return sock


def _answered(sock: socket.socket, explanation: Explanation, icmp_id: int, wait: float) -> bool:
    """Did the probe get its answer (TCP: accepted; UDP, ICMP: a reply) within ``wait``?"""
    packet = explanation.packet
    deadline = time.monotonic() + wait
    while True:
        remaining = max(0.0, deadline - time.monotonic())
        if packet.protocol == "tcp":
            if select.select([], [sock], [], remaining)[1]:
                return sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
        elif select.select([sock], [], [], remaining)[0]:
            with contextlib.suppress(OSError):
                if _is_reply(sock.recv(65535), explanation, icmp_id):
                    return True
            continue
        if remaining <= 0:
            return False


def _is_reply(data: bytes, explanation: Explanation, icmp_id: int) -> bool:
    packet = explanation.packet
    if not packet.is_icmp:
        return True
    offset = 0 if packet.family == 6 else (data[0] & 0x0F) * 4  # raw IPv4 sockets get the header
    reply = 129 if packet.family == 6 else 0
    return (
        len(data) >= offset + 6
        and data[offset] == reply
        and struct.unpack_from("!H", data, offset + 4)[0] == icmp_id
    )


# --- verify -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Side:
    name: str  # "egress" | "ingress"
    explained: SideTrace
    node: str | None  # its node's namespace (None: the current one)
    chain: str  # its endpoint chain
    owners: dict[str, trace.Owner]


def verify(cluster: Cluster, explanation: Explanation, timeout: float = TIMEOUT) -> Verification:
    """Send ``explanation``'s probe and compare what the kernel decided with what explain said."""
    if os.geteuid() != 0:
        raise VerifyError("--verify needs root (nft tables, netlink trace events, setns)")
    source = explanation.source.endpoint
    if not isinstance(source, WorkloadEndpoint) or explanation.egress is None:
        raise VerifyError("--verify needs a workload endpoint as the source (it sends the probe)")
    started = time.monotonic()
    destination = explanation.destination.endpoint
    if isinstance(destination, HostEndpoint) or any(
        side is not None and side.kind != "workload"
        for side in (explanation.forward_out, explanation.forward_in, explanation.ingress)
    ):
        # Host endpoint stages run in other chains (raw, mangle, cali-th-*/cali-fh-*) that the
        # trace reading does not follow yet: refuse rather than compare the wrong chain.
        raise VerifyError(
            "--verify traces workload endpoint sides only; this flow crosses host endpoint policy"
        )
    places = [find_place(source, explanation.source.address)]
    if destination is not None and explanation.ingress is not None:
        places.append(find_place(destination, explanation.destination.address))
    sides = [
        _Side("egress", explanation.egress, places[0].node_netns,
              names.from_workload_chain(source.spec.interface_name or ""),
              owners(cluster, explanation.egress, ingress=False)),
    ]  # fmt: skip
    if destination is not None and explanation.ingress is not None:
        sides.append(
            _Side("ingress", explanation.ingress, places[1].node_netns,
                  names.to_workload_chain(destination.spec.interface_name or ""),
                  owners(cluster, explanation.ingress, ingress=True))
        )  # fmt: skip
    nodes = list(dict.fromkeys(side.node for side in sides))
    icmp_id = random.randrange(1, 0xFFFF)
    match = probe_match(explanation, icmp_id)
    pod_netns = places[0].pod_netns
    with contextlib.ExitStack() as stack:
        sockets = {node: stack.enter_context(traced(node, match)) for node in nodes}
        for node in nodes:
            _conntrack_forget(node, explanation)
        events: dict[str | None, list[trace.TraceEvent]] = {node: [] for node in nodes}
        probe = stack.enter_context(contextlib.closing(send_probe(explanation, pod_netns, icmp_id)))
        deadline = time.monotonic() + timeout
        rules: dict[str | None, dict[int, trace.KernelRule]] = {}
        while True:
            remaining = deadline - time.monotonic()
            ready = select.select(list(sockets.values()), [], [], max(0.0, min(remaining, 0.05)))
            for node, sock in sockets.items():
                if sock in ready[0]:
                    events[node] += _drain(sock)
            kernel = _decisions(sides, events, rules, final=False)
            if _complete(sides, kernel) or remaining <= 0:
                break
        kernel = _decisions(sides, events, rules, final=True)
        allowed = all(
            kernel.get(side.chain, trace.NOT_REACHED).verdict == "allow" for side in sides
        )
        # An allowed probe's answer may still be on its way: wait for it a little.
        answered = _answered(probe, explanation, icmp_id, ANSWER_WAIT if allowed else 0.0)
    checks = []
    for side in sides:
        explained = trace.expected(side.explained.trace)
        decision = kernel.get(side.chain, trace.NOT_REACHED)
        checks.append(SideCheck(side.name, side.explained.node or str(side.node), explained,
                                decision, trace.agrees(explained, decision)))  # fmt: skip
    if all(c.kernel.verdict == "not reached" for c in checks):
        raise VerifyError(
            f"--verify: no trace of the probe reached Felix's chains within {timeout:.0f} s "
            f"(is Felix running, the table inet calico programmed?)"
        )
    return Verification(tuple(checks), answered, time.monotonic() - started)


def _drain(sock: socket.socket) -> list[trace.TraceEvent]:
    events: list[trace.TraceEvent] = []
    while True:
        try:
            data = sock.recv(1 << 16, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return events
        events += trace.parse_trace(data)


def _complete(sides: list[_Side], kernel: dict[str, trace.Decision]) -> bool:
    """Every side decided, or a side denied (the next one will never see the packet)."""
    for side in sides:
        decision = kernel.get(side.chain)
        if decision is None:
            return False
        if decision.verdict == "deny":
            return True
    return True


def _decisions(
    sides: list[_Side],
    events: dict[str | None, list[trace.TraceEvent]],
    rules: dict[str | None, dict[int, trace.KernelRule]],
    *,
    final: bool,
) -> dict[str, trace.Decision]:
    """The kernel's decisions so far; a node's rule handles are looked up (one ``nft``
    listing) once its trace reached the end of an endpoint chain."""
    out: dict[str, trace.Decision] = {}
    for side in sides:
        node_events = events.get(side.node, [])
        if side.chain not in trace.decide(node_events, {}, side.owners) and not final:
            continue
        if not any(e.chain == side.chain for e in node_events):
            continue
        if side.node not in rules:
            listing = _in(side.node, "nft", "-j", "list", "table", names.TABLE_FAMILY,
                          names.TABLE_NAME)  # fmt: skip
            rules[side.node] = trace.kernel_rules(json.loads(listing or "{}"))
        decided = trace.decide(node_events, rules[side.node], side.owners)
        if side.chain in decided:
            out[side.chain] = decided[side.chain]
    return out
