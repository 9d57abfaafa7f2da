"""calico-node startup (reference §8.2): node name, addresses, Node registration, default pools,
cluster initialisation.

What it is: the one-shot work ``calico-node`` does before it starts its daemons, configured by
Calico's environment variables (``StartupSettings.from_env``).  What it is not: supervising the
daemons (``agent``) or choosing among interfaces (``autodetect``, pure).

Steps, as Calico's: (1) node name from ``NODENAME`` > the nodename file
(``CALICO_NODENAME_FILE``, default ``/var/lib/calico/nodename``) > ``HOSTNAME`` (lower-cased) >
the OS host name; (3) ``IP``/``IP6`` (``autodetect``, an address with or without prefix, or
``none``) with ``IP_AUTODETECTION_METHOD``/``IP6_AUTODETECTION_METHOD``; refuse an IPv4 address
another Node already has unless ``DISABLE_NODE_IP_CHECK=true``; (4) ``AS``; (6) create or update
the Node (CAS, retried; (5) ``CALICO_K8S_NODE_REF`` gives its ``orchRefs``); (7) default pools from ``CALICO_IPV4POOL_CIDR`` (default
192.168.0.0/16) and ``CALICO_IPV6POOL_CIDR`` when no pool of that family exists, unless
``NO_DEFAULT_POOLS=true``; (8) ``ensure_initialized``: ClusterInformation ``default`` (GUID,
``CLUSTER_TYPE``, version, datastoreReady), the three built-in tiers, FelixConfiguration
``default`` (reportingInterval 0s, logSeverityScreen Info); (9) write the nodename file.

Invariants: every datastore write is a create-or-CAS-update, so two nodes starting at once never
overwrite each other; an existing object's fields that startup does not own are kept.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import os
import socket
import subprocess
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import metadata

from pycalico.datastore.api import DatastoreError, KeyAlreadyExists, KeyNotFound, RevisionConflict
from pycalico.datastore.resources import ResourceStore
from pycalico.datastore.retry import RetriesExhausted, read_modify_write
from pycalico.felix.drivers.ipip import ipip_unsupported_reason
from pycalico.k8s.client import KubeError
from pycalico.model.fields import parse_cidr_or_ip
from pycalico.model.ipam import IPPool
from pycalico.model.node import ClusterInformation, FelixConfiguration, Node, NodeBGPSpec, OrchRef
from pycalico.model.policy import Tier
from pycalico.node.autodetect import AutodetectError, Interface, detect, with_prefix
from pycalico.node.kubernetes import K8S_INTERNAL_IP, internal_addresses, kubeconfig

log = logging.getLogger(__name__)

DEFAULT_NODENAME_FILE = "/var/lib/calico/nodename"
DEFAULT_IPV4_POOL = "192.168.0.0/16"
BUILTIN_TIERS = (
    ("kube-admin", 1000, "Pass"),
    ("default", 1_000_000, "Deny"),
    ("kube-baseline", 10_000_000, "Pass"),
)
WRITE_ATTEMPTS = 10


class StartupError(Exception):
    """calico-node cannot start: the message names the setting and the problem."""


def _true(value: str | None) -> bool:
    return (value or "").strip().lower() in ("true", "1", "yes")


@dataclass(frozen=True)
class StartupSettings:
    node_name: str
    ip: str | None  # "autodetect", "none", or an address (with or without prefix)
    ip6: str | None
    ip_method: str
    ip6_method: str
    as_number: str | None
    backend: str  # bird | vxlan | none
    ipv4_pool_cidr: str | None
    ipv6_pool_cidr: str | None
    ipv4_pool_ipip: str
    ipv4_pool_vxlan: str
    ipv6_pool_vxlan: str
    ipv4_block_size: int | None
    ipv6_block_size: int | None
    ipv4_pool_nat_outgoing: bool
    ipv6_pool_nat_outgoing: bool
    ipv4_pool_node_selector: str | None
    ipv6_pool_node_selector: str | None
    no_default_pools: bool
    disable_ip_check: bool
    cluster_type: str
    nodename_file: str
    k8s_node_ref: str | None = None  # CALICO_K8S_NODE_REF: the Kubernetes Node's name
    kubeconfig: str | None = None  # KUBECONFIG (for kubernetes-internal-ip)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> StartupSettings:
        env = os.environ if env is None else env
        nodename_file = env.get("CALICO_NODENAME_FILE") or DEFAULT_NODENAME_FILE

        def block(name: str) -> int | None:
            value = env.get(name)
            if not value:
                return None
            if not value.isdigit():
                raise StartupError(f"{name}: {value!r} is not a prefix length")
            return int(value)

        return cls(
            node_name=node_name(env, nodename_file),
            ip=env.get("IP") or "autodetect",
            ip6=env.get("IP6") or None,
            ip_method=env.get("IP_AUTODETECTION_METHOD") or "first-found",
            ip6_method=env.get("IP6_AUTODETECTION_METHOD") or "first-found",
            as_number=env.get("AS") or None,
            backend=(env.get("CALICO_NETWORKING_BACKEND") or "bird").lower(),
            ipv4_pool_cidr=env.get("CALICO_IPV4POOL_CIDR") or None,
            ipv6_pool_cidr=env.get("CALICO_IPV6POOL_CIDR") or None,
            ipv4_pool_ipip=env.get("CALICO_IPV4POOL_IPIP") or "Never",
            ipv4_pool_vxlan=env.get("CALICO_IPV4POOL_VXLAN") or "Never",
            ipv6_pool_vxlan=env.get("CALICO_IPV6POOL_VXLAN") or "Never",
            ipv4_block_size=block("CALICO_IPV4POOL_BLOCK_SIZE"),
            ipv6_block_size=block("CALICO_IPV6POOL_BLOCK_SIZE"),
            ipv4_pool_nat_outgoing=env.get("CALICO_IPV4POOL_NAT_OUTGOING", "true").lower()
            != "false",
            ipv6_pool_nat_outgoing=_true(env.get("CALICO_IPV6POOL_NAT_OUTGOING")),
            ipv4_pool_node_selector=env.get("CALICO_IPV4POOL_NODE_SELECTOR") or None,
            ipv6_pool_node_selector=env.get("CALICO_IPV6POOL_NODE_SELECTOR") or None,
            no_default_pools=_true(env.get("NO_DEFAULT_POOLS")),
            disable_ip_check=_true(env.get("DISABLE_NODE_IP_CHECK")),
            cluster_type=env.get("CLUSTER_TYPE") or "bgp",
            nodename_file=nodename_file,
            k8s_node_ref=(env.get("CALICO_K8S_NODE_REF") or "").strip() or None,
            kubeconfig=kubeconfig(env),
        )


def node_name(env: Mapping[str, str], nodename_file: str = DEFAULT_NODENAME_FILE) -> str:
    """NODENAME > the nodename file > HOSTNAME (lower-cased) > the OS host name."""
    name = (env.get("NODENAME") or "").strip()
    if name:
        return name
    try:
        with open(nodename_file, encoding="utf-8") as file:
            name = file.read().strip()
    except OSError:
        name = ""
    if name:
        return name
    name = (env.get("HOSTNAME") or "").strip().lower()
    return name or socket.gethostname().strip().lower()


# --- local interfaces (I/O) ---------------------------------------------------------------------


def local_interfaces() -> list[Interface]:
    """Interfaces of this network namespace with their addresses, from ``ip -j addr``."""
    output = subprocess.run(
        ["ip", "-j", "addr", "show"], capture_output=True, text=True, check=True, timeout=10
    ).stdout
    interfaces = []
    for link in json.loads(output or "[]"):
        addresses = tuple(
            f"{info['local']}/{info['prefixlen']}"
            for info in link.get("addr_info", [])
            if "local" in info and "prefixlen" in info
        )
        interfaces.append(Interface(link.get("ifname", ""), addresses))
    return interfaces


def route_source(destination: str) -> str | None:
    """The source address this namespace would use towards ``destination`` (a UDP connect
    sends nothing; it only asks the kernel for the route)."""
    try:
        family = (
            socket.AF_INET6 if ipaddress.ip_address(destination).version == 6 else socket.AF_INET
        )
    except ValueError:
        family = socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect((destination, 53))
        except OSError:
            return None
        return str(probe.getsockname()[0])


def resolve_address(
    setting: str | None,
    method: str,
    version: int,
    interfaces: list[Interface],
    kubernetes_addresses: list[str] | None = None,
) -> str | None:
    """The node address (CIDR form) for ``IP``/``IP6``: autodetected, explicit, or none."""
    if setting is None or setting.lower() == "none":
        return None
    if setting.lower() in ("autodetect", "can-reach", "first-found"):
        try:
            return detect(
                method,
                interfaces,
                version,
                route_source=route_source,
                kubernetes_addresses=kubernetes_addresses,
            )
        except AutodetectError as error:
            raise StartupError(str(error)) from error
    parsed = parse_cidr_or_ip(setting)
    name = "IP" if version == 4 else "IP6"
    if parsed is None or parsed.version != version:
        raise StartupError(f"{name}: {setting!r} is not an IPv{version} address")
    if "/" in setting:
        return str(parsed)
    # An address without a prefix: take the subnet from the local interface holding it.
    return with_prefix(setting, interfaces) or str(
        ipaddress.ip_interface(f"{setting}/{parsed.max_prefixlen}")
    )


# --- datastore work -----------------------------------------------------------------------------


async def register_node(
    store: ResourceStore,
    name: str,
    ipv4: str | None,
    ipv6: str | None,
    as_number: str | None,
    *,
    check_conflicts: bool = True,
    k8s_node_ref: str | None = None,
) -> Node:
    """Create or update the Node's BGP spec (addresses, AS); other fields are kept."""
    if check_conflicts and ipv4:
        mine = ipaddress.ip_interface(ipv4).ip
        for other in (await store.list(Node)).items:
            assert isinstance(other, Node)
            bgp = other.spec.bgp
            taken = bgp is not None and bgp.ipv4_address
            if other.name != name and taken and ipaddress.ip_interface(taken).ip == mine:
                raise StartupError(
                    f"IP: address {mine} is already in use by node {other.name!r} "
                    "(set DISABLE_NODE_IP_CHECK=true to allow it)"
                )

    async def step(last: DatastoreError | None) -> Node:
        try:
            current: Node | None = _as_node(await store.get(Node, name))
        except KeyNotFound:
            current = None
        node = _with_orch_ref(_with_bgp(current, name, ipv4, ipv6, as_number), k8s_node_ref)
        if current is not None and node == current:
            return node
        result = await (store.create(node) if current is None else store.update(node))
        return _as_node(result)

    try:
        return await read_modify_write(
            step,
            what=f"node {name!r}",
            attempts=WRITE_ATTEMPTS,
            conflicts=(KeyAlreadyExists, RevisionConflict, KeyNotFound),
        )
    except RetriesExhausted as exc:
        raise StartupError(
            f"node {name!r}: could not write the Node after {WRITE_ATTEMPTS} attempts"
        ) from exc


