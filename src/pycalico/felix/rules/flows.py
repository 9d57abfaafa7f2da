"""Flow logs and rule counters: naming rules in the kernel, and reading back what they counted.

What it is: pure logic for Felix's policy-rule counters and denied-flow records.

* ``log_prefix_for_rule`` / ``log_prefix_for_tier`` — the NFLOG prefix a deny path carries (the
  rendering side); ``parse_log_prefix`` reads it back.
* ``RuleIndex`` — follows the dataplane messages and names every rule id: policy or profile,
  tier, direction and index (the Prometheus labels and the record's ``rule``), and which local
  endpoint holds which address (the record's source/destination endpoint).
* ``counter_samples`` — the counters of ``nft -j list table`` (policy and profile chains only);
  ``CounterDeltas`` — what each rule counted since the previous read, robust to rules being
  replaced (a re-rendered chain's rules start again at zero).
* ``parse_nflog`` / ``parse_ip_packet`` / ``denied_record`` — NFLOG netlink messages → packets →
  one JSON-able record per denied packet.

What it is not: I/O (``drivers.nflog``, ``drivers.counters``), or the wiring that writes records
and exports metrics (``dataplane.flows``).

Invariants: a rule's identity is stable as long as the rule is (the rule id is a hash of owner,
direction, index and content, see ``calc.rules.rule_id``); deltas are never negative.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pycalico.felix import messages as m
from pycalico.lib import netlink

# NFLOG prefixes.  The kernel keeps up to 63 characters (NFLOG's prefix is 64 bytes with NUL).
RULE_PREFIX = "cali-deny:"  # + rule id: an explicit Deny rule of a policy or profile
TIER_PREFIX = "cali-eot:"  # + "i:"/"o:" + tier: the end-of-tier drop (no policy allowed/passed)
PROFILE_PREFIX = "cali-nop:"  # + "i"/"o": no profile matched
RULE_COMMENT = "cali:"  # the comment every policy/profile rule carries (+ rule id)
POLICY_CHAIN_PREFIXES = ("cali-pi-", "cali-po-", "cali-pri-", "cali-pro-")


def log_prefix_for_rule(rule_id: str) -> str:
    return f"{RULE_PREFIX}{rule_id}"[:63]


def log_prefix_for_tier(tier: str, ingress: bool) -> str:
    return f"{TIER_PREFIX}{'i' if ingress else 'o'}:{tier}"[:63]


def log_prefix_for_profiles(ingress: bool) -> str:
    return f"{PROFILE_PREFIX}{'i' if ingress else 'o'}"


@dataclass(frozen=True, slots=True)
class RuleIdentity:
    """Who a rule belongs to.  ``index`` is -1 for the end-of-tier / no-profile drops."""

    kind: str  # "GlobalNetworkPolicy", "NetworkPolicy", "Profile", "EndOfTier", "NoProfile"
    tier: str
    name: str
    direction: str  # "ingress" | "egress"
    index: int
    action: str = "deny"

    def labels(self) -> dict[str, str]:
        return {
            "kind": self.kind,
            "tier": self.tier,
            "policy": self.name,
            "direction": self.direction,
            "rule_index": str(self.index),
            "action": self.action,
        }


def _direction(flag: str) -> str:
    return "ingress" if flag == "i" else "egress"


def parse_log_prefix(prefix: str) -> tuple[str, str] | None:
    """(kind of prefix, rest): ("rule", id), ("tier", "i:<tier>"), ("profiles", "i"); else None."""
    for kind, head in (("rule", RULE_PREFIX), ("tier", TIER_PREFIX), ("profiles", PROFILE_PREFIX)):
        if prefix.startswith(head):
            return kind, prefix[len(head) :]
    return None


class RuleIndex:
    """Rule ids → identities, and local endpoint addresses → endpoint names, from messages."""

    def __init__(self) -> None:
        self._owners: dict[object, tuple[str, ...]] = {}  # policy/profile id -> its rule ids
        self._rules: dict[str, RuleIdentity] = {}
        self._endpoint_ips: dict[object, tuple[str, ...]] = {}
        self.endpoints: dict[str, str] = {}  # address -> "namespace/pod" (or endpoint id)

    def observe(self, messages: Iterable[object]) -> None:
        for message in messages:
            if isinstance(message, m.ActivePolicyUpdate | m.ActiveProfileUpdate):
                self._set_owner(message.id, message.inbound_rules, message.outbound_rules)
            elif isinstance(message, m.ActivePolicyRemove | m.ActiveProfileRemove):
                self._drop_owner(message.id)
            elif isinstance(message, m.WorkloadEndpointUpdate):
                self._set_endpoint(message.id, message.id.workload, message.ipv4_nets)
                self._set_endpoint((message.id, 6), message.id.workload, message.ipv6_nets)
            elif isinstance(message, m.WorkloadEndpointRemove):
                self._set_endpoint(message.id, "", ())
                self._set_endpoint((message.id, 6), "", ())

    def _set_owner(
        self, owner: object, inbound: Sequence[m.ResolvedRule], outbound: Sequence[m.ResolvedRule]
    ) -> None:
        self._drop_owner(owner)
        if isinstance(owner, m.PolicyID):
            kind, tier, name = owner.kind, owner.tier, owner.name
        else:
            kind, tier, name = "Profile", "", getattr(owner, "name", str(owner))
        ids: list[str] = []
        for direction, rules in (("ingress", inbound), ("egress", outbound)):
            for index, rule in enumerate(rules):
                if rule.rule_id:
                    self._rules[rule.rule_id] = RuleIdentity(
                        kind, tier, name, direction, index, rule.action
                    )
                    ids.append(rule.rule_id)
        self._owners[owner] = tuple(ids)

    def _drop_owner(self, owner: object) -> None:
        for rule_id in self._owners.pop(owner, ()):
            self._rules.pop(rule_id, None)

    def _set_endpoint(self, key: object, name: str, nets: Sequence[str]) -> None:
        for address in self._endpoint_ips.pop(key, ()):
            self.endpoints.pop(address, None)
        addresses = tuple(net.split("/")[0] for net in nets)
        for address in addresses:
            self.endpoints[address] = name
        if addresses:
            self._endpoint_ips[key] = addresses

    def rule(self, rule_id: str) -> RuleIdentity | None:
        return self._rules.get(rule_id)

    def identify(self, prefix: str) -> RuleIdentity | None:
        """The identity an NFLOG prefix names (None: not one of ours, or an unknown rule)."""
        parsed = parse_log_prefix(prefix)
        if parsed is None:
            return None
        kind, rest = parsed
        if kind == "rule":
            return self.rule(rest)
        if kind == "tier" and rest[:2] in ("i:", "o:"):
            return RuleIdentity("EndOfTier", rest[2:], "", _direction(rest[0]), -1)
        if kind == "profiles" and rest in ("i", "o"):
            return RuleIdentity("NoProfile", "", "", _direction(rest), -1)
        return None


# --- counters ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CounterSample:
    chain: str
    handle: int
    rule_id: str
    packets: int
    bytes: int


def counter_samples(document: Mapping[str, Any]) -> list[CounterSample]:
    """The counted rules of policy/profile chains in one ``nft -j list table`` document."""
    out: list[CounterSample] = []
    for item in document.get("nftables", ()):
        rule = item.get("rule") if isinstance(item, dict) else None
        if not rule or not str(rule.get("chain", "")).startswith(POLICY_CHAIN_PREFIXES):
            continue
        comment = str(rule.get("comment", ""))
        if not comment.startswith(RULE_COMMENT):
            continue
        for expression in rule.get("expr", ()):
            counter = expression.get("counter") if isinstance(expression, dict) else None
            if isinstance(counter, dict):
                out.append(
                    CounterSample(
                        rule["chain"], int(rule["handle"]), comment[len(RULE_COMMENT) :],
                        int(counter.get("packets", 0)), int(counter.get("bytes", 0)),
                    )
                )  # fmt: skip
                break
    return out


class CounterDeltas:
    """Per rule id, packets and bytes counted since the previous sample set.

    Keyed by (chain, handle): a rule re-created by a chain rewrite gets a new handle and starts
    at zero, so all of its count is new; a rule gone is forgotten.  A value below the previous
    one (a reset) counts from zero.
    """

    def __init__(self) -> None:
        self._last: dict[tuple[str, int], tuple[int, int]] = {}

    def update(self, samples: Iterable[CounterSample]) -> dict[str, tuple[int, int]]:
        deltas: dict[str, tuple[int, int]] = {}
        current: dict[tuple[str, int], tuple[int, int]] = {}
        for sample in samples:
            key = (sample.chain, sample.handle)
            packets, octets = self._last.get(key, (0, 0))
            if sample.packets < packets or sample.bytes < octets:
                packets, octets = 0, 0
            current[key] = (sample.packets, sample.bytes)
            dp, db = sample.packets - packets, sample.bytes - octets
            if dp or db:
                old = deltas.get(sample.rule_id, (0, 0))
                deltas[sample.rule_id] = (old[0] + dp, old[1] + db)
        self._last = current
        return deltas


# --- NFLOG -------------------------------------------------------------------------------------

NFNL_SUBSYS_ULOG = 4
NFULNL_MSG_PACKET = 0
NFULNL_MSG_CONFIG = 1
NFULA_PACKET_HDR = 1
NFULA_IFINDEX_INDEV = 4
NFULA_IFINDEX_OUTDEV = 5
NFULA_PAYLOAD = 9
NFULA_PREFIX = 10
NFULA_CFG_CMD = 1
NFULA_CFG_MODE = 2
NFULA_CFG_QTHRESH = 5
NFULNL_CFG_CMD_BIND = 1
NFULNL_CFG_CMD_UNBIND = 2
NFULNL_COPY_PACKET = 2
NLM_F_REQUEST = 1
NLM_F_ACK = 4
NLMSG_ERROR = 2


@dataclass(frozen=True, slots=True)
class NflogPacket:
    prefix: str
    indev: int
    outdev: int
    payload: bytes


def _ifindex(value: bytes | None) -> int:
    return int(struct.unpack("!I", value[:4])[0]) if value and len(value) >= 4 else 0


def parse_nflog(buffer: bytes) -> list[NflogPacket]:
    """Every NFLOG packet message in one netlink datagram (other messages are skipped)."""
    packets: list[NflogPacket] = []
    offset = 0
    while offset + 16 <= len(buffer):
        length, kind, _flags, _seq, _pid = struct.unpack_from("=IHHII", buffer, offset)
        if length < 16:
            break
        if kind == (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_PACKET:
            attributes = netlink.attributes(buffer[offset + 20 : offset + length])  # after nfgenmsg
            prefix = attributes.get(NFULA_PREFIX, b"").split(b"\0", 1)[0]
            packets.append(
                NflogPacket(
                    prefix.decode(errors="replace"),
                    _ifindex(attributes.get(NFULA_IFINDEX_INDEV)),
                    _ifindex(attributes.get(NFULA_IFINDEX_OUTDEV)),
                    attributes.get(NFULA_PAYLOAD, b""),
                )
            )
        offset += netlink.align(length)
    return packets


def config_message(group: int, command: int | None, seq: int, copy_range: int = 0) -> bytes:
    """One NFULNL_MSG_CONFIG request: bind/unbind ``group`` (``command``) or set its mode."""
    attributes = b""
    if command is not None:
        attributes += _attribute(NFULA_CFG_CMD, struct.pack("B", command))
    if copy_range:
        attributes += _attribute(
            NFULA_CFG_MODE, struct.pack("!IBx", copy_range, NFULNL_COPY_PACKET)
        )
        attributes += _attribute(NFULA_CFG_QTHRESH, struct.pack("!I", 1))
    body = struct.pack("!BBH", 0, 0, group) + attributes  # nfgenmsg: AF_UNSPEC, v0, res_id
    kind = (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_CONFIG
    return struct.pack("=IHHII", 16 + len(body), kind, NLM_F_REQUEST | NLM_F_ACK, seq, 0) + body


def _attribute(kind: int, value: bytes) -> bytes:
    raw = struct.pack("=HH", 4 + len(value), kind) + value
    return raw + b"\0" * (netlink.align(len(raw)) - len(raw))


def netlink_error(buffer: bytes) -> int:
    """The error code of the first NLMSG_ERROR (0 = ack), or 0 when there is none."""
    if len(buffer) >= 20:
        _length, kind = struct.unpack_from("=IH", buffer)
        if kind == NLMSG_ERROR:
            return int(struct.unpack_from("=i", buffer, 16)[0])
    return 0


_PROTOCOLS = {1: "ICMP", 6: "TCP", 17: "UDP", 58: "ICMPv6", 132: "SCTP"}


@dataclass(frozen=True, slots=True)
class PacketHeader:
    source: str
    destination: str
    protocol: str
    source_port: int
    destination_port: int


def parse_ip_packet(payload: bytes) -> PacketHeader | None:
    """Addresses, protocol and ports of an IPv4/IPv6 packet (None for anything else)."""
    if not payload:
        return None
    version = payload[0] >> 4
    if version == 4 and len(payload) >= 20:
        header_length = (payload[0] & 0x0F) * 4
        number = payload[9]
        source = str(ipaddress.IPv4Address(payload[12:16]))
        destination = str(ipaddress.IPv4Address(payload[16:20]))
    elif version == 6 and len(payload) >= 40:
        header_length = 40
        number = payload[6]
        source = str(ipaddress.IPv6Address(payload[8:24]))
        destination = str(ipaddress.IPv6Address(payload[24:40]))
    else:
        return None
    ports = (0, 0)
    if number in (6, 17, 132) and len(payload) >= header_length + 4:
        ports = struct.unpack_from("!HH", payload, header_length)
    return PacketHeader(source, destination, _PROTOCOLS.get(number, str(number)), *ports)


def denied_record(
    packet: NflogPacket, index: RuleIndex, node: str, timestamp: float
) -> dict[str, Any] | None:
    """The flow-log record of one denied packet (None if the prefix is not one of ours)."""
    identity = index.identify(packet.prefix)
    if identity is None and parse_log_prefix(packet.prefix) is None:
        return None
    header = parse_ip_packet(packet.payload)
    record: dict[str, Any] = {"time": round(timestamp, 6), "node": node, "action": "deny"}
    if header is not None:
        record.update(
            source_ip=header.source,
            source_endpoint=index.endpoints.get(header.source, ""),
            destination_ip=header.destination,
            destination_endpoint=index.endpoints.get(header.destination, ""),
            protocol=header.protocol,
            source_port=header.source_port,
            destination_port=header.destination_port,
        )
    if identity is not None:
        record.update(
            kind=identity.kind,
            tier=identity.tier,
            policy=identity.name,
            direction=identity.direction,
            rule_index=identity.index,
        )
    else:
        record.update(kind="Unknown", prefix=packet.prefix)
    return record
