"""The ``calico`` CNI plugin's work: ADD, DEL, CHECK, GC, STATUS and VERSION.

What it is: ``handle(env, stdin)`` serves one call and returns what the executable prints and
its exit status.  It serves both paths of DESIGN.md §2: the thin ``calico`` process calls it
in-process when no node agent listens (fresh etcd connection, the host IPAM lock), and the node
agent calls it for forwarded calls (``kv`` and ``ipam`` are the agent's long-lived ones).

ADD (reference §6.3): parse the NetConf, find the node and the workload, refuse while the
cluster is not ready (ClusterInformation ``datastoreReady: false``), get addresses from IPAM
(``calico-ipam`` in-process, any other IPAM plugin as an executable found on ``CNI_PATH``),
build the veth pair and routes (``pycalico.cni.netns``), write the WorkloadEndpoint, print the
result.  Each step that succeeded is undone if a later one fails: no address, interface or
endpoint is left behind.  A repeated ADD for the same container returns the endpoint's result.

DEL (§6.4): idempotent.  The endpoint is deleted only if it belongs to this container ID (a
newer sandbox of the same pod keeps its own); the container's interface is deleted if its
namespace still exists; the addresses are released by handle whatever else was found.

What it is not: the executable (``pycalico.cni.plugin``), the wire formats (``spec``), kernel
calls (``netns``) or naming rules (``workload``).  Invariant: never raises; every failure is a
CNI error JSON response with exit status 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import logging.handlers
import os
from collections.abc import Callable, Mapping
from typing import Any

from pycalico.cni import ipam_handler, kubernetes, netns
from pycalico.cni.agent_protocol import Response
from pycalico.cni.checks import validate_invocation, version_allows
from pycalico.cni.config import CALICO_IPAM, DEFAULT_MTU, DEFAULT_MTU_FILE, NetConf
from pycalico.cni.delegation import checked as _checked
from pycalico.cni.delegation import exec_plugin
from pycalico.cni.nodename import node_name
from pycalico.cni.pod_request import PodSettings, ipam_config, ipam_requests
from pycalico.cni.spec import (
    ERR_INVALID_NETWORK_CONFIG,
    ERR_TRY_AGAIN_LATER,
    CniError,
    Invocation,
    IPConfig,
    Result,
    error_result,
    parse_invocation,
    render_result,
    version_result,
)
from pycalico.cni.workload import (
    Workload,
    addresses_of,
    host_addresses,
    identify,
    result_for,
    valid_attachments,
    workload_endpoint,
)
from pycalico.datastore.api import DatastoreError, KeyNotFound, KVStore
from pycalico.datastore.resources import ResourceStore
from pycalico.datastore.retry import RetriesExhausted, read_modify_write
from pycalico.ipam.allocator import IPAM, IPAMError
from pycalico.ipam.keys import HANDLES_PREFIX
from pycalico.lib.sysctls import workload_sysctls
from pycalico.model.endpoints import WorkloadEndpoint
from pycalico.model.node import ClusterInformation

PLUGIN_NAME = "calico"
ERR_NOT_AVAILABLE = 50  # STATUS: the plugin cannot serve ADD now (CNI 1.1.0)
TIMEOUT_SECONDS = 90.0
MTU_FILE_ENV = "CALICO_MTU_FILE"
KVFactory = Callable[[Mapping[str, Any], Mapping[str, str]], KVStore]


# --- node, MTU, logging ----------------------------------------------------------------------


def workload_node(invocation: Invocation, conf: NetConf, env: Mapping[str, str]) -> str:
    """The node of this call (``pycalico.cni.nodename``: the file must exist unless
    ``nodename_file_optional``)."""
    return node_name(invocation.config, env, file_required=not conf.nodename_file_optional)


def resolve_mtu(conf: NetConf, env: Mapping[str, str]) -> int:
    if conf.mtu:
        return conf.mtu
    path = env.get(MTU_FILE_ENV) or DEFAULT_MTU_FILE
    try:
        with open(path) as handle:
            return int(handle.read().strip())
    except (OSError, ValueError):
        if conf.require_mtu_file:
            raise CniError(f"require_mtu_file: cannot read the MTU from {path}") from None
        return DEFAULT_MTU


_loggers: dict[str, logging.Logger] = {}


def plugin_logger(conf: NetConf) -> logging.Logger:
    """One rotating log per ``log_file_path`` (nodes on one machine each name their own);
    a file that cannot be opened means no log, never a failed call."""
    path = conf.log.file_path
    logger = _loggers.get(path)
    if logger is None:
        logger = logging.getLogger(f"pycalico.cni.calico[{path}]")
        logger.propagate = False
        try:
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
            handler: logging.Handler = logging.handlers.RotatingFileHandler(
                path,
                maxBytes=max(conf.log.max_size_mb, 1) * 1024 * 1024,
                backupCount=max(conf.log.max_count, 0),
            )
            handler.setFormatter(logging.Formatter("%(asctime)s [%(levelname)s] %(message)s"))
        except OSError:
            handler = logging.NullHandler()
        logger.addHandler(handler)
        _loggers[path] = logger
    level = {"warn": "WARNING", "panic": "CRITICAL", "fatal": "CRITICAL", "trace": "DEBUG"}
    name = level.get(conf.log.level, conf.log.level.upper())
    logger.setLevel(logging.CRITICAL + 1 if name == "NONE" else getattr(logging, name))
    return logger


# --- IPAM delegation -------------------------------------------------------------------------


class Context:
    """What one call works with: parsed input, identity, datastore and IPAM access."""

    def __init__(
        self,
        invocation: Invocation,
        conf: NetConf,
        env: Mapping[str, str],
        kv: KVStore,
        ipam: IPAM | None,
        log: logging.Logger,
        kube: kubernetes.KubeClients | None = None,
    ) -> None:
        self.invocation = invocation
        self.conf = conf
        self.env = env
        self.kv = kv
        self.store = ResourceStore(kv)
        self.ipam = ipam
        self.log = log
        self._workload: Workload | None = None
        self.kube = kube or kubernetes.KubeClients()
        api = kubernetes.api_settings(conf)
        in_k8s = invocation.args.get("K8S_POD_NAMESPACE") and invocation.args.get("K8S_POD_NAME")
        self.api = api if in_k8s else None  # Kubernetes mode: a pod, and an API to ask about it

    @property
    def workload(self) -> Workload:
        if self._workload is None:
            self._workload = identify(
                workload_node(self.invocation, self.conf, self.env),
                self.conf.name,
                self.invocation.container_id,
                self.invocation.ifname,
                self.invocation.args,
                self.env.get("FELIX_INTERFACEPREFIX", ""),
            )
        return self._workload

    async def read_pod(self) -> PodSettings | None:
        """Kubernetes mode: the pod's settings from the API (None in etcd mode)."""
        if self.api is None:
            return None
        workload = self.workload
        return await kubernetes.read_pod(
            self.kube, self.api, self.conf, workload.namespace, workload.pod
        )

    async def delegate_ipam(self, command: str, base: Invocation | None = None) -> Result | None:
        """Run the IPAM plugin's ``command``: ``calico-ipam`` in this process (and, in the
        agent, on the same allocator: no exec, no new etcd connection, the plugin's node name
        and a typed result), any other plugin by exec."""
        if self.conf.ipam.type == CALICO_IPAM:
            invocation = dataclasses.replace(base or self.invocation, command=command)
            try:
                if self.ipam is not None:
                    return await ipam_handler.serve(
                        invocation,
                        self.env,
                        self.workload.node,
                        ipam=self.ipam,
                        lock=ipam_handler.no_lock,
                    )
                return await ipam_handler.serve(
                    invocation, self.env, self.workload.node, kv=self.kv
                )
            except (CniError, IPAMError, DatastoreError, ValueError, TimeoutError) as exc:
                error = ipam_handler.cni_error(exc)
                raise CniError(
                    f"{CALICO_IPAM}: {error.msg}", code=error.code, details=error.details
                ) from None
        env = {**self.env, "CNI_COMMAND": command}
        body = _checked(
            self.conf.ipam.type,
            await exec_plugin(self.conf.ipam.type, env, self.invocation.raw_config),
        )
        return Result.from_json(body) if command == "ADD" else None

    async def ipam_add(self, pod: PodSettings | None = None) -> Result:
        """IPAM's addresses; for a pod, as its annotations ask (module ``pod_request``): its
        ``ipAddrsNoIpam`` as they are, one IPAM call per ``ipAddrs`` address, its pools and
        families.  All or nothing: what an earlier call assigned is released on failure."""
        if pod is not None and pod.ip_addrs_no_ipam:
            return Result(ips=[IPConfig(f"{a}/{a.max_prefixlen}") for a in pod.ip_addrs_no_ipam])
        if pod is None or self.conf.ipam.type != CALICO_IPAM:
            result = await self.delegate_ipam("ADD")
            assert result is not None
            return result
        config = ipam_config(self.invocation.config, pod)
        ips: list[IPConfig] = []
        try:
            for args in ipam_requests(self.invocation.args, pod):
                call = dataclasses.replace(self.invocation, config=config, args=args)
                result = await self.delegate_ipam("ADD", call)
                assert result is not None
                ips.extend(result.ips)
        except BaseException:
            if ips:
                await self.ipam_del()
            raise
        return Result(ips=ips)

    async def ipam_del(self) -> None:
        await self.delegate_ipam("DEL")


