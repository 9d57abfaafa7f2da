"""The ``calico-ipam`` CNI plugin's work: ADD, DEL, CHECK and VERSION over Calico IPAM.

One function, ``handle``, serves both paths of DESIGN.md §2: the thin plugin process calls it
in-process when no node agent listens, and the agent calls it for forwarded requests (with its
live ``KVStore`` and its own lock).  It is not the executable (``pycalico.cni.ipam_plugin``) and
does no kernel work.  Behaviour follows Calico's ``cni-plugin/pkg/ipamplugin``:

* handle ``<network name>.<CNI_CONTAINERID>``; attributes ``node``, ``timestamp`` and, for
  Kubernetes pods (``K8S_POD_NAME``/``K8S_POD_NAMESPACE`` in CNI_ARGS), ``pod``/``namespace``;
* ``IP=<address>`` in CNI_ARGS assigns that address; otherwise ``assign_ipv4`` (default
  ``"true"``) and ``assign_ipv6`` (default ``"false"``) addresses are auto-assigned from
  ``ipv4_pools``/``ipv6_pools`` (names or CIDRs), IPv4 and IPv6 all or nothing;
* DEL releases by the handle and by the legacy workload handle; nothing to release is success;
* a host-wide lock (``ipam_lock_file``, default ``/var/run/calico/ipam.lock``) serialises the
  IPAM work of concurrent plugin processes on one host, best effort.

Every failure becomes a ``CniError`` rendered as CNI error JSON with exit status 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pycalico.cni.agent_protocol import Response
from pycalico.cni.nodename import node_name
from pycalico.cni.spec import (
    ERR_INVALID_NETWORK_CONFIG,
    CniError,
    Invocation,
    IPConfig,
    Result,
    config_flag,
    error_result,
    parse_invocation,
    render_result,
    string_list,
    version_result,
)
from pycalico.datastore.api import DatastoreError, KVStore
from pycalico.ipam.allocator import (
    IPAM,
    AutoAssignRequest,
    HandleNotFound,
    IPAMError,
)
from pycalico.ipam.pools import PoolSelectionError, resolve_requested
from pycalico.ipam.records import (
    ATTRIBUTE_NAMESPACE,
    ATTRIBUTE_NODE,
    ATTRIBUTE_POD,
    ATTRIBUTE_TIMESTAMP,
)

PLUGIN_NAME = "calico-ipam"
DEFAULT_LOCK_FILE = "/var/run/calico/ipam.lock"
TIMEOUT_SECONDS = 90.0
KVFactory = Callable[[Mapping[str, Any], Mapping[str, str]], KVStore]


@dataclass(frozen=True, slots=True)
class Identity:
    node: str
    handle_id: str
    workload_handle: str
    attrs: dict[str, str]


def go_timestamp(moment: datetime) -> str:
    """Go's ``time.Now().UTC().String()``, which is what Calico stores as ``timestamp``."""
    return moment.strftime("%Y-%m-%d %H:%M:%S.%f") + "000 +0000 UTC"


def identify(invocation: Invocation, node: str) -> Identity:
    """The handles and attributes of this call's addresses, for ``node``."""
    if not invocation.network_name:
        raise CniError(
            "name: the network configuration has no name", code=ERR_INVALID_NETWORK_CONFIG
        )
    handle_id = f"{invocation.network_name}.{invocation.container_id}"
    pod = invocation.args.get("K8S_POD_NAME", "")
    namespace = invocation.args.get("K8S_POD_NAMESPACE", "")
    attrs = {ATTRIBUTE_NODE: node, ATTRIBUTE_TIMESTAMP: go_timestamp(datetime.now(UTC))}
    if pod:
        attrs[ATTRIBUTE_POD] = pod
        attrs[ATTRIBUTE_NAMESPACE] = namespace
    workload = f"{namespace}.{pod}" if pod else invocation.container_id
    return Identity(node=node, handle_id=handle_id, workload_handle=workload, attrs=attrs)


def datastore_settings(config: Mapping[str, Any], env: Mapping[str, str]) -> dict[str, str]:
    """Calico's rule: datastore keys in the network configuration win over the environment."""
    pairs = {
        "DATASTORE_TYPE": "datastore_type",
        "ETCD_ENDPOINTS": "etcd_endpoints",
        "ETCD_KEY_FILE": "etcd_key_file",
        "ETCD_CERT_FILE": "etcd_cert_file",
        "ETCD_CA_CERT_FILE": "etcd_ca_cert_file",
    }
    out = {name: env[name] for name in env if name in pairs or name[7:] in pairs}
    overrides = {name: str(config[key]) for name, key in pairs.items() if config.get(key)}
    if "ETCD_ENDPOINTS" not in overrides and config.get("etcd_authority"):
        scheme = config.get("etcd_scheme") or "http"
        overrides["ETCD_ENDPOINTS"] = f"{scheme}://{config['etcd_authority']}"
    for name, value in overrides.items():
        # DatastoreConfig.from_env prefers CALICO_<name>: set both so the config file wins.
        out[name] = out[f"CALICO_{name}"] = value
    return out


