"""Names and mark bits of everything Felix puts into nftables.

What it is: the single place that decides how a policy, profile, endpoint or IP set is named in
the kernel, and which mark bits mean what.  What it is not: rendering (``policy``/``endpoints``).

Layout decision: ONE ``table inet calico`` holds both families (base chains, endpoint, policy and
profile chains are shared; IPv4/IPv6 differences live inside rules, e.g. ``ip saddr`` vs ``ip6
saddr``).  IP sets are typed, so every IP-set id becomes two sets, ``cali40<id>`` and
``cali60<id>`` (Calico's ``cali4``/``cali6`` + version token ``0`` naming).

Invariants:

* Every name starts with ``cali`` or with the iptables table it stands for (``filter-``,
  ``raw-``, ``mangle-``: Calico's nftables flattening of its tables into one), so a restarted
  Felix can recognise its own objects; no name is ever an nft keyword (``fwd`` ...) because of
  the prefix.
* Names are deterministic functions of ids: a restart renders the same names.
* Names use only ``[A-Za-z0-9_.-]``; anything else (or anything too long) is hashed.
"""

from __future__ import annotations

import base64
import hashlib
import re

from pycalico.felix.messages import HostEndpointID, PolicyID, ProfileID

TABLE_FAMILY = "inet"
TABLE_NAME = "calico"
TABLE = f"{TABLE_FAMILY} {TABLE_NAME}"

# Calico's mark allocation from IptablesMarkMask 0xffff0000, lowest bit first.
MARK_ACCEPT = 0x10000
MARK_PASS = 0x20000
MARK_DROP = 0x40000
MARK_SCRATCH0 = 0x80000
MARK_SCRATCH1 = 0x100000
ALL_MARKS = MARK_ACCEPT | MARK_PASS | MARK_DROP | MARK_SCRATCH0 | MARK_SCRATCH1

# Longest name we emit (nft allows 256; short names keep `nft list` readable).
MAX_NAME = 60
_SAFE = re.compile(r"^[A-Za-z0-9_.\-]+$")

# Base and fixed chains.
FLOWTABLE = "cali-ft"
CHAIN_FORWARD = "filter-FORWARD"
CHAIN_INPUT = "filter-INPUT"
CHAIN_OUTPUT = "filter-OUTPUT"
CHAIN_FROM_WL_DISPATCH = "cali-from-wl-dispatch"
CHAIN_TO_WL_DISPATCH = "cali-to-wl-dispatch"
CHAIN_WL_TO_HOST = "cali-wl-to-host"
CHAIN_FROM_HEP_DISPATCH = "cali-from-hep-dispatch"
CHAIN_TO_HEP_DISPATCH = "cali-to-hep-dispatch"
CHAIN_FROM_HEP_FORWARD_DISPATCH = "cali-from-hep-fwd-dispatch"
CHAIN_TO_HEP_FORWARD_DISPATCH = "cali-to-hep-fwd-dispatch"

# Untracked (doNotTrack) and pre-DNAT host endpoint policy: base chains hooked before conntrack
# (raw) and before DNAT (mangle), present only while some host endpoint has such policy.
CHAIN_RAW_PREROUTING = "raw-PREROUTING"
CHAIN_RAW_OUTPUT = "raw-OUTPUT"
CHAIN_MANGLE_PREROUTING = "mangle-PREROUTING"
CHAIN_RAW_FROM_HEP_DISPATCH = "raw-cali-from-hep-dispatch"
CHAIN_RAW_TO_HEP_DISPATCH = "raw-cali-to-hep-dispatch"
CHAIN_MANGLE_FROM_HEP_DISPATCH = "mangle-cali-from-hep-dispatch"

