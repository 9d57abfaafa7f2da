"""confd: watch the BGP view of the datastore, render BIRD's configuration, reload BIRD.

What it is: the I/O around ``processor`` and ``render``.  It consumes the typed update stream
(``datastore.resource_syncer``; decoding happens there, not here): one ``ResourceSyncer`` per kind
it needs (BGPConfigurations, Nodes, BGPPeers, IPPools, BGPFilters) and one for this node's IPAM
affinities, so a busy cluster's workload-endpoint churn never reaches it.
After every change (coalesced: whatever arrived while a render ran is handled by the next one)
it builds the configuration, renders it, and only if the text differs from what is on disk:
writes it to a temporary file; when BIRD runs, has it load that file (``configure "<file>"``
over the control socket: one parse, and BIRD refuses a bad file while it keeps running the old
one), else checks it with ``bird -p -c``; then renames it over the configuration (atomic, same
directory), so the file on disk is always what BIRD runs or will run.  What it is not: the
decisions (``processor``), the text (``render``), or BIRD's process (``pycalico.node.agent``).

Service advertisement: while the ``default`` BGPConfiguration has service ranges and confd was
given a kubeconfig, it also watches Kubernetes' Services and EndpointSlices
(``pycalico.k8s.services``) and renders the /32s ``pycalico.bgp.services`` picks for this node
(``k8s_node_name``: ``CALICO_K8S_NODE_REF``).  As Calico's, a render waits for that watch's first
list (so a restarted confd does not withdraw the /32s BIRD still announces), but at most
``SERVICE_SYNC_GRACE`` seconds: an API server that does not answer delays the ranges, it does
not stop BGP.

Passwords (``secretKeyRef``): there is no Kubernetes here, so a secret ``<name>``/``<key>`` is read
from the file ``<secrets dir>/<name>/<key>`` (``CALICO_BGP_SECRETS_DIR``, default
``/etc/calico/bgp-secrets``, the layout of a mounted Kubernetes secret volume), else from the
environment variable ``CALICO_BGP_SECRET_<NAME>_<KEY>`` (upper case, other characters as ``_``).
Secrets are re-read on every render.

Invariants:

* Nothing is written before every syncer has reported in-sync once: BIRD never sees a
  configuration built from half a snapshot.
* The file on disk only ever holds a whole configuration that ``bird -p`` accepted; a rejected
  render is logged and the previous file stays.
* BIRD is reloaded only when the text changed.  A file written while BIRD could not be told
  (not started yet, or not answering) is announced with ``configure`` as soon as BIRD answers:
  a BIRD that started just before the rename would otherwise run the previous file until the
  next change.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from pycalico.bgp.bird import BirdControl, BirdError, check_config
from pycalico.bgp.processor import BgpInputs, BirdConfig, build, password_refs
from pycalico.bgp.render import render
from pycalico.bgp.services import ServiceRanges, advertised_routes
from pycalico.datastore.api import KVStore
from pycalico.datastore.paths import AffinityKey
from pycalico.datastore.resource_syncer import ResourceSyncer
from pycalico.datastore.updates import BlockAffinity, ResourceUpdate
from pycalico.k8s.client import KubeClient, KubeError
from pycalico.k8s.services import ServiceWatch
from pycalico.model.bgp import BGPConfiguration, BGPPeer, SecretKeyRef
from pycalico.model.bgpfilter import BGPFilter
from pycalico.model.ipam import IPPool
from pycalico.model.meta import Resource
from pycalico.model.node import Node

log = logging.getLogger(__name__)

DEFAULT_SECRETS_DIR = "/etc/calico/bgp-secrets"
SECRETS_DIR_ENV = "CALICO_BGP_SECRETS_DIR"
SECRET_ENV_PREFIX = "CALICO_BGP_SECRET_"
RELOAD_RETRY_INTERVAL = 0.2
SERVICE_SYNC_GRACE = 10.0  # how long a render waits for the Service watch's first list

_KINDS: dict[str, type[Resource]] = {
    "bgpconfigurations": BGPConfiguration,
    "nodes": Node,
    "bgppeers": BGPPeer,
    "ippools": IPPool,
    "bgpfilters": BGPFilter,
}


class SecretResolver:
    """Resolves ``secretKeyRef``s from a directory of files, else from the environment."""

    def __init__(self, directory: str | None = None, env: Mapping[str, str] | None = None) -> None:
        self.env = os.environ if env is None else env
        self.directory = directory or self.env.get(SECRETS_DIR_ENV) or DEFAULT_SECRETS_DIR

    @staticmethod
    def env_name(ref: SecretKeyRef) -> str:
        raw = f"{ref.name or ''}_{ref.key}".upper()
        return SECRET_ENV_PREFIX + re.sub(r"[^A-Z0-9]", "_", raw)

    def resolve(self, ref: SecretKeyRef) -> str | None:
        if ref.name and "/" not in ref.name and "/" not in ref.key:
            path = os.path.join(self.directory, ref.name, ref.key)
            try:
                with open(path, encoding="utf-8") as handle:
                    return handle.read().rstrip("\r\n")
            except OSError:
                pass
        return self.env.get(self.env_name(ref))


@dataclass
class ConfdState:
    """The decoded view: resources by name, and this node's affinities by block CIDR."""

    resources: dict[str, dict[str, Resource]] = field(
        default_factory=lambda: {plural: {} for plural in _KINDS}
    )
    affinities: dict[str, str] = field(default_factory=dict)

    def apply(self, update: ResourceUpdate) -> bool:
        """Apply one typed update of the stream; True if it is one confd cares about."""
        key, value = update.key, update.resource
        if isinstance(key, AffinityKey):
            if not isinstance(value, BlockAffinity):
                return self.affinities.pop(key.cidr, None) is not None
            self.affinities[key.cidr] = value.state
            return True
        plural = key.info.plural
        if plural not in self.resources:
            return False
        if value is None:
            return self.resources[plural].pop(key.name, None) is not None
        assert isinstance(value, Resource)
        self.resources[plural][key.name] = value
        return True

    def inputs(
        self,
        node_name: str,
        passwords: Mapping[tuple[str | None, str], str],
        router_id: str | None,
        service_routes: frozenset[str] = frozenset(),
    ) -> BgpInputs:
        return BgpInputs(
            node_name=node_name,
            nodes=self.nodes,
            configs=self.configs,
            peers=self.peers,
            pools=[p for p in self.resources["ippools"].values() if isinstance(p, IPPool)],
            affinities=dict(self.affinities),
            passwords=passwords,
            router_id=router_id,
            filters={
                n: r for n, r in self.resources["bgpfilters"].items() if isinstance(r, BGPFilter)
            },
            service_routes=service_routes,
        )

    @property
    def nodes(self) -> dict[str, Node]:
        return {n: r for n, r in self.resources["nodes"].items() if isinstance(r, Node)}

    @property
    def configs(self) -> dict[str, BGPConfiguration]:
        items = self.resources["bgpconfigurations"].items()
        return {n: r for n, r in items if isinstance(r, BGPConfiguration)}

    @property
    def peers(self) -> list[BGPPeer]:
        return [r for r in self.resources["bgppeers"].values() if isinstance(r, BGPPeer)]


