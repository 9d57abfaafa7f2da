"""Felix cold start to fully programmed: the production process, from etcd, against a floor.

What this measures (needs root: a private etcd and fresh network namespaces), on issue 5's
target cluster (``bench.felix_calc.cluster``: 10,000 WorkloadEndpoints over 100 nodes, 100 on
this node, 1,000 policies in 3 tiers) stored in etcd as calicoctl stores it:

* **cold start**: ``calico-felix`` started with ``ip netns exec`` in a fresh node namespace, with
  production settings (only the etcd endpoint, the hostname and logging to stderr are set; no
  config file).  The clock starts just before the process is spawned and stops when Felix logs
  ``Dataplane programmed`` (its first apply after in-sync has returned: nft transaction,
  routes, sysctls).  It covers interpreter start-up, imports, connecting to etcd, the ready-flag
  check, the syncer's list, decoding, the calculation graph, and the first apply — everything
  the daemon does.  Also reported: the same clock to Felix's ``In sync with the datastore``
  line (everything before the dataplane).
* **the floor**, in the same run and the same namespace set-up: ``etcdctl get --prefix`` of the
  same keys through the same loopback relay (one range read by a fresh process), plus ``nft -f``
  of the same ruleset (the ``calico`` table as Felix left it, listed back from the kernel) by a
  fresh process in a fresh namespace.  Neither pays Python's start-up, which Felix does; so
  that start-up is measured too (``calico-felix --help``: the interpreter and Felix's imports).

Each round uses fresh namespaces (nothing left from the previous Felix), rounds alternate Felix
and floor, and the load average is printed beside the figures.  The local endpoints' interfaces
do not exist (as for pods not yet created), so their routes stay pending; that is Felix's normal
first apply on a node whose pods are still starting.

Run: ``sudo .venv/bin/python -m bench.felix_cold_start`` (``--quick``: 2,000 endpoints, 200
policies; ``--rounds N``, default 3).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass

from bench.felix_calc import cluster
from pycalico.datastore import paths
from pycalico.datastore.etcd import EtcdKVStore
from pycalico.felix.calc import key_of
from pycalico.felix.daemon import PROGRAMMED_MESSAGE
from pycalico.model.codec import encode_value
from pycalico.testing import netns
from pycalico.testing.etcd_server import EtcdServer
from pycalico.testing.felix_calc import HOSTNAME
from pycalico.testing.netns_fabric import EtcdRelay

RELAY_PORT = 2379
IN_SYNC_MESSAGE = "In sync with the datastore"


@dataclass
class Round:
    in_sync: float
    programmed: float
    range_read: float
    nft_load: float
    nft_bytes: int
    startup: float  # calico-felix --help: interpreter start-up and Felix's imports


async def store_cluster(endpoint: str, endpoints: int, policies: int) -> int:
    resources = cluster(endpoints, policies, endpoints // 100)
    kv = EtcdKVStore([endpoint])
    try:
        await kv.delete_prefix(paths.RESOURCE_ROOT)
        for start in range(0, len(resources), 200):
            chunk = resources[start : start + 200]
            await asyncio.gather(*(kv.put(key_of(r), encode_value(r)) for r in chunk))
    finally:
        await kv.close()
    return len(resources)


def felix_once(node: str, log_path: str) -> tuple[float, float]:
    """Start calico-felix in ``node``; seconds to its in-sync and programmed lines."""
    felix = os.path.join(os.path.dirname(sys.executable), "calico-felix")
    env = {
        "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
        "FELIX_ETCDENDPOINTS": f"http://127.0.0.1:{RELAY_PORT}",
        "FELIX_FELIXHOSTNAME": HOSTNAME,
        "FELIX_LOGFILEPATH": "none",
        "FELIX_CONFIGFILE": "/nonexistent",
        "FELIX_ENDPOINTSTATUSPATHPREFIX": "",  # no status files on the host
    }
    marks: dict[str, float] = {}
    done = threading.Event()
    start = time.perf_counter()
    process = subprocess.Popen(
        ["ip", "netns", "exec", node, felix],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )

    def read() -> None:
        assert process.stderr is not None
        with open(log_path, "w") as log:
            for line in process.stderr:
                now = time.perf_counter()
                log.write(line)
                if IN_SYNC_MESSAGE in line:
                    marks.setdefault("in_sync", now - start)
                if PROGRAMMED_MESSAGE in line:
                    marks.setdefault("programmed", now - start)
                    done.set()
        done.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        if not done.wait(120) or "programmed" not in marks:
            raise RuntimeError(f"Felix did not program the dataplane; see {log_path}")
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        reader.join(10)
    return marks["in_sync"], marks["programmed"]


def startup(node: str) -> float:
    felix = os.path.join(os.path.dirname(sys.executable), "calico-felix")
    start = time.perf_counter()
    subprocess.run(["ip", "netns", "exec", node, felix, "--help"], stdout=subprocess.DEVNULL,
                   check=True)  # fmt: skip
    return time.perf_counter() - start


def range_read(node: str) -> float:
    start = time.perf_counter()
    subprocess.run(
        ["ip", "netns", "exec", node, "etcdctl", f"--endpoints=127.0.0.1:{RELAY_PORT}",
         "get", "--prefix", paths.RESOURCE_ROOT],
        stdout=subprocess.DEVNULL, check=True,
    )  # fmt: skip
    return time.perf_counter() - start


def nft_load(ruleset: str) -> float:
    """``nft -f`` of ``ruleset`` in a fresh namespace (a fresh nft process, as for Felix)."""
    name = f"fxcold-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        with tempfile.NamedTemporaryFile("w", suffix=".nft") as file:
            file.write(ruleset)
            file.flush()
            start = time.perf_counter()
            subprocess.run(["ip", "netns", "exec", name, "nft", "-f", file.name], check=True)
            return time.perf_counter() - start
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def one_round(relay: EtcdRelay, log_path: str) -> Round:
    topology = netns.Topology()
    try:
        node = topology.create_node()
        relay.add(node, RELAY_PORT)
        in_sync, programmed = felix_once(node, log_path)
        ruleset = netns.netns_run(node, "nft", "list", "table", "inet", "calico", timeout=60)
        read = range_read(node)
        load = nft_load(ruleset)
        imports = startup(node)
    finally:
        topology.cleanup()
    return Round(in_sync, programmed, read, load, len(ruleset.encode()), imports)


def main(argv: list[str]) -> int:
    if os.geteuid() != 0:
        print("bench.felix_cold_start needs root (network namespaces)", file=sys.stderr)
        return 2
    quick = "--quick" in argv
    rounds = int(argv[argv.index("--rounds") + 1]) if "--rounds" in argv else 3
    endpoints, policies = (2_000, 200) if quick else (10_000, 1_000)
    etcd = EtcdServer(name="felix-cold-start")
    etcd.start()
    relay = EtcdRelay("127.0.0.1", etcd.client_port)
    log_path = os.path.join(tempfile.gettempdir(), f"felix-cold-start-{os.getpid()}.log")
    try:
        stored = asyncio.run(store_cluster(etcd.endpoint, endpoints, policies))
        results = [one_round(relay, log_path) for _ in range(rounds)]
    finally:
        relay.close()
        etcd.close()
    load = os.getloadavg()
    print(f"cluster: {stored} resources in etcd ({endpoints} endpoints, 100 local, {policies} "
          f"policies); {rounds} rounds; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")  # fmt: skip
    for number, r in enumerate(results, 1):
        floor = r.range_read + r.nft_load
        print(f"  round {number}: in-sync {r.in_sync:.2f} s, programmed {r.programmed:.2f} s; "
              f"floor {floor:.3f} s (range read {r.range_read:.3f} + nft -f {r.nft_load:.3f}, "
              f"{r.nft_bytes / 1e6:.2f} MB); ratio {r.programmed / floor:.1f}; "
              f"start-up + imports alone {r.startup:.2f} s")  # fmt: skip
    programmed = statistics.median(r.programmed for r in results)
    in_sync = statistics.median(r.in_sync for r in results)
    floor = statistics.median(r.range_read + r.nft_load for r in results)
    print(f"median: calico-felix start to in-sync {in_sync:.2f} s, to fully programmed "
          f"{programmed:.2f} s; floor {floor:.3f} s; ratio {programmed / floor:.1f}")  # fmt: skip
    print(
        f"reproduce: sudo .venv/bin/python -m bench.felix_cold_start{' --quick' if quick else ''}"
    )
    os.unlink(log_path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
