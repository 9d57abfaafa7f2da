"""Calico's per-workload-interface sysctls: which ``/proc/sys`` values a ``cali*`` veth gets.

What it is: one pure list, shared by the two writers of those values — Felix's interface driver
(``felix.drivers.interfaces``, every time a workload interface appears) and the CNI plugin
(``cni.handler``, before Felix has seen the interface, reference §6.3 step 9).  It lives here,
below both, so that neither imports the other.  What it is not: a writer (no I/O) or the
host-wide sysctls (``ip_forward`` and friends belong to the node agent).

Invariants: paths are relative to ``/proc/sys`` and use ``/`` separators; the order is the order
Felix writes them (proxy ARP is set before forwarding, so the pod's 169.254.1.1 gateway answers
as soon as traffic can flow).
"""

from __future__ import annotations


def workload_sysctls(interface: str, allow_spoofing: bool, ipv6: bool) -> list[tuple[str, str]]:
    """Calico's per-workload-interface sysctls, in the order Felix writes them.

    ``rp_filter`` is strict unless the endpoint may spoof source addresses.
    """
    values = [
        (f"net/ipv6/conf/{interface}/accept_ra", "0"),
        (f"net/ipv4/conf/{interface}/route_localnet", "1"),
        (f"net/ipv4/neigh/{interface}/proxy_delay", "0"),
        (f"net/ipv4/conf/{interface}/proxy_arp", "1"),
        (f"net/ipv4/conf/{interface}/forwarding", "1"),
        (f"net/ipv4/conf/{interface}/rp_filter", "0" if allow_spoofing else "1"),
    ]
    if ipv6:
        values += [
            (f"net/ipv6/conf/{interface}/proxy_ndp", "1"),
            (f"net/ipv6/conf/{interface}/forwarding", "1"),
        ]
    return values