def _write_temporary(path: str, text: str) -> str:
    """``text`` in a new file next to ``path`` (same filesystem, so a rename is atomic)."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=".bird-", suffix=".cfg", dir=directory)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(text)
        os.chmod(temporary, 0o644)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    return temporary


def write_atomically(path: str, text: str) -> None:
    """Replace ``path`` with ``text`` so a reader sees the old file or the new, never a mix."""
    temporary = _write_temporary(path, text)
    try:
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


@dataclass
class ConfdStats:
    renders: int = 0
    writes: int = 0
    reloads: int = 0
    rejected: int = 0
    last_write: float = 0.0  # time.time() of the last file write


class Confd:
    """Renders ``config_path`` for ``node_name`` and keeps BIRD (at ``control``) reloaded."""

    def __init__(
        self,
        kv: KVStore,
        node_name: str,
        config_path: str,
        *,
        control: BirdControl | None = None,
        secrets: SecretResolver | None = None,
        router_id: str | None = None,
        check: bool = True,
        on_render: Callable[[BirdConfig, bool], None] | None = None,
        kubeconfig: str | None = None,
        k8s_node_name: str | None = None,
    ) -> None:
        self.kv = kv
        self.node_name = node_name
        self.config_path = config_path
        self.control = control
        self.secrets = secrets or SecretResolver()
        self.router_id = router_id
        self.check = check
        self.on_render = on_render
        self.state = ConfdState()
        # Service advertisement: Kubernetes is watched only while the BGPConfiguration asks.
        self.kubeconfig = kubeconfig
        self.k8s_node_name = k8s_node_name or node_name
        self.service_watch: ServiceWatch | None = None
        self._service_task: asyncio.Task[None] | None = None
        self._service_deadline = 0.0  # renders wait for the watch's first list until then
        self.stats = ConfdStats()
        # One stream per kind (and one for this node's affinities), so that a busy cluster's
        # endpoint churn under the same key prefix never reaches confd.
        self.streams = [ResourceSyncer(kv, [plural]) for plural in _KINDS] + [
            ResourceSyncer(kv, [], affinities_of=node_name)
        ]
        self._in_sync: set[int] = set()
        self._dirty = asyncio.Event()
        self._text: str | None = None
        # A file was written that BIRD was not told about (it was not running yet, or did not
        # answer): BIRD may have read the previous file just before, so tell it once it answers.
        self._reload_pending = False

    def _current_text(self) -> str | None:
        if self._text is None:
            with contextlib.suppress(OSError), open(self.config_path, encoding="utf-8") as file:
                self._text = file.read()
        return self._text

    async def _follow(self, index: int) -> None:
        async for batch in self.streams[index]:
            changed = False
            for update in batch.updates:
                changed |= self.state.apply(update)
            if batch.in_sync and index not in self._in_sync:
                self._in_sync.add(index)
                changed = True
            if changed:
                self._dirty.set()

    def build(self) -> BirdConfig:
        passwords: dict[tuple[str | None, str], str] = {}
        for ref in password_refs(self.state.configs, self.state.peers):
            value = self.secrets.resolve(ref)
            if value is not None:
                passwords[(ref.name, ref.key)] = value
        return build(
            self.state.inputs(self.node_name, passwords, self.router_id, self.service_routes())
        )

    def _ranges(self) -> ServiceRanges:
        default = self.state.configs.get("default")
        return ServiceRanges.of(default.spec if default is not None else None)

    def service_routes(self) -> frozenset[str]:
        """The Service /32s (/128s) this node announces now (none until the watch is on)."""
        watch = self.service_watch
        if watch is None:
            return frozenset()
        return advertised_routes(
            self._ranges(), watch.services.values(), watch.slices.values(), self.k8s_node_name
        )

    async def sync_service_watch(self) -> None:
        """Start the Kubernetes watch when the BGPConfiguration asks for Service
        advertisement (and KUBECONFIG is set), stop it when it no longer does."""
        wanted = self._ranges().wanted and self.kubeconfig is not None
        if wanted and self._service_task is None:
            assert self.kubeconfig is not None
            try:
                kube = await KubeClient.from_kubeconfig(self.kubeconfig)
            except KubeError as error:
                log.error("confd: cannot watch Services for advertisement: %s", error)
                return
            self.service_watch = ServiceWatch(kube, self._dirty.set)
            self._service_task = asyncio.create_task(self._watch_services(kube))
            self._service_deadline = time.monotonic() + SERVICE_SYNC_GRACE
            asyncio.get_running_loop().call_later(SERVICE_SYNC_GRACE, self._dirty.set)
            log.info("confd: watching Kubernetes Services for advertisement")
        elif not wanted and self._service_task is not None:
            await self.stop_service_watch()

    def waiting_for_services(self) -> bool:
        """A new Service watch has not listed yet (and its grace has not run out): rendering
        now would withdraw this node's Service /32s until it has."""
        watch = self.service_watch
        return (
            watch is not None
            and not watch.synced
            and self._service_task is not None
            and not self._service_task.done()
            and time.monotonic() < self._service_deadline
        )

    async def _watch_services(self, kube: KubeClient) -> None:
        assert self.service_watch is not None
        try:
            await self.service_watch.run()
        except KubeError as error:
            log.error("confd: watching Services failed, none are advertised: %s", error)
        finally:
            await kube.close()

    async def stop_service_watch(self) -> None:
        task, self._service_task, self.service_watch = self._service_task, None, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def render_once(self) -> bool:
        """Build, render and (if the text changed) write and reload.  True if written."""
        config = self.build()
        text = render(config)
        self.stats.renders += 1
        changed = text != self._current_text()
        if changed:
            changed = await self._install(text)
        if self.on_render is not None:
            self.on_render(config, changed)
        return changed

    async def _install(self, text: str) -> bool:
        temporary = _write_temporary(self.config_path, text)
        try:
            applied: bool | None = None
            if self._bird_running():
                # One parse: BIRD loads the candidate itself, and refuses a bad one while it
                # keeps running the old one.
                applied = await self._configure(temporary)
                if applied is False:
                    self.stats.rejected += 1
                    return False
            if applied is None and self.check:
                problem = await asyncio.to_thread(check_config, temporary)
                if problem:
                    self.stats.rejected += 1
                    log.error("confd: BIRD rejects the rendered configuration: %s", problem)
                    return False
            os.replace(temporary, self.config_path)
        finally:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
        self._text = text
        self.stats.writes += 1
        self.stats.last_write = time.time()
        if applied:
            self.stats.reloads += 1
        elif self.control is not None:
            self._reload_pending = True
        log.info("confd: wrote %s%s", self.config_path, " and reloaded BIRD" if applied else "")
        return True

    def _bird_running(self) -> bool:
        return self.control is not None and os.path.exists(self.control.path)

    async def _configure(self, path: str) -> bool | None:
        """Have the running BIRD load ``path``: True if it now runs it, False if it refused it,
        None if it could not be asked (then BIRD reads the file when it next starts)."""
        assert self.control is not None
        try:
            reply = await self.control.command(f'configure "{path}"')
        except BirdError as error:
            log.warning("confd: reload failed: %s", error)
            return None
        if not reply.ok:
            log.error("confd: BIRD rejects the rendered configuration: %s", reply.text)
            return False
        return True

    @property
    def reload_pending(self) -> bool:
        """A written file still waits for BIRD to be told about it."""
        return self._reload_pending

    async def _retry_reload(self) -> None:
        if not self._bird_running():
            return
        assert self.control is not None
        try:
            await self.control.configure()
        except BirdError:
            return  # BIRD is still starting (or gone): try again at the next tick
        self._reload_pending = False
        self.stats.reloads += 1
        log.info("confd: BIRD reloaded the configuration it started without")

    async def _next_change(self) -> None:
        """Wait for a datastore change; meanwhile, retry a pending reload every tick."""
        while self._reload_pending:
            try:
                await asyncio.wait_for(self._dirty.wait(), RELOAD_RETRY_INTERVAL)
                return
            except TimeoutError:
                await self._retry_reload()
        await self._dirty.wait()

    async def run(self) -> None:
        """Follow the datastore and keep the configuration current; runs until cancelled."""
        tasks = [asyncio.create_task(self._follow(i)) for i in range(len(self.streams))]
        try:
            while True:
                await self._next_change()
                self._dirty.clear()
                if len(self._in_sync) < len(self.streams):
                    continue
                try:
                    await self.sync_service_watch()
                    if self.waiting_for_services():
                        continue  # its first list (or the grace's end) marks confd dirty
                    await self.render_once()
                except Exception:
                    log.exception("confd: render failed")
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.stop_service_watch()