# Verdict maps: interface name -> goto endpoint chain.
MAP_FROM_WL = "cali-from-wl-map"
MAP_TO_WL = "cali-to-wl-map"
MAP_FROM_HEP = "cali-from-hep-map"
MAP_TO_HEP = "cali-to-hep-map"
MAP_FROM_HEP_FORWARD = "cali-from-hep-fwd-map"
MAP_TO_HEP_FORWARD = "cali-to-hep-fwd-map"
MAP_RAW_FROM_HEP = "raw-cali-from-hep-map"
MAP_RAW_TO_HEP = "raw-cali-to-hep-map"
MAP_MANGLE_FROM_HEP = "mangle-cali-from-hep-map"

_POLICY_KIND_TOKENS = {
    "GlobalNetworkPolicy": "gnp",
    "NetworkPolicy": "np",
    "StagedGlobalNetworkPolicy": "sgnp",
    "StagedNetworkPolicy": "snp",
    "StagedKubernetesNetworkPolicy": "sknp",
    "KubernetesNetworkPolicy": "knp",
}


def _hash(text: str, length: int = 16) -> str:
    digest = hashlib.sha256(text.encode()).digest()
    return base64.b32encode(digest).decode().lower().rstrip("=")[:length]


def safe_name(prefix: str, suffix: str) -> str:
    """``prefix + suffix`` if that is short and uses only safe characters, else a hashed form.

    The hashed form keeps a readable head of the suffix: ``prefix + head + "_" + hash``.
    """
    name = prefix + suffix
    if len(name) <= MAX_NAME and _SAFE.match(suffix):
        return name
    head = re.sub(r"[^A-Za-z0-9_.\-]", "_", suffix)[:20]
    return f"{prefix}{head}_{_hash(prefix + suffix)}"


def policy_key(policy_id: PolicyID) -> str:
    kind = _POLICY_KIND_TOKENS.get(policy_id.kind, policy_id.kind.lower())
    return f"{kind}/{policy_id.tier}/{policy_id.name}"


def policy_chain(policy_id: PolicyID, inbound: bool) -> str:
    """``cali-pi-*`` (ingress rules) / ``cali-po-*`` (egress rules); always hashed, as in Calico."""
    key = policy_key(policy_id)
    head = re.sub(r"[^A-Za-z0-9_.\-]", "_", policy_id.name.split("/")[-1])[:24]
    return f"cali-p{'i' if inbound else 'o'}-{head}_{_hash(key)}"


def profile_chain(profile_id: ProfileID, inbound: bool) -> str:
    """``cali-pri-<name>`` / ``cali-pro-<name>`` (hashed when unsafe or long)."""
    return safe_name("cali-pri-" if inbound else "cali-pro-", profile_id.name)


def to_workload_chain(interface: str) -> str:
    """Ingress policy for the workload behind ``interface``."""
    return safe_name("cali-tw-", interface)


def from_workload_chain(interface: str) -> str:
    """Egress policy for the workload behind ``interface``."""
    return safe_name("cali-fw-", interface)


def host_endpoint_chains(endpoint_id: HostEndpointID) -> tuple[str, str, str, str]:
    """(from-host-endpoint, to-host-endpoint, from-hep-forward, to-hep-forward) chain names."""
    return (
        safe_name("cali-fh-", endpoint_id.name),
        safe_name("cali-th-", endpoint_id.name),
        safe_name("cali-fhfw-", endpoint_id.name),
        safe_name("cali-thfw-", endpoint_id.name),
    )


def host_endpoint_untracked_chains(endpoint_id: HostEndpointID) -> tuple[str, str]:
    """(raw from-host-endpoint, raw to-host-endpoint): untracked ingress / egress policy."""
    return (
        safe_name("raw-cali-fh-", endpoint_id.name),
        safe_name("raw-cali-th-", endpoint_id.name),
    )


def host_endpoint_pre_dnat_chain(endpoint_id: HostEndpointID) -> str:
    """The mangle from-host-endpoint chain: pre-DNAT (ingress only) policy."""
    return safe_name("mangle-cali-fh-", endpoint_id.name)


def ip_set_name(set_id: str, version: int) -> str:
    """``cali40<id>`` / ``cali60<id>`` with ``:`` mapped to ``_`` (nft names may not hold ``:``)."""
    return safe_name(f"cali{version}0", set_id.replace(":", "_"))
