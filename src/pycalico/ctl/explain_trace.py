"""``calicoctl explain --verify``'s reading of the kernel: nftables trace events -> the deciding rule.

What it is: pure functions.  ``parse_trace`` decodes the kernel's ``NFT_MSG_TRACE`` netlink
messages (multicast group ``NFNLGRP_NFTRACE``: one event per rule a traced packet matched, per
chain return and per base-chain policy); ``kernel_rules`` reads rule handles, chains and
comments from ``nft -j -a list table inet calico``; ``decide`` walks one node's events through
Felix's chains and says, per endpoint chain the packet went through (``cali-fw-*``: a
workload's egress, ``cali-tw-*``: its ingress), what decided it: a policy or profile rule
(named by the caller's ``Owner`` map: chain -> policy, rule id -> index), an end-of-tier drop,
"no profile matched", a drop before policy, or conntrack (an established flow).  ``expected``
gives explain's answer in the same shape, ``agrees`` compares them.
What it is not: I/O (``explain_verify``: the netlink socket, the probe, the temporary table).

Invariants: the walk relies on the chain layout ``felix.rules.endpoints`` renders (an endpoint
chain ends a packet's policy by a drop, or by the accept-mark ``return`` right after the
allowing policy's or profile's rule returned); a rule id is the ``cali:<id>`` comment every
policy/profile rule carries (``felix.rules.policy.render_rule``).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pycalico.felix.calc.explain import owner_name
from pycalico.felix.calc.verdicts import DirectionTrace
from pycalico.felix.rules import flows, names
from pycalico.lib import netlink

NFNL_SUBSYS_NFTABLES = 10
NFT_MSG_TRACE = 17
TRACE_MESSAGE = (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_TRACE
NFNLGRP_NFTRACE = 9
# enum nft_trace_attributes / nft_trace_types / nft_verdict_attributes (uapi nf_tables.h)
_TABLE, _CHAIN, _HANDLE, _TYPE, _VERDICT, _ID = 1, 2, 3, 4, 5, 6
_NETWORK_HEADER, _TRANSPORT_HEADER, _POLICY = 8, 9, 16
_KINDS = {1: "policy", 2: "return", 3: "rule"}
_VERDICT_CODE, _VERDICT_CHAIN = 1, 2
_VERDICTS = {0: "drop", 1: "accept", 2: "stolen", 3: "queue", 4: "repeat",
             -1: "continue", -2: "break", -3: "jump", -4: "goto", -5: "return"}  # fmt: skip

EGRESS_PREFIX = "cali-fw-"
INGRESS_PREFIX = "cali-tw-"
_POLICY_PREFIXES = ("cali-pi-", "cali-po-")


@dataclass(frozen=True, slots=True)
class TraceEvent:
    """One trace event: which chain of which table, and what happened there."""

    trace_id: int
    table: str
    chain: str
    kind: str  # "rule" (a rule matched), "return" (end of a chain), "policy" (base chain policy)
    handle: int | None
    verdict: str  # "accept", "drop", "continue", "jump", "goto", "return", ...
    target: str = ""  # the chain of a jump/goto
    network_header: bytes = b""
    transport_header: bytes = b""


def _string(value: bytes | None) -> str:
    return (value or b"").split(b"\0", 1)[0].decode(errors="replace")


def _be32(value: bytes | None) -> int | None:
    return int(struct.unpack("!i", value[:4])[0]) if value and len(value) >= 4 else None


def parse_trace(buffer: bytes) -> list[TraceEvent]:
    """Every trace event in one netlink datagram (other messages are skipped)."""
    events: list[TraceEvent] = []
    offset = 0
    while offset + 16 <= len(buffer):
        length, kind = struct.unpack_from("=IH", buffer, offset)
        if length < 16:
            break
        if kind == TRACE_MESSAGE:
            attributes = netlink.attributes(buffer[offset + 20 : offset + length])  # after nfgenmsg
            verdict = netlink.attributes(attributes.get(_VERDICT, b""))
            code = _be32(verdict.get(_VERDICT_CODE))
            if code is None:
                code = _be32(attributes.get(_POLICY))
            handle = attributes.get(_HANDLE)
            events.append(
                TraceEvent(
                    trace_id=(_be32(attributes.get(_ID)) or 0) & 0xFFFFFFFF,
                    table=_string(attributes.get(_TABLE)),
                    chain=_string(attributes.get(_CHAIN)),
                    kind=_KINDS.get(_be32(attributes.get(_TYPE)) or 0, "unknown"),
                    handle=int(struct.unpack("!Q", handle[:8])[0]) if handle else None,
                    verdict=_VERDICTS.get(code if code is not None else -1, str(code)),
                    target=_string(verdict.get(_VERDICT_CHAIN)),
                    network_header=attributes.get(_NETWORK_HEADER, b""),
                    transport_header=attributes.get(_TRANSPORT_HEADER, b""),
                )
            )
        offset += netlink.align(length)
    return events


@dataclass(frozen=True, slots=True)
class KernelRule:
    chain: str
    comment: str


def kernel_rules(document: Mapping[str, Any]) -> dict[int, KernelRule]:
    """Handle -> (chain, comment) of every rule in one ``nft -j -a list table`` document."""
    out: dict[int, KernelRule] = {}
    for item in document.get("nftables", ()):
        rule = item.get("rule") if isinstance(item, dict) else None
        if isinstance(rule, dict) and "handle" in rule:
            out[int(rule["handle"])] = KernelRule(str(rule["chain"]), str(rule.get("comment", "")))
    return out


@dataclass(frozen=True, slots=True)
class Owner:
    """What a policy or profile chain stands for: its name (as explain prints it) and rule ids."""

    name: str
    kind: str  # "policy" | "profile"
    rule_index: Mapping[str, int] = field(default_factory=dict)  # rule id -> index


@dataclass(frozen=True, slots=True)
class Decision:
    """What decided one side: the same shape for explain's answer and for the kernel's."""

    verdict: str  # "allow" | "deny" | "not reached" (the packet never got to this side)
    kind: (
        str  # "policy" | "profile" | "end-of-tier" | "no-profile" | "pre-policy" | "conntrack" | ""
    )
    owner: str = ""  # policy/profile name as explain prints it, or the tier of an end-of-tier
    rule: int | None = None
    detail: str = ""  # a drop before policy: why; an unnamed rule: its chain and comment

    def text(self) -> str:
        if self.verdict == "not reached":
            return "not reached (dropped before this side)"
        if self.kind in ("policy", "profile"):
            rule = "?" if self.rule is None else str(self.rule)
            return f"{self.verdict} by {self.owner} rule {rule}"
        if self.kind == "end-of-tier":
            return f"{self.verdict}: end of tier {self.owner}"
        if self.kind == "no-profile":
            return f"{self.verdict}: no profile matched"
        if self.kind == "conntrack":
            return f"{self.verdict} by conntrack (an established flow: policy not consulted)"
        return f"{self.verdict} before policy ({self.detail})" if self.detail else self.verdict

    def as_dict(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "decidedBy": self.kind, "owner": self.owner,
                "rule": self.rule, "text": self.text()}  # fmt: skip


NOT_REACHED = Decision("not reached", "")


def expected(trace: DirectionTrace) -> Decision:
    """Explain's deciding step of one side, in ``Decision``'s shape."""
    if trace.pre_policy:
        return Decision("deny", "pre-policy", detail=trace.pre_policy[0])
    if trace.tiers and trace.tiers[-1].outcome in ("allow", "deny", "end-of-tier-deny"):
        tier = trace.tiers[-1]
        if tier.outcome == "end-of-tier-deny":
            return Decision("deny", "end-of-tier", tier.name)
        step = next(p for p in tier.policies if p.outcome == tier.outcome)
        return Decision(trace.verdict, "policy", owner_name(step.owner), step.rule_index)
    if trace.profiles and trace.profiles[-1].outcome in ("allow", "deny"):
        step = trace.profiles[-1]
        return Decision(trace.verdict, "profile", owner_name(step.owner), step.rule_index)
    return Decision("deny", "no-profile")


def agrees(explained: Decision, kernel: Decision) -> bool | None:
    """Same verdict and deciding rule (None: the kernel never evaluated this side)."""
    if kernel.verdict == "not reached":
        return None
    if explained.kind == "pre-policy":
        return (kernel.verdict, kernel.kind) == ("deny", "pre-policy")
    return (explained.verdict, explained.kind, explained.owner, explained.rule) == (
        kernel.verdict, kernel.kind, kernel.owner, kernel.rule,
    )  # fmt: skip


def _rule_decision(
    verdict: str, chain: str, handle: int | None, rules: Mapping[int, KernelRule],
    owners: Mapping[str, Owner],
) -> Decision:  # fmt: skip
    rule = rules.get(handle) if handle is not None else None
    comment = rule.comment if rule is not None else ""
    owner = owners.get(chain)
    kind = "policy" if chain.startswith(_POLICY_PREFIXES) else "profile"
    if owner is None:
        return Decision(verdict, kind, chain, None, f"{chain} {comment}".strip())
    rule_id = comment[len(flows.RULE_COMMENT) :] if comment.startswith(flows.RULE_COMMENT) else ""
    index = next((i for r, i in owner.rule_index.items() if r[:40] == rule_id), None)
    return Decision(verdict, owner.kind, owner.name, index, "" if index is not None else comment)


def _drop_decision(comment: str) -> Decision:
    if comment.startswith("End of tier "):
        return Decision("deny", "end-of-tier", comment[len("End of tier ") :].split(". ", 1)[0])
    if comment == "Drop if no profiles matched":
        return Decision("deny", "no-profile")
    return Decision("deny", "pre-policy", detail=comment or "a drop rule without comment")


def decide(
    events: Iterable[TraceEvent],
    rules: Mapping[int, KernelRule],
    owners: Mapping[str, Owner],
    table: str = names.TABLE_NAME,
) -> dict[str, Decision]:
    """Endpoint chain -> what decided the packet there, for one packet's events in one node.

    An endpoint chain the packet entered without a final step (the trace is cut short) is
    left out.  Events of other tables (the verify table itself) are ignored.
    """
    out: dict[str, Decision] = {}
    current = ""
    returned: dict[str, tuple[str, int | None]] = {}  # endpoint chain -> last policy rule return
    for event in events:
        if event.table != table:
            continue
        chain = event.chain
        if chain.startswith((EGRESS_PREFIX, INGRESS_PREFIX)):
            current = chain
            if event.kind != "rule" or chain in out:
                continue
            if event.verdict == "drop":
                rule = rules.get(event.handle) if event.handle is not None else None
                out[chain] = _drop_decision(rule.comment if rule is not None else "")
            elif event.verdict == "accept":  # "ct state established,related accept"
                out[chain] = Decision("allow", "conntrack")
            elif event.verdict == "return":  # the accept mark is set: the last return allowed
                last = returned.get(chain)
                out[chain] = (
                    _rule_decision("allow", *last, rules, owners)
                    if last is not None
                    else Decision("allow", "", detail="accepted with no policy rule traced")
                )
        elif chain.startswith(flows.POLICY_CHAIN_PREFIXES) and current and event.kind == "rule":
            if event.verdict == "return":  # Allow or Pass (a Log rule continues)
                returned[current] = (chain, event.handle)
            elif event.verdict == "drop" and current not in out:
                out[current] = _rule_decision("deny", chain, event.handle, rules, owners)
    return out


def trace_ids(events: Sequence[TraceEvent]) -> list[int]:
    """The trace ids in order of first appearance (one per packet per node)."""
    seen: list[int] = []
    for event in events:
        if event.trace_id not in seen:
            seen.append(event.trace_id)
    return seen
