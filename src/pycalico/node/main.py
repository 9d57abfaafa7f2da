"""``calico-node``: the node daemon's command line.

``calico-node`` runs startup (``startup.run_startup``) then the agent (``agent.NodeAgent``)
until SIGTERM/SIGINT.  ``calico-node -startup`` runs only the startup; ``calico-node -confd``
runs only confd (the agent starts it this way); ``calico-node -shutdown`` marks the Kubernetes
Node's network unavailable (``CalicoIsDown``, Calico's preStop hook; needs ``KUBECONFIG``);
``calico-node -v`` prints the version.  Flags
take one dash, as Calico's (two are accepted too).  Configuration is Calico's environment (see
``startup`` and ``agent``); ``CALICO_LOG_LEVEL``/``LOG_LEVEL`` sets this process's log level
(default info).  Exit status 1 with one line naming the problem when startup cannot proceed.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Sequence

# Children are started with fork+exec and never use gRPC: gRPC's fork handlers would only log
# a warning at every start.  Read by gRPC when it loads, so before the datastore imports.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

from pycalico.datastore.api import DatastoreError
from pycalico.datastore.config import DatastoreConfig
from pycalico.datastore.etcd import EtcdKVStore
from pycalico.datastore.resources import ResourceStore
from pycalico.node.agent import NodeAgent, NodePaths
from pycalico.node.kubernetes import k8s_node_name, kubeconfig
from pycalico.node.startup import (
    StartupError,
    StartupSettings,
    calico_version,
    run_startup,
)
from pycalico.node.tunnel import TunnelAddressReconciler

log = logging.getLogger("calico-node")


def _arguments(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="calico-node", description="Calico node agent")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("-startup", "--startup", action="store_true", help="only register the node")
    group.add_argument("-confd", "--confd", action="store_true", help="only run confd")
    group.add_argument(
        "-shutdown",
        "--shutdown",
        action="store_true",
        help="tell Kubernetes this node's network is going down (CalicoIsDown)",
    )
    group.add_argument("-v", "-version", "--version", action="store_true", help="print the version")
    return parser.parse_args(list(argv))


def _dump_tasks() -> None:
    """SIGUSR1: log where every asyncio task of this process is waiting (for diagnosing a
    stuck daemon without stopping it)."""
    for task in asyncio.all_tasks():
        frames = task.get_stack(limit=8)
        where = " <- ".join(f"{f.f_code.co_name}:{f.f_lineno}" for f in reversed(frames))
        log.warning("task %s: %s", task.get_name(), where or "(not started)")


def _install_stop(callback: object) -> None:
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, callback)  # type: ignore[arg-type]
    loop.add_signal_handler(signal.SIGUSR1, _dump_tasks)


async def _with_store(config: DatastoreConfig) -> tuple[EtcdKVStore, ResourceStore]:
    kv = EtcdKVStore.from_config(config, timeout=10.0, retry_timeout=30.0)
    return kv, ResourceStore(kv)


async def _confd(settings_env: dict[str, str]) -> None:
    from pycalico.bgp.bird import BirdControl
    from pycalico.bgp.confd import Confd
    from pycalico.node.startup import node_name

    paths = NodePaths.from_env(settings_env)
    kv, _ = await _with_store(DatastoreConfig.from_env(settings_env))
    confd = Confd(
        kv,
        node_name(settings_env),
        paths.bird_config,
        control=BirdControl(paths.bird_socket),
        router_id=settings_env.get("CALICO_ROUTER_ID") or None,
        kubeconfig=kubeconfig(settings_env),
        k8s_node_name=k8s_node_name(settings_env, node_name(settings_env)),
    )
    task = asyncio.create_task(confd.run())
    _install_stop(task.cancel)
    try:
        await task
    except asyncio.CancelledError:
        pass
    finally:
        await kv.close()


async def _node(env: dict[str, str], only_startup: bool) -> None:
    settings = StartupSettings.from_env(env)
    kv, store = await _with_store(DatastoreConfig.from_env(env))
    try:
        result = await run_startup(store, settings)
        log.info(
            "node %s registered (IPv4 %s, IPv6 %s)", settings.node_name, result.ipv4, result.ipv6
        )
        if only_startup:
            return
        agent = NodeAgent(
            settings.node_name, NodePaths.from_env(env), env=env, kv=kv, bgp=result.node.spec.bgp
        )
        _install_stop(agent.request_stop)
        # VXLAN tunnel addresses follow the pools for as long as the node runs.
        tunnels = asyncio.create_task(TunnelAddressReconciler(kv, settings.node_name).run())
        try:
            await agent.run()
        finally:
            tunnels.cancel()
            await asyncio.gather(tunnels, return_exceptions=True)
    finally:
        await kv.close()


async def _shutdown(env: dict[str, str]) -> int:
    """``calico-node -shutdown`` (Calico's preStop hook): NetworkUnavailable=True."""
    from pycalico.node.kubernetes import NodeFeedback
    from pycalico.node.startup import node_name

    feedback = NodeFeedback.from_env(env, node_name(env))
    if feedback is None:
        print("calico-node: -shutdown needs KUBECONFIG", file=sys.stderr)
        return 1
    return 0 if await feedback.report_down(timeout=10.0) else 1


def main(argv: Sequence[str] | None = None) -> int:
    arguments = _arguments(sys.argv[1:] if argv is None else argv)
    if arguments.version:
        print(calico_version())
        return 0
    level = (os.environ.get("CALICO_LOG_LEVEL") or os.environ.get("LOG_LEVEL") or "info").upper()
    logging.basicConfig(
        level=getattr(logging, level, logging.INFO),
        format="%(asctime)s [%(levelname)s] %(name)s: %(message)s",
    )
    env = dict(os.environ)
    try:
        if arguments.shutdown:
            return asyncio.run(_shutdown(env))
        if arguments.confd:
            asyncio.run(_confd(env))
        else:
            asyncio.run(_node(env, arguments.startup))
    except (StartupError, DatastoreError) as error:
        print(f"calico-node: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