# --- the commands ----------------------------------------------------------------------------


async def _cluster_ready(ctx: Context) -> None:
    """Calico refuses ADD while ClusterInformation says the datastore is not ready; a cluster
    with no ClusterInformation yet (no calico-node ever started) is let through."""
    try:
        info = await ctx.store.get(ClusterInformation, "default")
    except KeyNotFound:
        return
    if isinstance(info, ClusterInformation) and info.datastore_locked:
        raise CniError(
            "Calico is currently not ready to process requests (ClusterInformation "
            "datastoreReady is false)",
            code=ERR_TRY_AGAIN_LATER,
        )


async def _endpoint(ctx: Context, workload: Workload) -> WorkloadEndpoint | None:
    try:
        found = await ctx.store.get(WorkloadEndpoint, workload.name, workload.namespace)
    except KeyNotFound:
        return None
    return found if isinstance(found, WorkloadEndpoint) else None


async def cmd_add(ctx: Context) -> Result:
    conf, invocation = ctx.conf, ctx.invocation
    workload = ctx.workload
    mtu = resolve_mtu(conf, ctx.env)
    _, existing, pod = await asyncio.gather(
        _cluster_ready(ctx), _endpoint(ctx, workload), ctx.read_pod()
    )
    if existing is not None and existing.spec.container_id == workload.container_id:
        observed = await asyncio.to_thread(
            netns.inspect_workload, invocation.netns, workload.endpoint, workload.host_ifname
        )
        if observed.container_exists:
            ctx.log.info("ADD %s: repeated for the same container, same result", workload.name)
            return result_for(
                workload, invocation.netns, addresses_of(existing), observed.container_mac
            )
    undo: list[tuple[str, Callable[[], Any]]] = []
    try:
        ipam_result = await ctx.ipam_add(pod)
        undo.append(("release the addresses", ctx.ipam_del))
        if not ipam_result.ips:
            raise CniError(f"{conf.ipam.type} returned no addresses")
        addresses = host_addresses(ipam_result.ips)
        has_v6 = any(a.version == 6 for a in addresses)
        plan = netns.WorkloadPlan(
            netns=invocation.netns,
            ifname=workload.endpoint,
            host_ifname=workload.host_ifname,
            mtu=mtu,
            addresses=addresses,
            host_sysctls=host_sysctls(workload.host_ifname, has_v6),
            allow_ip_forwarding=conf.allow_ip_forwarding,
        )
        mac = await asyncio.to_thread(netns.setup_workload, plan)

        async def remove_interface() -> None:
            await asyncio.to_thread(netns.teardown_workload, invocation.netns, workload.endpoint)

        undo.append(("remove the interface", remove_interface))
        endpoint = workload_endpoint(conf, workload, addresses, mac, pod)
        try:
            await ctx.store.apply(endpoint)
        except DatastoreError as exc:
            raise CniError(f"cannot write WorkloadEndpoint {workload.name}: {exc}") from exc
        if pod is not None and ctx.api is not None:
            undo.append(("delete the endpoint", lambda: _delete_endpoint(ctx, workload)))
            await kubernetes.annotate(
                ctx.kube, ctx.api, pod, [str(a.ip) for a in addresses], workload.container_id
            )
        ctx.log.info(
            "ADD %s: %s on %s (%s)",
            workload.name,
            ", ".join(map(str, addresses)),
            workload.host_ifname,
            invocation.netns,
        )
        return result_for(workload, invocation.netns, addresses, mac, ipam_result.dns)
    except BaseException as failure:
        ctx.log.error("ADD %s failed: %s; undoing %d steps", workload.name, failure, len(undo))
        for what, step in reversed(undo):
            try:
                await step()
            except Exception as exc:  # report the first failure, log the rest
                ctx.log.error("ADD %s: could not %s: %s", workload.name, what, exc)
        raise