def etcd_store(config: Mapping[str, Any], env: Mapping[str, str]) -> KVStore:
    from pycalico.datastore.config import DatastoreConfig
    from pycalico.datastore.etcd import EtcdKVStore

    settings = datastore_settings(config, env)
    return EtcdKVStore.from_config(DatastoreConfig.from_env(settings), retry_timeout=10.0)


@contextlib.asynccontextmanager
async def host_lock(path: str) -> AsyncIterator[None]:
    """flock on ``path``; if the lock cannot be had (no directory, no permission) go without."""
    descriptor = None
    try:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        while True:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                await asyncio.sleep(0.002)
    except OSError:
        if descriptor is not None:
            os.close(descriptor)
        descriptor = None
    try:
        yield
    finally:
        if descriptor is not None:
            os.close(descriptor)  # closing releases the lock


def _pool_lists(invocation: Invocation) -> tuple[int, int, list[str], list[str]]:
    ipam = invocation.ipam
    num4 = 1 if config_flag(ipam.get("assign_ipv4"), True) else 0
    num6 = 1 if config_flag(ipam.get("assign_ipv6"), False) else 0
    if num4 == 0 and num6 == 0:
        raise CniError(
            "ipam: assign_ipv4 and assign_ipv6 are both false: nothing to assign",
            code=ERR_INVALID_NETWORK_CONFIG,
        )
    return (
        num4,
        num6,
        string_list(ipam.get("ipv4_pools"), "ipam.ipv4_pools"),
        string_list(ipam.get("ipv6_pools"), "ipam.ipv6_pools"),
    )


async def _add(invocation: Invocation, ipam: IPAM, who: Identity) -> Result:
    requested_ip = invocation.args.get("IP")
    if requested_ip:
        import ipaddress

        try:
            address = ipaddress.ip_address(requested_ip)
        except ValueError:
            raise CniError(f"CNI_ARGS: IP={requested_ip!r} is not an IP address") from None
        await ipam.assign_ip(address, node=who.node, handle_id=who.handle_id, attrs=who.attrs)
        host_bits = 32 if address.version == 4 else 128
        return Result(ips=[IPConfig(f"{address}/{host_bits}")])
    num4, num6, v4_names, v6_names = _pool_lists(invocation)
    pools = await ipam.list_pools() if (v4_names or v6_names) else []
    try:
        v4_pools = resolve_requested(v4_names, pools, 4)
        v6_pools = resolve_requested(v6_names, pools, 6)
    except PoolSelectionError as exc:
        raise CniError(str(exc), code=ERR_INVALID_NETWORK_CONFIG) from None
    try:
        v4, v6 = await ipam.auto_assign(
            AutoAssignRequest(
                num4=num4,
                num6=num6,
                handle_id=who.handle_id,
                attrs=who.attrs,
                node=who.node,
                ipv4_pools=v4_pools,
                ipv6_pools=v6_pools,
            )
        )
    except IPAMError as exc:
        text = str(exc)
        if text.startswith("Assigned "):
            family = "IPv6" if "requested IPv6" in text else "IPv4"
            text = f"failed to request {family} addresses: {text}"
        raise CniError(text) from None
    return Result(ips=[IPConfig(str(a)) for a in (*v4.addresses, *v6.addresses)])


async def _del(ipam: IPAM, who: Identity) -> None:
    # Calico also releases by the legacy workload handle, for addresses an older plugin
    # assigned.  When this allocator assigned the container's address itself (the node agent,
    # which remembers the handles it wrote), that address is under the new handle and the
    # legacy lookup is skipped: it is an etcd read on every DEL.  Otherwise both handles at
    # once (in turn would add a round trip); the first failure, in Calico's order, wins.
    own = ipam.wrote_handle(who.handle_id)
    handles = dict.fromkeys((who.handle_id,) if own else (who.handle_id, who.workload_handle))
    outcomes = await asyncio.gather(
        *(ipam.release_by_handle(handle) for handle in handles), return_exceptions=True
    )
    for outcome in outcomes:
        if isinstance(outcome, BaseException) and not isinstance(outcome, HandleNotFound):
            raise outcome


