"""One ``calico-ipam`` ADD+DEL as processes, p50 over 100 runs, against Debian's ``host-local``.

What this measures, each pair of runs timed from process start to exit of the DEL:

* the reference: ``/usr/lib/cni/host-local`` (containernetworking-plugins), ADD then DEL of one
  address from a /16 with a temporary ``dataDir``;
* ``calico-ipam`` as ``pycalico.cni.install`` puts it in a CNI bin directory (what a runtime
  runs), with a node agent listening on its socket (the normal case on a node: the thin plugin
  forwards to the agent, which holds warm imports and an etcd connection);
* ``calico-ipam`` with no agent (the plugin imports the handler and talks to etcd itself);
* for the breakdown: the interpreter the executables start with (``install.client_python``),
  started the same way (``-IS``), doing nothing, twice: the floor of any Python plugin.

Runs alternate between the four so machine noise hits all alike.  The figures are p50 ratios
to host-local (target <= 3x).  etcd is a member started for the run.

Run: ``.venv/bin/python -m bench.ipam_plugin`` (``--quick`` for 20 runs each).
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import tempfile
import time

from pycalico.cni.agent_server import AgentServer, ipam_handler
from pycalico.cni.install import InstallOptions, client_python, install
from pycalico.datastore.etcd import EtcdKVStore
from pycalico.testing.etcd_server import EtcdServer
from pycalico.testing.ipam import put_node, put_pool

HOST_LOCAL = "/usr/lib/cni/host-local"


async def run(
    binary: str, command: str, container: str, conf: dict[str, object], extra: dict[str, str]
) -> None:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": container,
        "CNI_NETNS": f"/var/run/netns/{container}",
        "CNI_IFNAME": "eth0",
        "CNI_PATH": "/usr/lib/cni",
        **extra,
    }
    process = await asyncio.create_subprocess_exec(
        binary,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    out, err = await process.communicate(json.dumps(conf).encode())
    if process.returncode != 0:
        raise SystemExit(f"{binary} {command} failed: {out.decode()} {err.decode()}")


async def pair(
    binary: str, container: str, conf: dict[str, object], extra: dict[str, str]
) -> float:
    start = time.perf_counter()
    await run(binary, "ADD", container, conf, extra)
    await run(binary, "DEL", container, conf, extra)
    return time.perf_counter() - start


async def main(runs: int) -> None:
    with (
        tempfile.TemporaryDirectory(prefix="bench-ipam-plugin-") as tmp,
        EtcdServer(name="bench-plugin") as etcd,
    ):
        bin_dir = os.path.join(tmp, "bin")
        install(InstallOptions(bin_dir=bin_dir, conf_dir=os.path.join(tmp, "net.d")))
        calico_ipam = os.path.join(bin_dir, "calico-ipam")
        kv = EtcdKVStore([etcd.endpoint])
        await put_pool(kv, "default-ipv4-ippool", "10.64.0.0/16")
        await put_node(kv, "bench-node")
        socket_path = os.path.join(tmp, "cni.sock")
        agent = AgentServer(socket_path, {"calico-ipam": ipam_handler(kv)})
        await agent.start()
        host_local: dict[str, object] = {
            "cniVersion": "1.0.0",
            "name": "bench",
            "type": "host-local",
            "ipam": {
                "type": "host-local",
                "subnet": "10.99.0.0/16",
                "dataDir": os.path.join(tmp, "host-local"),
            },
        }
        calico: dict[str, object] = {
            "cniVersion": "1.0.0",
            "name": "k8s-pod-network",
            "type": "calico",
            "nodename": "bench-node",
            "etcd_endpoints": etcd.endpoint,
            "ipam_lock_file": os.path.join(tmp, "ipam.lock"),
            "ipam": {"type": "calico-ipam"},
        }
        bare = os.path.join(bin_dir, "bare-python")
        client = client_python(sys.executable)
        with open(bare, "w") as handle:
            handle.write(f"#!{client} {'-S' if client == sys.executable else '-IS'}\n")
        os.chmod(bare, 0o755)
        with_agent = {"CALICO_AGENT_SOCKET": socket_path}
        without_agent = {"CALICO_AGENT_SOCKET": os.path.join(tmp, "nobody.sock")}
        times: dict[str, list[float]] = {
            "host-local": [],
            "agent": [],
            "in-process": [],
            "bare": [],
        }
        try:
            for i in range(runs + 3):
                samples = {
                    "host-local": await pair(HOST_LOCAL, f"h{i}", host_local, {}),
                    "agent": await pair(calico_ipam, f"a{i}", calico, with_agent),
                    "in-process": await pair(calico_ipam, f"p{i}", calico, without_agent),
                    "bare": await pair(bare, f"b{i}", calico, {}),
                }
                if i >= 3:  # the first runs warm caches (page cache, the agent's imports)
                    for name, value in samples.items():
                        times[name].append(value)
        finally:
            await agent.close()
            await kv.close()
    reference = statistics.median(times["host-local"])
    print(f"ADD+DEL as processes, p50 over {runs} runs each:")
    for name, label in (
        ("host-local", "host-local (reference)"),
        ("agent", "calico-ipam, node agent listening"),
        ("in-process", "calico-ipam, no agent (in-process)"),
        ("bare", "floor: the interpreter doing nothing"),
    ):
        p50 = statistics.median(times[name])
        print(f"  {label:38s} {1000 * p50:7.1f} ms   ratio {p50 / reference:5.2f}")
    print(f"plugin interpreter: {client_python(sys.executable)} (floor: started twice, empty)")
    print("target: agent path <= 3x host-local")
    print("reproduce: .venv/bin/python -m bench.ipam_plugin" + (" --quick" if runs < 100 else ""))


if __name__ == "__main__":
    asyncio.run(main(20 if "--quick" in sys.argv[1:] else 100))