def _as_node(resource: object) -> Node:
    assert isinstance(resource, Node)
    return resource


def _with_bgp(
    current: Node | None, name: str, ipv4: str | None, ipv6: str | None, as_number: str | None
) -> Node:
    """``current`` (or a new Node) with its BGP spec's addresses and AS set."""
    base = current if current is not None else Node.model_validate({"metadata": {"name": name}})
    old = base.spec.bgp or NodeBGPSpec()
    update: dict[str, object] = {"ipv4_address": ipv4, "ipv6_address": ipv6}
    if as_number:
        update["as_number"] = NodeBGPSpec.model_validate({"asNumber": as_number}).as_number
    bgp = old.model_copy(update=update)
    if not any(getattr(bgp, f) is not None for f in type(bgp).model_fields):
        spec = base.spec.model_copy(update={"bgp": None})
    else:
        spec = base.spec.model_copy(update={"bgp": bgp})
    return base.model_copy(update={"spec": spec})


def _with_orch_ref(node: Node, k8s_node_ref: str | None) -> Node:
    """Calico's step 5: ``CALICO_K8S_NODE_REF`` becomes ``orchRefs`` [{k8s, nodeName}]."""
    if not k8s_node_ref:
        return node
    refs = [OrchRef(orchestrator="k8s", node_name=k8s_node_ref)]
    return node.model_copy(update={"spec": node.spec.model_copy(update={"orch_refs": refs})})