async def _check(invocation: Invocation, ipam: IPAM, who: Identity) -> None:
    try:
        held = {str(a) for a in await ipam.addresses_by_handle(who.handle_id)}
    except HandleNotFound:
        raise CniError(f"no IPAM allocation for handle {who.handle_id}") from None
    previous = invocation.config.get("prevResult")
    if isinstance(previous, dict):
        for ip in Result.from_json(previous).ips:
            address = ip.address.split("/")[0]
            if address not in held:
                raise CniError(
                    f"address {address} from prevResult is not allocated to handle {who.handle_id}"
                )


Lock = Callable[[str], contextlib.AbstractAsyncContextManager[None]]


async def handle(
    env: Mapping[str, str],
    stdin: str,
    *,
    kv: KVStore | None = None,
    ipam: IPAM | None = None,
    kv_factory: KVFactory = etcd_store,
    lock: Lock = host_lock,
) -> Response:
    """Serve one plugin call; never raises, the failure is in the response.

    The node agent passes its long-lived ``ipam`` (warm caches, per-node batching) and a
    no-op ``lock``; the in-process path passes nothing and gets a fresh store and the host
    file lock."""
    version: str | None = None
    try:
        invocation = parse_invocation(env, stdin)
        version = invocation.cni_version
        if invocation.command == "VERSION":
            return Response(0, json.dumps(version_result(invocation.config)))
        if invocation.command in ("GC", "STATUS"):
            return Response(0)
        node = node_name(invocation.config, env, file_required=False)
        result = await serve(
            invocation, env, node, kv=kv, ipam=ipam, kv_factory=kv_factory, lock=lock
        )
    except (CniError, IPAMError, DatastoreError, ValueError, TimeoutError) as exc:
        error = cni_error(exc)
        return Response(
            1, json.dumps(error_result(error, version)), f"{PLUGIN_NAME}: {error.msg}\n"
        )
    if result is None:
        return Response(0)
    return Response(0, json.dumps(render_result(result, version)))


def cni_error(exc: Exception) -> CniError:
    """How a failure of this plugin is reported (CNI error code 999 unless it says otherwise)."""
    if isinstance(exc, CniError):
        return exc
    if isinstance(exc, TimeoutError):
        return CniError(f"timed out after {TIMEOUT_SECONDS:.0f}s waiting for the datastore")
    return CniError(str(exc))


async def serve(
    invocation: Invocation,
    env: Mapping[str, str],
    node: str,
    *,
    kv: KVStore | None = None,
    ipam: IPAM | None = None,
    kv_factory: KVFactory = etcd_store,
    lock: Lock = host_lock,
) -> Result | None:
    """ADD (the typed result), DEL or CHECK (None) for ``node``; raises on failure.

    The ``calico`` plugin calls this directly (same process, same allocator in the agent): no
    JSON round trip and no second node-name resolution."""
    who = identify(invocation, node)
    settings = datastore_settings(invocation.config, env)
    datastore_type = settings.get("CALICO_DATASTORE_TYPE") or settings.get("DATASTORE_TYPE")
    if datastore_type not in (None, "", "etcdv3"):
        raise CniError(
            f"datastore_type: {datastore_type!r} is not supported (pycalico uses etcdv3)",
            code=ERR_INVALID_NETWORK_CONFIG,
        )
    if ipam is not None:
        kv = ipam.kv
    own_store = kv is None
    store = kv if kv is not None else kv_factory(invocation.config, env)
    allocator = ipam if ipam is not None else IPAM(store)
    lock_file = str(invocation.config.get("ipam_lock_file") or DEFAULT_LOCK_FILE)
    try:
        # Calico starts its 90 s clock once the host lock is held.
        async with lock(lock_file), asyncio.timeout(TIMEOUT_SECONDS):
            if invocation.command == "ADD":
                return await _add(invocation, allocator, who)
            if invocation.command == "DEL":
                await _del(allocator, who)
                return None
            if invocation.command == "CHECK":
                await _check(invocation, allocator, who)
                return None
            raise CniError(f"CNI_COMMAND: {invocation.command!r} is not served by {PLUGIN_NAME}")
    finally:
        if own_store:
            await store.close()


@contextlib.asynccontextmanager
async def no_lock(path: str) -> AsyncIterator[None]:
    """The agent's lock: its allocator already serialises the work of each node."""
    yield


def run(env: Mapping[str, str], stdin: str) -> Response:
    """The in-process path: one event loop, one etcd connection, for one call."""
    return asyncio.run(handle(env, stdin))