def host_sysctls(interface: str, ipv6: bool) -> list[tuple[str, str]]:
    """Calico's per-workload sysctls (``lib.sysctls``, shared with Felix) plus the IPv6 ones the
    CNI plugin sets before Felix sees the interface (reference §6.3 step 9)."""
    values = workload_sysctls(interface, allow_spoofing=False, ipv6=ipv6)
    if ipv6:
        values = [
            (f"net/ipv6/conf/{interface}/disable_ipv6", "0"),
            (f"net/ipv6/conf/{interface}/accept_dad", "0"),
            *values,
        ]
    return values


async def cmd_del(ctx: Context) -> None:
    """The endpoint and the interface go at the same time (deleting a veth waits for the
    kernel's RCU grace period, as long as an etcd write); the addresses are released only
    after both, so a released address is never still routed to the old interface."""
    invocation = ctx.invocation
    workload = ctx.workload

    async def remove_interface() -> None:
        if invocation.netns and invocation.ifname:
            await asyncio.to_thread(netns.teardown_workload, invocation.netns, invocation.ifname)

    async def release_annotations() -> None:
        if ctx.api is not None:
            await kubernetes.release(
                ctx.kube, ctx.api, workload.namespace, workload.pod, workload.container_id, ctx.log
            )

    outcomes = await asyncio.gather(
        _delete_endpoint(ctx, workload),
        remove_interface(),
        release_annotations(),
        return_exceptions=True,
    )
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome  # a datastore error fails the DEL before any release: no guessing
    await ctx.ipam_del()
    ctx.log.info("DEL %s (container %s) done", workload.name, workload.container_id)