async def ensure_default_pools(store: ResourceStore, settings: StartupSettings) -> list[str]:
    """Create the default pools that are asked for and missing; returns the names created."""
    if settings.no_default_pools:
        return []
    pools = [p for p in (await store.list(IPPool)).items if isinstance(p, IPPool)]
    versions = {p.network.version for p in pools}
    wanted: list[IPPool] = []
    if 4 not in versions:
        spec: dict[str, object] = {
            "cidr": settings.ipv4_pool_cidr or DEFAULT_IPV4_POOL,
            "ipipMode": settings.ipv4_pool_ipip,
            "vxlanMode": settings.ipv4_pool_vxlan,
            "natOutgoing": settings.ipv4_pool_nat_outgoing,
        }
        if settings.ipv4_block_size:
            spec["blockSize"] = settings.ipv4_block_size
        if settings.ipv4_pool_node_selector:
            spec["nodeSelector"] = settings.ipv4_pool_node_selector
        wanted.append(
            IPPool.model_validate({"metadata": {"name": "default-ipv4-ippool"}, "spec": spec})
        )
    if 6 not in versions and settings.ipv6_pool_cidr:
        spec = {
            "cidr": settings.ipv6_pool_cidr,
            "vxlanMode": settings.ipv6_pool_vxlan,
            "natOutgoing": settings.ipv6_pool_nat_outgoing,
        }
        if settings.ipv6_block_size:
            spec["blockSize"] = settings.ipv6_block_size
        if settings.ipv6_pool_node_selector:
            spec["nodeSelector"] = settings.ipv6_pool_node_selector
        wanted.append(
            IPPool.model_validate({"metadata": {"name": "default-ipv6-ippool"}, "spec": spec})
        )
    created = []
    for pool in wanted:
        try:
            await store.create(pool)
            created.append(pool.name)
        except KeyAlreadyExists:
            pass
    return created


