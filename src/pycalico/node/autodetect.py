"""IP autodetection for calico-node (reference §8.2 step 3): which local address is the node's.

PURE: it chooses among interfaces it is given (``Interface``), it does not list them (that is
``startup.local_interfaces``).  Methods, as Calico's ``IP_AUTODETECTION_METHOD``:

* ``first-found`` (default): the first global address on an interface that is not one of
  Calico's excluded kinds (docker, veth, cali, tunl, vxlan.calico, lo, ...).
* ``interface=REGEX[,REGEX...]``: the first address on an interface whose name matches one of
  the regexes (anchored at the start, as Go's ``regexp.MatchString`` is not).
* ``skip-interface=REGEX[,...]``: first-found, also skipping the matching interfaces.
* ``cidr=CIDR[,CIDR...]``: the first address inside one of the CIDRs.
* ``can-reach=DEST``: the address the kernel would use as source towards DEST (the caller
  supplies that lookup as ``route_source``).
* ``kubernetes-internal-ip``: the first ``InternalIP`` of the family among the Kubernetes
  Node's addresses (the caller reads them: ``kubernetes_addresses``), with the prefix of the
  local interface that holds it (a full-length prefix if none does).

Invariants: addresses are returned in CIDR form (``10.0.0.5/24``) so the node's subnet is kept;
link-local and loopback addresses are never chosen; a bad method raises ``AutodetectError``
naming the method.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

DEFAULT_EXCLUDES = (
    "docker.*",
    "cbr.*",
    "dummy.*",
    "virbr.*",
    "lxcbr.*",
    "veth.*",
    "lo",
    "cali.*",
    "tunl.*",
    "flannel.*",
    "kube-ipvs.*",
    "cni.*",
    "vxlan.calico.*",
    "vxlan-v6.calico.*",
    "wireguard.cali.*",
    "wg-v6.cali.*",
    "nodelocaldns.*",
)


class AutodetectError(ValueError):
    """An unknown or malformed IP_AUTODETECTION_METHOD, or no address found."""


@dataclass(frozen=True, slots=True)
class Interface:
    name: str
    addresses: tuple[str, ...]  # CIDR form, both families


def _usable(cidr: str, version: int) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface | None:
    try:
        interface = ipaddress.ip_interface(cidr)
    except ValueError:
        return None
    if interface.version != version:
        return None
    address = interface.ip
    if address.is_loopback or address.is_link_local or address.is_multicast:
        return None
    return interface


def _matches(name: str, patterns: Sequence[str]) -> bool:
    return any(re.match(pattern, name) for pattern in patterns)


def _compile(patterns: Sequence[str], method: str) -> list[str]:
    for pattern in patterns:
        try:
            re.compile(pattern)
        except re.error as error:
            raise AutodetectError(f"{method}: bad regex {pattern!r}: {error}") from error
    return list(patterns)


def first_found(
    interfaces: Sequence[Interface], version: int, excludes: Sequence[str] = DEFAULT_EXCLUDES
) -> str | None:
    for interface in interfaces:
        if _matches(interface.name, [f"^{p}$" if p == "lo" else p for p in excludes]):
            continue
        for cidr in interface.addresses:
            usable = _usable(cidr, version)
            if usable is not None:
                return str(usable)
    return None


def detect(
    method: str,
    interfaces: Sequence[Interface],
    version: int,
    *,
    route_source: Callable[[str], str | None] | None = None,
    kubernetes_addresses: Sequence[str] | None = None,
) -> str | None:
    """The node address chosen by ``method`` among ``interfaces``, or None if none fits."""
    method = method.strip() or "first-found"
    kind, _, argument = method.partition("=")
    if kind == "first-found" and not argument:
        return first_found(interfaces, version)
    if kind == "interface" and argument:
        patterns = _compile(argument.split(","), method)
        for interface in interfaces:
            if _matches(interface.name, patterns):
                for cidr in interface.addresses:
                    usable = _usable(cidr, version)
                    if usable is not None:
                        return str(usable)
        return None
    if kind == "skip-interface" and argument:
        patterns = _compile(argument.split(","), method)
        return first_found(interfaces, version, (*DEFAULT_EXCLUDES, *patterns))
    if kind == "cidr" and argument:
        try:
            networks = [
                ipaddress.ip_network(part.strip(), strict=False) for part in argument.split(",")
            ]
        except ValueError as error:
            raise AutodetectError(f"{method}: {error}") from error
        for interface in interfaces:
            for cidr in interface.addresses:
                usable = _usable(cidr, version)
                if usable is not None and any(
                    usable.ip in network for network in networks if network.version == version
                ):
                    return str(usable)
        return None
    if kind == "can-reach" and argument:
        if route_source is None:
            raise AutodetectError(f"{method}: no route lookup available")
        source = route_source(argument.strip())
        if source is None:
            return None
        return with_prefix(source, interfaces)
    if kind == "kubernetes-internal-ip" and not argument:
        return _kubernetes_internal_ip(kubernetes_addresses, interfaces, version)
    raise AutodetectError(
        f"IP_AUTODETECTION_METHOD: {method!r} is not one of first-found, interface=REGEX, "
        "skip-interface=REGEX, cidr=CIDR, can-reach=DEST, kubernetes-internal-ip"
    )


def _kubernetes_internal_ip(
    addresses: Sequence[str] | None, interfaces: Sequence[Interface], version: int
) -> str | None:
    if addresses is None:
        raise AutodetectError(
            "kubernetes-internal-ip: the Kubernetes Node's addresses are unknown "
            "(calico-node needs KUBECONFIG for this method)"
        )
    for text in addresses:
        usable = _usable(text, version)
        if usable is not None:
            return with_prefix(str(usable.ip), interfaces) or str(usable)
    return None


def with_prefix(address: str, interfaces: Sequence[Interface]) -> str | None:
    """``address`` in CIDR form with the prefix length of the local interface holding it, or
    None if no local interface has it."""
    try:
        wanted = ipaddress.ip_interface(address).ip
    except ValueError:
        return None
    for interface in interfaces:
        for cidr in interface.addresses:
            try:
                local = ipaddress.ip_interface(cidr)
            except ValueError:
                continue
            if local.ip == wanted:
                return str(local)
    return None
