"""The ``calico`` plugin's kernel work: the workload's veth pair, addresses, routes and sysctls.

What it is: the only module of the plugin that touches the kernel (netlink through pyroute2,
``/proc/sys`` writes).  ``setup_workload`` builds what Calico's ``dataplane_linux.go`` builds
(reference §6.3 steps 8-9): a veth pair whose host end (``cali…``) has MAC ee:ee:ee:ee:ee:ee,
Calico's per-interface sysctls and one ``/32`` (``/128``) route per address, and whose
container end (``CNI_IFNAME``) carries the addresses as ``/32`` (``/128``), the MTU, the route
to 169.254.1.1 and the default routes through it (IPv6: through the host end's link-local).
``teardown_workload`` removes the container end (which removes the pair and its routes);
``inspect_workload`` reads back what CHECK verifies.

What it is not: IPAM, the datastore, or deciding names (``pycalico.cni.handler`` does those).

Invariants: every function is synchronous and runs in one thread, which it moves into the
pod's network namespace only around the container-side work and always moves back (the host
side is the namespace the thread started in); ``setup_workload`` either completes or leaves no
interface behind; ``teardown_workload`` on a namespace or interface that is gone is a no-op.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import ipaddress
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from pycalico.cni.spec import CniError

HOST_MAC = "ee:ee:ee:ee:ee:ee"
IPV4_GATEWAY = "169.254.1.1"
# The EUI-64 link-local of HOST_MAC: the address every host veth gets, so pods can use it.
IPV6_GATEWAY = "fe80::ecee:eeff:feee:eeee"
CLONE_NEWNET = 0x40000000
IFA_F_NODAD = 0x02
RT_SCOPE_LINK = 253
RTPROT_BOOT = 3
_libc = ctypes.CDLL(None, use_errno=True)

Address = ipaddress.IPv4Interface | ipaddress.IPv6Interface


@dataclass(frozen=True, slots=True)
class WorkloadPlan:
    """Everything the kernel side of one ADD needs; addresses are single-host prefixes."""

    netns: str
    ifname: str
    host_ifname: str
    mtu: int
    addresses: Sequence[Address]
    host_sysctls: Sequence[tuple[str, str]] = ()
    allow_ip_forwarding: bool = False


@dataclass(frozen=True, slots=True)
class Observed:
    """What ``inspect_workload`` found, for CHECK."""

    container_exists: bool
    container_mac: str = ""
    container_up: bool = False
    container_mtu: int = 0
    container_addresses: frozenset[str] = frozenset()
    container_gateways: frozenset[str] = frozenset()  # gateways of the default routes
    host_exists: bool = False
    host_mac: str = ""
    host_routes: frozenset[str] = frozenset()  # destinations routed through the host veth
    notes: tuple[str, ...] = field(default_factory=tuple)


def _setns(descriptor: int) -> None:
    if _libc.setns(descriptor, CLONE_NEWNET) != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"setns: {os.strerror(error)}")


@contextlib.contextmanager
def _entered(netns_fd: int) -> Iterator[None]:
    """This thread in the namespace ``netns_fd`` for the body; back where it was afterwards."""
    original = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        _setns(netns_fd)
        try:
            yield
        finally:
            _setns(original)
    finally:
        os.close(original)


def _open_netns(path: str) -> int:
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except OSError as exc:
        raise CniError(f"CNI_NETNS: cannot open network namespace {path}: {exc.strerror}") from None
    try:
        _setns_check(descriptor, path)
    except BaseException:
        os.close(descriptor)
        raise
    return descriptor


def _setns_check(descriptor: int, path: str) -> None:
    # A path that is not a namespace (a plain file, a namespace whose mount is gone) is found
    # here rather than halfway through the setup.
    try:
        with _entered(descriptor):
            pass
    except OSError as exc:
        raise CniError(f"CNI_NETNS: {path} is not a network namespace: {exc.strerror}") from None


@contextlib.contextmanager
def _netlink_in(netns_fd: int) -> Iterator[IPRoute]:
    """A netlink socket bound to another namespace: made while this thread is inside it."""
    with _entered(netns_fd):
        ipr = IPRoute()
    try:
        yield ipr
    finally:
        ipr.close()


def write_sysctl(path: str, value: str, *, required: bool = False) -> None:
    """``/proc/sys/<path>`` of this thread's namespace; a missing optional one is skipped
    (IPv6 disabled, or an interface that is not there)."""
    try:
        with open(os.path.join("/proc/sys", path), "w") as handle:
            handle.write(value)
    except FileNotFoundError:
        if required:
            raise CniError(f"sysctl {path} does not exist") from None
    except OSError as exc:
        raise CniError(f"cannot set sysctl {path}={value}: {exc.strerror}") from None


def _index(ipr: IPRoute, name: str) -> int | None:
    found = ipr.link_lookup(ifname=name)
    return int(found[0]) if found else None


def _family(address: Address) -> int:
    return 10 if address.version == 6 else 2


def setup_workload(plan: WorkloadPlan) -> str:
    """Build the workload's interfaces and routes; return the container side's MAC.

    A stale host veth of the same name (a previous sandbox of the same pod) is deleted first,
    as Calico does.  Any failure deletes the veth made here before the error is raised."""
    netns_fd = _open_netns(plan.netns)
    host = IPRoute()
    created = False
    try:
        stale = _index(host, plan.host_ifname)
        if stale is not None:
            host.link("del", index=stale)
        with _netlink_in(netns_fd) as inside:
            if _index(inside, plan.ifname) is not None:
                raise CniError(
                    f"CNI_IFNAME: interface {plan.ifname} already exists in {plan.netns}"
                )
        try:
            host.link(
                "add",
                ifname=plan.host_ifname,
                kind="veth",
                mtu=plan.mtu,
                peer={"ifname": plan.ifname, "net_ns_fd": netns_fd, "mtu": plan.mtu},
            )
        except NetlinkError as exc:
            raise CniError(
                f"cannot create veth {plan.host_ifname}/{plan.ifname}: {_strerror(exc)}"
            ) from None
        created = True
        host_index = _index(host, plan.host_ifname)
        if host_index is None:
            raise CniError(f"veth {plan.host_ifname} vanished right after it was created")
        host.link("set", index=host_index, address=HOST_MAC)
        for path, value in plan.host_sysctls:
            write_sysctl(path, value)
        host.link("set", index=host_index, state="up")
        container_mac = _setup_container_side(netns_fd, plan)
        for address in plan.addresses:
            _add_host_route(host, host_index, plan.host_ifname, address)
        return container_mac
    except NetlinkError as exc:
        raise CniError(f"netlink: {_strerror(exc)}") from None
    except BaseException:
        if created:
            with contextlib.suppress(NetlinkError):
                index = _index(host, plan.host_ifname)
                if index is not None:
                    host.link("del", index=index)
        raise
    finally:
        host.close()
        os.close(netns_fd)


def _setup_container_side(netns_fd: int, plan: WorkloadPlan) -> str:
    has_v4 = any(a.version == 4 for a in plan.addresses)
    has_v6 = any(a.version == 6 for a in plan.addresses)
    with _entered(netns_fd):
        if has_v6:
            # Calico turns IPv6 on in the pod (runtimes often leave it off) and skips DAD, so the
            # address is usable as soon as the result is returned.
            for name in ("all", "default", "lo", plan.ifname):
                write_sysctl(f"net/ipv6/conf/{name}/disable_ipv6", "0")
            write_sysctl(f"net/ipv6/conf/{plan.ifname}/accept_dad", "0")
        if plan.allow_ip_forwarding:
            if has_v4:
                write_sysctl("net/ipv4/ip_forward", "1", required=True)
            if has_v6:
                write_sysctl("net/ipv6/conf/all/forwarding", "1")
        inside = IPRoute()
    try:
        index = _index(inside, plan.ifname)
        if index is None:
            raise CniError(f"interface {plan.ifname} did not appear in {plan.netns}")
        inside.link("set", index=index, state="up")
        for address in plan.addresses:
            inside.addr(
                "add",
                index=index,
                address=str(address.ip),
                prefixlen=address.network.prefixlen,
                family=_family(address),
                flags=IFA_F_NODAD if address.version == 6 else 0,
            )
        if has_v4:
            inside.route("add", dst=f"{IPV4_GATEWAY}/32", oif=index, scope=RT_SCOPE_LINK, family=2)
            inside.route("add", dst="0.0.0.0/0", gateway=IPV4_GATEWAY, oif=index, family=2)
        if has_v6:
            inside.route("add", dst="::/0", gateway=IPV6_GATEWAY, oif=index, family=10)
        links = inside.get_links(index)
        return str(links[0].get("address") or "")
    finally:
        inside.close()


def _add_host_route(host: IPRoute, index: int, name: str, address: Address) -> None:
    destination = f"{address.ip}/{address.network.max_prefixlen}"
    try:
        host.route(
            "add",
            dst=destination,
            oif=index,
            scope=RT_SCOPE_LINK,
            proto=RTPROT_BOOT,
            family=_family(address),
        )
    except NetlinkError as exc:
        if exc.code != errno.EEXIST:
            raise CniError(f"cannot add route {destination} dev {name}: {_strerror(exc)}") from None
        existing = host.route("get", dst=str(address.ip), family=_family(address))
        through = existing[0].get("RTA_OIF") if existing else None
        if through != index:
            raise CniError(
                f"route {destination} already exists for an interface other than {name}"
            ) from None


def teardown_workload(netns: str, ifname: str) -> bool:
    """Delete ``ifname`` in ``netns`` (its veth peer and routes go with it).  True if something
    was deleted; a namespace or interface that is gone already is not an error."""
    if not netns or not os.path.exists(netns):
        return False
    try:
        descriptor = os.open(netns, os.O_RDONLY)
    except OSError:
        return False
    try:
        try:
            with _netlink_in(descriptor) as inside:
                index = _index(inside, ifname)
                if index is None:
                    return False
                inside.link("del", index=index)
                return True
        except OSError as exc:
            if exc.errno in (errno.EINVAL, errno.EBADF):
                return False  # the path is no longer a namespace: its interfaces went with it
            raise
        except NetlinkError as exc:
            if exc.code == errno.ENODEV:
                return False
            raise CniError(f"cannot delete {ifname} in {netns}: {_strerror(exc)}") from None
    finally:
        os.close(descriptor)


def host_link_exists(name: str) -> bool:
    with IPRoute() as host:
        return _index(host, name) is not None


def inspect_workload(netns: str, ifname: str, host_ifname: str) -> Observed:
    host_exists = False
    host_mac = ""
    host_routes: set[str] = set()
    with IPRoute() as host:
        host_index = _index(host, host_ifname)
        if host_index is not None:
            host_exists = True
            host_mac = str(host.get_links(host_index)[0].get("address") or "")
            for family in (2, 10):
                for route in host.get_routes(family=family, oif=host_index):
                    host_routes.add(f"{route.get('RTA_DST')}/{route['dst_len']}")
    if not os.path.exists(netns):
        return Observed(False, host_exists=host_exists, host_mac=host_mac)
    descriptor = _open_netns(netns)
    try:
        with _netlink_in(descriptor) as inside:
            index = _index(inside, ifname)
            if index is None:
                return Observed(False, host_exists=host_exists, host_mac=host_mac)
            link: Any = inside.get_links(index)[0]
            addresses = {
                f"{a.get('IFA_ADDRESS')}/{a['prefixlen']}"
                for a in inside.get_addr(index=index)
                if not str(a.get("IFA_ADDRESS", "")).startswith("fe80:")
            }
            gateways = set()
            for family in (2, 10):
                for route in inside.get_routes(family=family, oif=index):
                    if route["dst_len"] == 0 and route.get("RTA_GATEWAY"):
                        gateways.add(str(route.get("RTA_GATEWAY")))
            return Observed(
                container_exists=True,
                container_mac=str(link.get("address") or ""),
                container_up=bool(link["flags"] & 1),
                container_mtu=int(link.get("IFLA_MTU") or 0),
                container_addresses=frozenset(addresses),
                container_gateways=frozenset(gateways),
                host_exists=host_exists,
                host_mac=host_mac,
                host_routes=frozenset(host_routes),
            )
    finally:
        os.close(descriptor)


def _strerror(exc: NetlinkError) -> str:
    return os.strerror(exc.code) if isinstance(exc.code, int) and exc.code > 0 else str(exc)