async def report_ipip_pools(store: ResourceStore) -> list[str]:
    """Log an error naming every pool that asks for IPIP, which this kernel cannot carry (the
    pool stays, as in Calico; Felix reports it too and programs nothing for it)."""
    pools = [p for p in (await store.list(IPPool)).items if isinstance(p, IPPool)]
    ipip = [f"{p.metadata.name} ({p.spec.cidr}, ipipMode {p.spec.ipip_mode})" for p in pools
            if p.spec.ipip_mode in ("Always", "CrossSubnet")]  # fmt: skip
    if ipip:
        reason = ipip_unsupported_reason() or "pycalico has no IPIP dataplane"
        log.error("IP pools ask for IPIP, but %s: %s; use vxlanMode", reason, ", ".join(ipip))
    return ipip


def calico_version() -> str:
    try:
        return "v" + metadata.version("pycalico")
    except metadata.PackageNotFoundError:
        return "v0.0.0"


async def ensure_initialized(store: ResourceStore, cluster_type: str = "bgp") -> ClusterInformation:
    """Calico's ``EnsureInitialized``: ClusterInformation, built-in tiers, default Felix config."""
    for name, order, action in BUILTIN_TIERS:
        tier = Tier.model_validate(
            {"metadata": {"name": name}, "spec": {"order": order, "defaultAction": action}}
        )
        with contextlib.suppress(KeyAlreadyExists):
            await store.create(tier)
    felix = FelixConfiguration.model_validate(
        {
            "metadata": {"name": "default"},
            "spec": {"reportingInterval": "0s", "logSeverityScreen": "Info"},
        }
    )
    with contextlib.suppress(KeyAlreadyExists):
        await store.create(felix)

    async def step(last: DatastoreError | None) -> ClusterInformation:
        try:
            current = await store.get(ClusterInformation, "default")
        except KeyNotFound:
            current = None
        if not isinstance(current, ClusterInformation):
            result = await store.create(_new_cluster_information(cluster_type))
        else:
            update = _cluster_information_update(current, cluster_type)
            if not update:
                return current
            spec = current.spec.model_copy(update=update)
            result = await store.update(current.model_copy(update={"spec": spec}))
        assert isinstance(result, ClusterInformation)
        return result

    try:
        return await read_modify_write(
            step,
            what="ClusterInformation default",
            attempts=WRITE_ATTEMPTS,
            conflicts=(KeyAlreadyExists, RevisionConflict, KeyNotFound),
        )
    except RetriesExhausted as exc:
        raise StartupError("ClusterInformation: could not write it after several attempts") from exc