async def _delete_endpoint(ctx: Context, workload: Workload) -> None:
    """Delete the endpoint if it is this container's, at the revision read (retried on a race)."""

    async def step(last: DatastoreError | None) -> None:
        endpoint = await _endpoint(ctx, workload)
        if endpoint is None:
            return
        if endpoint.spec.container_id not in (None, "", workload.container_id):
            ctx.log.info(
                "DEL %s: endpoint belongs to container %s, kept",
                workload.name,
                endpoint.spec.container_id,
            )
            return
        with contextlib.suppress(KeyNotFound):
            await ctx.store.delete(
                WorkloadEndpoint,
                workload.name,
                workload.namespace,
                revision=endpoint.metadata.resource_version,
            )

    with contextlib.suppress(RetriesExhausted):
        await read_modify_write(step, what=f"delete endpoint {workload.name}", attempts=5)


async def cmd_check(ctx: Context) -> None:
    conf, invocation = ctx.conf, ctx.invocation
    workload = ctx.workload
    if conf.prev_result is None:
        raise CniError("CHECK needs prevResult (the result of ADD) in the configuration")
    previous = Result.from_json(conf.prev_result)
    endpoint = await _endpoint(ctx, workload)
    if endpoint is None:
        raise CniError(f"WorkloadEndpoint {workload.namespace}/{workload.name} does not exist")
    if endpoint.spec.container_id != workload.container_id:
        raise CniError(
            f"WorkloadEndpoint {workload.name} belongs to container {endpoint.spec.container_id}"
        )
    observed = await asyncio.to_thread(
        netns.inspect_workload, invocation.netns, workload.endpoint, workload.host_ifname
    )
    if not observed.container_exists:
        raise CniError(f"interface {workload.endpoint} not found in {invocation.netns}")
    if not observed.container_up:
        raise CniError(f"interface {workload.endpoint} in {invocation.netns} is down")
    if not observed.host_exists:
        raise CniError(f"host interface {workload.host_ifname} not found")
    if observed.host_mac != netns.HOST_MAC:
        raise CniError(f"host interface {workload.host_ifname} has MAC {observed.host_mac}")
    expected = {str(a) for a in host_addresses(previous.ips)}
    for address in sorted(expected):
        if address not in observed.container_addresses:
            raise CniError(f"address {address} not found on {workload.endpoint}")
        if address not in observed.host_routes:
            raise CniError(f"no route {address} dev {workload.host_ifname}")
    if {str(a) for a in addresses_of(endpoint)} != expected:
        raise CniError(f"WorkloadEndpoint {workload.name} addresses differ from prevResult")
    if (
        any(":" not in a for a in expected)
        and netns.IPV4_GATEWAY not in observed.container_gateways
    ):
        raise CniError(f"no default route via {netns.IPV4_GATEWAY} in {invocation.netns}")
    if any(":" in a for a in expected) and netns.IPV6_GATEWAY not in observed.container_gateways:
        raise CniError(f"no default route via {netns.IPV6_GATEWAY} in {invocation.netns}")
    await ctx.delegate_ipam("CHECK")


