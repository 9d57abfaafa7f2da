"""The calico-node agent: supervises BIRD, confd and Felix, and serves the CNI agent socket.

What it is: after ``startup`` has registered the node, ``NodeAgent.run`` keeps these running
until it is told to stop:

* **confd** — a child ``calico-node -confd`` (its own etcd connection, as in Calico), or with
  ``CALICO_CONFD_IN_PROCESS=true`` a task of this process sharing its etcd connection (about
  60 MiB less per node, for labs running many nodes on one machine);
* **BIRD** — ``bird -f -c <config> -s <socket>``, started once confd has written a config;
* **Felix** — ``calico-felix`` (``CALICO_FELIX_BINARY``, else beside calico-node's own
  executable, else on PATH), only when it exists and ``CALICO_DISABLE_FELIX`` is not true
  (Felix is optional here);
* **the CNI agent socket** — ``pycalico.cni.agent_server``, in this process (it needs the live
  etcd connection), when that module is installed;
* **feedback to Kubernetes** — with ``KUBECONFIG``, once BIRD answers, the Kubernetes Node's
  ``NetworkUnavailable`` condition goes False and its BGP annotations are written; a clean stop
  sets it True (``pycalico.node.kubernetes``).

``CALICO_NETWORKING_BACKEND=none`` runs neither confd nor BIRD.  A child that exits is restarted
after a backoff (``next_backoff``: 0.5 s doubling to 10 s, back to the start once a child has
run for 30 s).  BIRD takes over half a second to exit after SIGTERM, so a stop always waits for
the process to be gone before anything is restarted.

Every per-node path is configurable (``NodePaths.from_env``), so many nodes can run on one
machine, each in its own network namespace: ``CALICO_RUN_DIR`` (default ``/var/run/calico``),
``CALICO_BIRD_CONFIG`` (default ``/etc/calico/confd/config/bird.cfg``), ``CALICO_BIRD_SOCKET``
(default ``<run dir>/bird.ctl``), ``CALICO_LOG_DIR`` (default ``/var/log/calico``; one
``<service>.log`` per child), ``CALICO_AGENT_SOCKET`` (default ``<run dir>/cni.sock``).

A restart of calico-node must not cut traffic between pods that already talk, so nothing here
tears the dataplane down: when the agent dies its children get SIGKILL (as in a dying container),
and on a clean stop BIRD is stopped by its ``graceful restart`` command, not SIGTERM — either way
BIRD sends its peers no Cease, so they keep this node's routes by graceful restart, and its
kernel routes stay (``persist``).  Felix, told to stop, leaves the dataplane as it is.

Invariants: children die with the agent (``PR_SET_PDEATHSIG``) as well as on a clean stop; the
agent never restarts a child while its previous instance is still running.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import shutil
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import cast

from pycalico.bgp.bird import BirdControl, BirdError, bird_command
from pycalico.cni import agent_server
from pycalico.datastore.api import KVStore
from pycalico.model.node import NodeBGPSpec
from pycalico.node.kubernetes import NodeFeedback, k8s_node_name, kubeconfig

log = logging.getLogger(__name__)

INITIAL_BACKOFF = 0.5
MAX_BACKOFF = 10.0
STABLE_AFTER = 30.0
STOP_TIMEOUT = 5.0
_PR_SET_PDEATHSIG = 1


def next_backoff(previous: float | None, ran_for: float) -> float:
    """The wait before restarting a child that ran ``ran_for`` seconds after the last wait
    ``previous`` (None: first failure)."""
    if previous is None or ran_for >= STABLE_AFTER:
        return INITIAL_BACKOFF
    return min(previous * 2, MAX_BACKOFF)


@dataclass(frozen=True)
class NodePaths:
    run_dir: str
    bird_config: str
    bird_socket: str
    log_dir: str
    agent_socket: str

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> NodePaths:
        env = os.environ if env is None else env
        run_dir = env.get("CALICO_RUN_DIR") or "/var/run/calico"
        return cls(
            run_dir=run_dir,
            bird_config=env.get("CALICO_BIRD_CONFIG") or "/etc/calico/confd/config/bird.cfg",
            bird_socket=env.get("CALICO_BIRD_SOCKET") or os.path.join(run_dir, "bird.ctl"),
            log_dir=env.get("CALICO_LOG_DIR") or "/var/log/calico",
            agent_socket=env.get("CALICO_AGENT_SOCKET") or os.path.join(run_dir, "cni.sock"),
        )


def _die_with_parent() -> None:
    # SIGKILL, as when a container dies: a child told to terminate would shut down cleanly, and
    # a cleanly stopping BIRD sends its peers a Cease, which cancels their graceful restart.
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


@dataclass
class ChildSpec:
    name: str
    command: list[str]
    # Awaited before each start (BIRD waits for confd's first config).
    precondition: Callable[[], Awaitable[None]] | None = None
    env: Mapping[str, str] | None = None
    # How to ask it to stop (None: SIGTERM); the supervisor kills it if it outlives STOP_TIMEOUT.
    ask_to_stop: Callable[[asyncio.subprocess.Process], Awaitable[None]] | None = None


@dataclass
class ChildState:
    process: asyncio.subprocess.Process | None = None
    starts: int = 0
    last_exit: int | None = None
    started_at: float = 0.0
    history: list[float] = field(default_factory=list)  # start times, for tests and status


class Supervisor:
    """Runs each ``ChildSpec`` and restarts it with backoff when it exits."""

    def __init__(self, log_dir: str) -> None:
        self.log_dir = log_dir
        self.children: dict[str, ChildState] = {}
        self._asks: dict[str, Callable[[asyncio.subprocess.Process], Awaitable[None]] | None] = {}
        self._stopping = False

    async def supervise(self, spec: ChildSpec) -> None:
        state = self.children.setdefault(spec.name, ChildState())
        self._asks[spec.name] = spec.ask_to_stop
        backoff: float | None = None
        os.makedirs(self.log_dir, exist_ok=True)
        while not self._stopping:
            if spec.precondition is not None:
                await spec.precondition()
            with open(os.path.join(self.log_dir, f"{spec.name}.log"), "ab") as output:
                try:
                    state.process = await asyncio.create_subprocess_exec(
                        *spec.command,
                        stdin=asyncio.subprocess.DEVNULL,
                        stdout=output,
                        stderr=output,
                        env=dict(spec.env) if spec.env is not None else None,
                        preexec_fn=_die_with_parent,
                    )
                except OSError as error:
                    log.error("%s: cannot start %s: %s", spec.name, spec.command[0], error)
                    state.process = None
            started = time.monotonic()
            state.starts += 1
            state.started_at = time.time()
            state.history.append(state.started_at)
            if state.process is not None:
                log.info("%s: started (pid %d)", spec.name, state.process.pid)
                try:
                    state.last_exit = await state.process.wait()
                except asyncio.CancelledError:
                    await self._stop_process(state.process, spec.ask_to_stop)
                    raise
                if self._stopping:
                    break
                log.warning("%s: exited with status %s", spec.name, state.last_exit)
            backoff = next_backoff(backoff, time.monotonic() - started)
            await asyncio.sleep(backoff)

    @staticmethod
    async def _stop_process(
        process: asyncio.subprocess.Process,
        ask: Callable[[asyncio.subprocess.Process], Awaitable[None]] | None = None,
    ) -> None:
        if process.returncode is not None:
            return
        if ask is not None:
            await ask(process)
        else:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), STOP_TIMEOUT)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()

    async def stop_all(self) -> None:
        self._stopping = True
        await asyncio.gather(
            *(
                self._stop_process(state.process, self._asks.get(name))
                for name, state in self.children.items()
                if state.process is not None
            )
        )


def beside_me(name: str, argv0: str | None = None) -> str | None:
    """``name`` in the directory of the running calico-node's own executable, so that
    ``/opt/venv/bin/calico-node`` run by its path finds ``/opt/venv/bin/calico-felix`` even
    when that directory is not on PATH."""
    path = os.path.join(os.path.dirname(os.path.abspath(argv0 or sys.argv[0])), name)
    return path if os.access(path, os.X_OK) and not os.path.isdir(path) else None


def felix_command(env: Mapping[str, str]) -> list[str] | None:
    """How to start Felix, or None when it is disabled or not installed."""
    if (env.get("CALICO_DISABLE_FELIX") or "").lower() == "true":
        return None
    executable = (
        env.get("CALICO_FELIX_BINARY") or beside_me("calico-felix") or shutil.which("calico-felix")
    )
    if not executable:
        return None
    return [executable]


def self_command() -> list[str]:
    """The command that runs this calico-node again (for the ``-confd`` child)."""
    script = shutil.which("calico-node")
    if script:
        return [script]
    return [sys.executable, "-m", "pycalico.node.main"]


class NodeAgent:
    """Everything calico-node runs after startup, for one node."""

    def __init__(
        self,
        node_name: str,
        paths: NodePaths,
        *,
        env: Mapping[str, str] | None = None,
        kv: object | None = None,
        bgp: NodeBGPSpec | None = None,
    ) -> None:
        self.node_name = node_name
        self.bgp = bgp  # the Calico Node's BGP spec after startup, mirrored to Kubernetes
        self.paths = paths
        self.env = dict(os.environ if env is None else env)
        self.env["NODENAME"] = node_name
        self.env.setdefault("FELIX_FELIXHOSTNAME", node_name)
        self.kv = kv
        self.supervisor = Supervisor(paths.log_dir)
        self.agent_server: agent_server.AgentServer | None = None
        self._stop = asyncio.Event()
        self.feedback = NodeFeedback.from_env(self.env, node_name)

    def children(self) -> list[ChildSpec]:
        specs: list[ChildSpec] = []
        backend = (self.env.get("CALICO_NETWORKING_BACKEND") or "bird").lower()
        if backend == "bird":
            if not self.confd_in_process:
                specs.append(ChildSpec("confd", [*self_command(), "-confd"], env=self.env))
            specs.append(
                ChildSpec(
                    "bird",
                    bird_command(self.paths.bird_config, self.paths.bird_socket),
                    precondition=self._wait_for_config,
                    ask_to_stop=self._stop_bird_for_restart,
                )
            )
        felix = felix_command(self.env)
        if felix is not None:
            specs.append(ChildSpec("felix", felix, env=self.env))
        else:
            log.info(
                "Felix not started (CALICO_DISABLE_FELIX=true, or no calico-felix beside "
                "calico-node nor on PATH; CALICO_FELIX_BINARY names another)"
            )
        return specs

    @property
    def confd_in_process(self) -> bool:
        return (self.env.get("CALICO_CONFD_IN_PROCESS") or "").lower() == "true"

    async def _run_confd_in_process(self) -> None:
        """confd as a task of this process (sharing its etcd connection), restarted with the
        same backoff as a child when it fails."""
        from pycalico.bgp.confd import Confd

        backoff: float | None = None
        while True:
            started = time.monotonic()
            confd = Confd(
                cast(KVStore, self.kv),
                self.node_name,
                self.paths.bird_config,
                control=BirdControl(self.paths.bird_socket),
                router_id=self.env.get("CALICO_ROUTER_ID") or None,
                kubeconfig=kubeconfig(self.env),
                k8s_node_name=k8s_node_name(self.env, self.node_name),
            )
            try:
                await confd.run()
            except Exception:
                log.exception("confd (in process) failed; restarting it")
            backoff = next_backoff(backoff, time.monotonic() - started)
            await asyncio.sleep(backoff)

    async def _stop_bird_for_restart(self, process: asyncio.subprocess.Process) -> None:
        """Stop BIRD as Calico's stops with its container: without a Cease to its peers (they
        keep this node's routes by graceful restart) and leaving its kernel routes.  BIRD's
        ``graceful restart`` command does exactly that; SIGTERM would send the Cease."""
        try:
            await BirdControl(self.paths.bird_socket, timeout=2.0).command("graceful restart")
        except BirdError as error:
            log.warning("bird: 'graceful restart' refused (%s); killing it", error)
            with contextlib.suppress(ProcessLookupError):
                process.kill()

    async def _wait_for_config(self) -> None:
        while not os.path.exists(self.paths.bird_config):
            await asyncio.sleep(0.05)

    async def _start_agent_server(self) -> None:
        if self.kv is None:
            return
        server = agent_server.AgentServer(
            self.paths.agent_socket, agent_server.default_handlers(cast(KVStore, self.kv))
        )
        await server.start()
        self.agent_server = server
        log.info("CNI agent socket at %s", self.paths.agent_socket)

    async def _report_when_up(self) -> None:
        """Tell Kubernetes that Calico is up once BIRD answers (at once without BIRD)."""
        assert self.feedback is not None
        backend = (self.env.get("CALICO_NETWORKING_BACKEND") or "bird").lower()
        if backend == "bird":
            control = BirdControl(self.paths.bird_socket, timeout=1.0)
            while not await control.ready():
                await asyncio.sleep(0.2)  # polling BIRD's socket: it has no "I am up" event
        await self.feedback.report_up(self.bgp)

    def request_stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        """Run until ``request_stop`` (or SIGTERM/SIGINT when installed by ``main``)."""
        os.makedirs(self.paths.run_dir, exist_ok=True)
        await self._start_agent_server()
        tasks = [
            asyncio.create_task(self.supervisor.supervise(spec), name=spec.name)
            for spec in self.children()
        ]
        backend = (self.env.get("CALICO_NETWORKING_BACKEND") or "bird").lower()
        if backend == "bird" and self.confd_in_process and self.kv is not None:
            tasks.append(asyncio.create_task(self._run_confd_in_process(), name="confd"))
        if self.feedback is not None:
            tasks.append(asyncio.create_task(self._report_when_up(), name="k8s-feedback"))
        try:
            await self._stop.wait()
        finally:
            if self.feedback is not None:
                await self.feedback.report_down()
            await self.supervisor.stop_all()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            server = self.agent_server
            if server is not None:
                await server.close()
