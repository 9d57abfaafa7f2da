"""VXLAN facts shared by calico-node (tunnel addresses), Felix (the device) and the CNI (MTU).

What it is: Calico's names and numbers for its VXLAN overlay — device names, VNI, UDP port,
IPAM handles and attribute values of tunnel addresses, the encapsulation overhead used for MTU
auto-detection — and the VTEP MAC a node gets when its Node does not name one.  What it is
not: I/O of any kind (pure).

Invariants: ``vtep_mac(node, version)`` is a function of its arguments only (the same node
gets the same MAC after any restart, on every host that computes it), locally administered and
unicast; ``pod_mtu`` subtracts the largest overhead in use, once (a dual-stack overlay's
pods share one MTU).
"""

from __future__ import annotations

import hashlib

DEVICE_V4 = "vxlan.calico"
DEVICE_V6 = "vxlan-v6.calico"
DEFAULT_VNI = 4096
DEFAULT_PORT = 4789
# Outer IP + UDP + VXLAN + inner Ethernet headers (Calico's encapsulation overheads).
OVERHEAD_V4 = 50
OVERHEAD_V6 = 70
DEFAULT_HOST_MTU = 1500
# The IPAM attribute "type" and the handle of a node's tunnel address (Calico's allocateip.go).
ATTRIBUTE_TYPE_V4 = "vxlanTunnelAddress"
ATTRIBUTE_TYPE_V6 = "vxlanV6TunnelAddress"


def device_name(version: int) -> str:
    return DEVICE_V6 if version == 6 else DEVICE_V4


def tunnel_handle(node: str, version: int) -> str:
    """``vxlan-tunnel-addr-<node>`` / ``vxlan-v6-tunnel-addr-<node>``."""
    return f"vxlan-v6-tunnel-addr-{node}" if version == 6 else f"vxlan-tunnel-addr-{node}"


def vtep_mac(node: str, version: int = 4) -> str:
    """A stable, locally administered unicast MAC for ``node``'s VTEP of IP ``version``."""
    seed = f"{node}" if version == 4 else f"v6:{node}"
    digest = hashlib.sha1(seed.encode(), usedforsecurity=False).digest()
    first = (digest[0] & 0xFC) | 0x02  # locally administered (bit 1), unicast (bit 0 clear)
    return ":".join(f"{byte:02x}" for byte in bytes([first]) + digest[1:6])


def pod_mtu(host_mtu: int, *, vxlan_v4: bool, vxlan_v6: bool) -> int:
    """Calico's MTU auto-detection: the host interface's MTU minus the largest overhead of the
    encapsulations in use (none: the host's MTU)."""
    overhead = max(OVERHEAD_V6 if vxlan_v6 else 0, OVERHEAD_V4 if vxlan_v4 else 0)
    return host_mtu - overhead