async def cmd_gc(ctx: Context) -> None:
    """Release what this network holds on this node for containers that are not in
    ``cni.dev/valid-attachments``: IPAM handles ``<network>.<containerID>`` and their
    WorkloadEndpoints.  Other nodes' allocations are left alone."""
    keep = {container for container, _ in valid_attachments(ctx.invocation.config)}
    node = workload_node(ctx.invocation, ctx.conf, ctx.env)
    if ctx.conf.ipam.type != CALICO_IPAM:
        await ctx.delegate_ipam("GC")
    allocator = ctx.ipam or IPAM(ctx.kv)
    prefix = f"{HANDLES_PREFIX}{ctx.conf.name}."
    stale = []
    for item in (await ctx.kv.list(prefix)).items:
        container = item.key[len(prefix) :]
        if container in keep:
            continue
        handle_id = f"{ctx.conf.name}.{container}"
        addresses = await allocator.addresses_by_handle(handle_id)
        infos = [await allocator.allocation_info(a) for a in addresses]
        if any(i is not None and i.attributes.get("node") == node for i in infos):
            stale.append((container, handle_id))
    endpoints = (await ctx.store.list(WorkloadEndpoint)).items
    for container, handle_id in stale:
        for endpoint in endpoints:
            if (
                isinstance(endpoint, WorkloadEndpoint)
                and endpoint.spec.container_id == container
                and endpoint.spec.node == node
            ):
                with contextlib.suppress(KeyNotFound):
                    await ctx.store.delete(
                        WorkloadEndpoint, endpoint.metadata.name, endpoint.metadata.namespace
                    )
        await allocator.release_by_handle(handle_id)
        ctx.log.info("GC: released %s", handle_id)


async def cmd_status(ctx: Context) -> None:
    try:
        await _cluster_ready(ctx)
    except CniError as exc:
        raise CniError(exc.msg, code=ERR_NOT_AVAILABLE) from None
    except DatastoreError as exc:
        raise CniError(f"the datastore is not reachable: {exc}", code=ERR_NOT_AVAILABLE) from exc


# --- the entry --------------------------------------------------------------------------------


async def handle(
    env: Mapping[str, str],
    stdin: str,
    *,
    kv: KVStore | None = None,
    ipam: IPAM | None = None,
    kv_factory: KVFactory = ipam_handler.etcd_store,
    kube: kubernetes.KubeClients | None = None,
) -> Response:
    """Serve one call; never raises.  The agent passes its ``kv``, ``ipam`` and ``kube``."""
    version: str | None = None
    try:
        invocation = parse_invocation(env, stdin)
        version = invocation.cni_version
        if invocation.command == "VERSION":
            return Response(0, json.dumps(version_result(invocation.config)))
        validate_invocation(invocation)
        version_allows(invocation.command, version)
        conf = NetConf.parse(invocation.config)
        log = plugin_logger(conf)
        store = kv if kv is not None else (ipam.kv if ipam is not None else None)
        own_store = store is None
        if store is None:
            settings = ipam_handler.datastore_settings(invocation.config, env)
            if (settings.get("CALICO_DATASTORE_TYPE") or "etcdv3") != "etcdv3":
                raise CniError(
                    "datastore_type: only 'etcdv3' is supported", code=ERR_INVALID_NETWORK_CONFIG
                )
            store = kv_factory(invocation.config, env)
        ctx = Context(invocation, conf, env, store, ipam, log, kube)
        try:
            async with asyncio.timeout(TIMEOUT_SECONDS):
                return await _dispatch(ctx, version)
        except BaseException as exc:
            if not isinstance(exc, CniError):
                log.error("%s %s: %s", invocation.command, invocation.container_id, exc)
            raise
        finally:
            if own_store:
                await store.close()
            if kube is None:
                await ctx.kube.close()
    except CniError as exc:
        return _error(exc, version)
    except (DatastoreError, ValueError, OSError) as exc:
        return _error(CniError(f"{type(exc).__name__}: {exc}"), version)
    except TimeoutError:
        return _error(CniError(f"timed out after {TIMEOUT_SECONDS:.0f}s"), version)


async def _dispatch(ctx: Context, version: str) -> Response:
    command = ctx.invocation.command
    if command == "ADD":
        return Response(0, json.dumps(render_result(await cmd_add(ctx), version)))
    if command == "DEL":
        await cmd_del(ctx)
    elif command == "CHECK":
        await cmd_check(ctx)
    elif command == "GC":
        await cmd_gc(ctx)
    else:
        await cmd_status(ctx)
    return Response(0)


def _error(error: CniError, version: str | None) -> Response:
    return Response(1, json.dumps(error_result(error, version)), f"{PLUGIN_NAME}: {error.msg}\n")


def run(env: Mapping[str, str], stdin: str) -> Response:
    """The in-process path: one event loop, one etcd connection, for one call."""
    return asyncio.run(handle(env, stdin))