def _new_cluster_information(cluster_type: str) -> ClusterInformation:
    return ClusterInformation.model_validate(
        {
            "metadata": {"name": "default"},
            "spec": {
                "clusterGUID": uuid.uuid4().hex,
                "clusterType": cluster_type,
                "calicoVersion": calico_version(),
                "datastoreReady": True,
            },
        }
    )


def _cluster_information_update(
    current: ClusterInformation, cluster_type: str
) -> dict[str, object]:
    """What calico-node fills in on an existing ClusterInformation (nothing if it is complete)."""
    spec = current.spec
    update: dict[str, object] = {}
    if not spec.cluster_guid:
        update["cluster_guid"] = uuid.uuid4().hex
    if not spec.cluster_type:
        update["cluster_type"] = cluster_type
    elif cluster_type and cluster_type not in spec.cluster_type.split(","):
        update["cluster_type"] = f"{spec.cluster_type},{cluster_type}"
    if spec.calico_version != calico_version():
        update["calico_version"] = calico_version()
    if spec.datastore_ready is None:  # false means locked by an operator: keep it
        update["datastore_ready"] = True
    return update


@dataclass(frozen=True)
class StartupResult:
    node: Node
    ipv4: str | None
    ipv6: str | None
    pools_created: tuple[str, ...]


async def _kubernetes_addresses(settings: StartupSettings) -> list[str] | None:
    """The Kubernetes Node's InternalIPs when an autodetection method asks for them."""
    if K8S_INTERNAL_IP not in (settings.ip_method, settings.ip6_method):
        return None
    if settings.kubeconfig is None:
        raise StartupError(f"IP_AUTODETECTION_METHOD={K8S_INTERNAL_IP} needs KUBECONFIG")
    name = settings.k8s_node_ref or settings.node_name
    try:
        return await internal_addresses(settings.kubeconfig, name)
    except KubeError as error:
        raise StartupError(f"IP_AUTODETECTION_METHOD={K8S_INTERNAL_IP}: {error}") from error


async def run_startup(store: ResourceStore, settings: StartupSettings) -> StartupResult:
    """All of §8.2 steps 1-9 for this node; raises ``StartupError`` when it cannot start."""
    interfaces = local_interfaces()
    k8s_addresses = await _kubernetes_addresses(settings)
    ipv4 = resolve_address(settings.ip, settings.ip_method, 4, interfaces, k8s_addresses)
    ipv6 = resolve_address(settings.ip6, settings.ip6_method, 6, interfaces, k8s_addresses)
    if ipv4 is None and ipv6 is None and settings.backend != "none":
        raise StartupError(
            f"IP: no IPv4 or IPv6 address found for node {settings.node_name!r} "
            f"(IP={settings.ip!r}, IP_AUTODETECTION_METHOD={settings.ip_method!r}); "
            "calico-node needs one unless CALICO_NETWORKING_BACKEND=none"
        )
    log.info("node %s: IPv4 %s, IPv6 %s", settings.node_name, ipv4, ipv6)
    node = await register_node(
        store,
        settings.node_name,
        ipv4,
        ipv6,
        settings.as_number,
        check_conflicts=not settings.disable_ip_check,
        k8s_node_ref=settings.k8s_node_ref,
    )
    created = await ensure_default_pools(store, settings)
    await report_ipip_pools(store)
    await ensure_initialized(store, settings.cluster_type)
    directory = os.path.dirname(settings.nodename_file)
    try:
        if directory:
            os.makedirs(directory, exist_ok=True)
        with open(settings.nodename_file, "w", encoding="utf-8") as file:
            file.write(settings.node_name)
    except OSError as error:
        log.warning("could not write the nodename file %s: %s", settings.nodename_file, error)
    return StartupResult(node, ipv4, ipv6, tuple(created))
