"""Felix nftables benchmark: full programming of 1,000 endpoints vs one incremental change.

What this measures, in one run, inside a private network namespace (needs root):

* full apply: render + ONE atomic nft transaction for 1,000 workload endpoints, 1,000 policies
  (three rules each, referencing selector IP sets), 200 IP sets and a profile — Felix's first
  apply after in-sync (table replaced atomically);
* incremental applies: one policy's rules changed; one IP-set member added; one endpoint added —
  each reported as a ratio to the full apply (time and transaction bytes);
* transports: the same incremental transaction through libnftables (in-process) and through
  one ``nft -f -`` process, as a ratio;
* throughput: iperf3 (TCP, 3 s) between two real pods behind ``cali`` veths, each governed by
  three of those policies in a tier, with the whole 1,000-endpoint ruleset loaded, as a ratio to
  the same pair with no policy at all (issue 5's reference: Felix programs the two endpoints
  with their namespace profile and nothing else, so conntrack and the endpoint chains are the
  same and the policy set is the only difference).  For the breakdown, also to the same pair
  with no ``calico`` table at all and with a table holding only a conntrack rule (which is what
  switches conntrack on in the namespace: the price of any stateful firewall); and the whole
  ruleset again with ``nftablesFlowTableOffload`` on (the ``cali-ft`` flowtable over the pods'
  veths) — reported as unavailable on a kernel without flowtables; rounds interleaved.

Routes and sysctls go to the fake kernel (1,000 real veths would measure ``ip link``, not us).

Each section prints the 1-minute load average at its start and end beside its figures: the
ratios compare runs made seconds apart, but a busy machine slows the full apply (the reference)
more than the small ones, so figures are to be recorded from a quiet machine.

Run: ``.venv/bin/python -m bench.felix_nft`` (``--quick`` for 200 endpoints).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from dataclasses import replace

from pycalico.felix import messages as m
from pycalico.felix.dataplane.loop import Dataplane, DataplaneOptions
from pycalico.felix.drivers.nft import LibNftablesBackend, NftBackend, NftCommandBackend
from pycalico.felix.rules.model import RenderConfig
from pycalico.testing import netns
from pycalico.testing.fake_kernel import FakeKernel

ALLOW = m.ResolvedRule(action="allow")


def ip(index: int) -> str:
    return f"10.{64 + index // 65536}.{(index // 256) % 256}.{index % 256}"


def world(endpoints: int, policies: int, sets: int) -> list[m.Message]:
    messages: list[m.Message] = []
    for s in range(sets):
        members = frozenset(f"{ip(i)}/32" for i in range(s, endpoints, max(1, sets // 4)))
        messages.append(m.IPSetUpdate(f"s:set{s}", m.IPSetType.IP, members))
    for p in range(policies):
        messages.append(policy(p, sets, port=80 + p % 50))
    messages.append(m.ActiveProfileUpdate(m.ProfileID("kns.default"), (ALLOW,), (ALLOW,)))
    for e in range(endpoints):
        messages.append(endpoint(e, policies))
    return messages


def policy(p: int, sets: int, port: int) -> m.ActivePolicyUpdate:
    return m.ActivePolicyUpdate(
        m.PolicyID("default", f"policy-{p}"),
        (
            m.ResolvedRule(
                "allow",
                protocol="tcp",
                source_ip_set_ids=(f"s:set{p % sets}",),
                destination_ports=(m.PortRange(port, port),),
            ),
            m.ResolvedRule("deny", source_ip_set_ids=(f"s:set{(p + 1) % sets}",)),
            m.ResolvedRule("allow", protocol="udp", destination_ports=(m.PortRange(53, 53),)),
        ),
        (ALLOW,),
    )


def endpoint(e: int, policies: int) -> m.WorkloadEndpointUpdate:
    ids = tuple(m.PolicyID("default", f"policy-{(e + k) % policies}") for k in range(3))
    return m.WorkloadEndpointUpdate(
        m.WorkloadEndpointID("k8s", f"default/pod-{e}", "eth0"),
        f"cali{e:011d}",
        "",
        (f"{ip(e)}/32",),
        (),
        (m.ProfileID("kns.default"),),
        (m.TierInfo("default", "deny", ids, ids),),
    )


def timed(dataplane: Dataplane, *messages: m.Message) -> tuple[float, int, int]:
    dataplane.on_updates(list(messages))
    start = time.perf_counter()
    report = dataplane.apply()
    seconds = time.perf_counter() - start
    assert report is not None
    return seconds, report.nft_bytes, report.nft_lines


def run_backend(make: type[NftBackend], endpoints: int, policies: int, sets: int, rounds: int
                ) -> dict[str, list[tuple[float, int, int]]]:  # fmt: skip
    kernel = FakeKernel()
    kernel.links.update(f"cali{e:011d}" for e in range(endpoints + rounds))
    dataplane = Dataplane(
        DataplaneOptions(ipv6_support=True), make(), kernel.routes, kernel.sysctls,
        kernel.conntrack,
    )  # fmt: skip
    results: dict[str, list[tuple[float, int, int]]] = {}
    messages = world(endpoints, policies, sets)
    results["full"] = [timed(dataplane, *messages, m.InSync())]
    for r in range(rounds):
        dataplane.nft.needs_full = True
        results["full"].append(timed(dataplane))
        results.setdefault("one policy", []).append(
            timed(dataplane, policy(r % policies, sets, port=1000 + r))
        )
        results.setdefault("one set member", []).append(
            timed(
                dataplane,
                m.IPSetDeltaUpdate("s:set0", frozenset({f"10.200.0.{r}/32"}), frozenset()),
            )
        )
        results.setdefault("one endpoint", []).append(
            timed(dataplane, endpoint(endpoints + r, policies))
        )
    counts = dataplane.counts()
    results["_counts"] = [(0.0, counts["rules"], counts["chains"])]
    return results


def iperf(topology: netns.Topology, seconds: int) -> float:
    server = subprocess.Popen(
        ["ip", "netns", "exec", topology.pods["b"].name, "iperf3", "-s", "-1", "-p", "5201"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        last_error = ""
        for _attempt in range(20):  # the server may take a moment to listen on a busy machine
            done = netns.run(
                "ip", "netns", "exec", topology.pods["a"].name, "iperf3", "-c",
                topology.pods["b"].ipv4, "-p", "5201", "-t", str(seconds), "-J",
                check=False, timeout=seconds + 30,
            )  # fmt: skip
            if done.returncode == 0:
                result = json.loads(done.stdout)
                received = result.get("end", {}).get("sum_received")
                if received:
                    return float(received["bits_per_second"])
                last_error = result.get("error", "no summary")
            else:
                last_error = done.stderr[-300:] or done.stdout[-300:]
            time.sleep(0.25)
        raise RuntimeError(f"iperf3 failed: {last_error}")
    finally:
        server.kill()
        server.wait()


def throughput(endpoints: int, policies: int, sets: int, rounds: int) -> dict[str, float]:
    """Median bits/s: ``rules`` (the ruleset), ``no-policy`` (Felix's table for the two pods with
    their profile and no policy), ``offload`` (the ruleset with flowtable offload; absent when
    the kernel has no flowtables), ``conntrack`` (only a conntrack rule), ``none`` (no calico
    table)."""
    topology = netns.Topology()
    try:
        topology.create_node()
        topology.add_pod("a", "10.99.0.1")
        topology.add_pod("b", "10.99.0.2")
        allow_iperf = m.ActivePolicyUpdate(
            m.PolicyID("default", "allow-iperf"),
            (m.ResolvedRule("allow", protocol="tcp", destination_ports=(m.PortRange(5201, 5201),)),),
            (ALLOW,),
        )  # fmt: skip
        pods = []
        for key in ("a", "b"):
            pod = topology.pods[key]
            ids = (*(m.PolicyID("default", f"policy-{k}") for k in range(3)), allow_iperf.id)
            pods.append(
                m.WorkloadEndpointUpdate(
                    m.WorkloadEndpointID("k8s", f"default/bench-{key}", "eth0"), pod.interface,
                    "", (f"{pod.ipv4}/32",), (), (m.ProfileID("kns.default"),),
                    (m.TierInfo("default", "deny", ids, ids),),
                )
            )  # fmt: skip
        with netns.enter(topology.node):
            from pycalico.felix.drivers.conntrack import ConntrackCommand
            from pycalico.felix.drivers.interfaces import ProcSysctls
            from pycalico.felix.drivers.routes import NetlinkRoutes

            kernel = FakeKernel()
            scripts: dict[str, str] = {}
            for name, render in (("offload", RenderConfig(flowtable_offload=True)),
                                 ("rules", RenderConfig()), ("no-policy", RenderConfig())):  # fmt: skip
                dataplane = Dataplane(
                    DataplaneOptions(render=render), LibNftablesBackend(), NetlinkRoutes(),
                    ProcSysctls(), ConntrackCommand(),
                )  # fmt: skip
                # The bench endpoints have no veths: their routes would only be retried; the
                # two real pods' routes and sysctls are the ones that matter.
                dataplane.route_table.backend = kernel.routes
                if name == "no-policy":
                    profile = m.ActiveProfileUpdate(m.ProfileID("kns.default"), (ALLOW,), (ALLOW,))
                    dataplane.on_updates([profile, *(replace(pod, tiers=()) for pod in pods)])
                else:
                    dataplane.on_updates([*world(endpoints, policies, sets), allow_iperf, *pods])
                dataplane.on_update(m.InSync())
                dataplane.apply()
                if dataplane.flowtable_offload is not False or name != "offload":
                    scripts[name] = netns.netns_run(
                        topology.node, "nft", "list", "table", "inet", "calico"
                    )
            real_routes = NetlinkRoutes()
            from pycalico.felix.drivers.routes import Route

            for endpoint in pods:
                real_routes.replace(Route(endpoint.ipv4_nets[0], endpoint.interface_name))
        conntrack_only = (
            "table inet calico {\n chain f {\n  type filter hook forward priority filter; "
            "policy accept;\n  ct state established,related accept\n }\n}\n"
        )
        cases = {**scripts, "conntrack": conntrack_only, "none": ""}
        results: dict[str, list[float]] = {name: [] for name in cases}

        def load(text: str) -> None:
            netns.netns_run(topology.node, "nft", "delete", "table", "inet", "calico", check=False)
            if text:
                subprocess.run(
                    ["ip", "netns", "exec", topology.node, "nft", "-f", "-"],
                    input=text.encode(), check=True, capture_output=True,
                )  # fmt: skip

        for _ in range(rounds):
            for name, text in cases.items():
                load(text)
                results[name].append(iperf(topology, 3))
        return {name: statistics.median(values) for name, values in results.items()}
    finally:
        topology.cleanup()


def main() -> int:
    quick = "--quick" in sys.argv
    endpoints, policies, sets, rounds = (200, 200, 40, 3) if quick else (1000, 1000, 200, 5)
    name = f"fxbench-{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    loads = [os.getloadavg()[0]]
    try:
        with netns.enter(name):
            lib = run_backend(LibNftablesBackend, endpoints, policies, sets, rounds)
            loads.append(os.getloadavg()[0])
            cmd = run_backend(NftCommandBackend, endpoints, policies, sets, rounds)
            loads.append(os.getloadavg()[0])
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)

    def median(rows: list[tuple[float, int, int]]) -> tuple[float, int, int]:
        return (
            statistics.median(r[0] for r in rows),
            int(statistics.median(r[1] for r in rows)),
            int(statistics.median(r[2] for r in rows)),
        )

    _, rules, chains = lib["_counts"][0]
    print(f"Felix nft: {endpoints} endpoints, {policies} policies x 3 rules, {sets} IP sets "
          f"-> {chains} chains, {rules} rules (median of {rounds})")  # fmt: skip
    print(f"  [load average (1 min) {loads[0]:.2f} -> {loads[1]:.2f} during the libnftables "
          f"timings, -> {loads[2]:.2f} during the `nft -f -` ones]")  # fmt: skip
    full_t, full_b, full_l = median(lib["full"][1:])
    first_t, _, _ = lib["full"][0]
    print(f"  first apply (render + transaction): {first_t * 1000:8.1f} ms")
    print(f"  full apply (libnftables)          : {full_t * 1000:8.1f} ms  {full_b:>9} bytes"
          f"  {full_l:>6} lines")  # fmt: skip
    for case in ("one policy", "one set member", "one endpoint"):
        t, b, lines = median(lib[case])
        print(f"  {case:<16} incremental       : {t * 1000:8.2f} ms  {b:>9} bytes  {lines:>6} lines"
              f"  -> {full_t / t:6.0f}x faster, {full_b / max(b, 1):7.0f}x smaller than full")  # fmt: skip
    cmd_t, _, _ = median(cmd["one policy"])
    lib_t, _, _ = median(lib["one policy"])
    cmd_full, _, _ = median(cmd["full"][1:])
    print(
        f"  one policy via `nft -f -` process: {cmd_t * 1000:8.2f} ms  "
        f"(libnftables {lib_t * 1000:.2f} ms: {cmd_t / lib_t:.1f}x faster in-process)"
    )
    print(
        f"  full apply via `nft -f -` process: {cmd_full * 1000:8.1f} ms "
        f"(ratio to libnftables {cmd_full / full_t:.2f})"
    )
    rates = throughput(endpoints, policies, sets, 3 if quick else 5)
    print(f"  [load average (1 min) {loads[-1]:.2f} -> {os.getloadavg()[0]:.2f} during iperf3]")
    with_rules, no_policy = rates["rules"], rates["no-policy"]
    conntrack, without = rates["conntrack"], rates["none"]
    print(f"  iperf3 TCP pod->pod, whole ruleset   : {with_rules / 1e9:6.2f} Gbit/s  "
          f"ratio {with_rules / no_policy:.3f} to the pair with no policy (target >= 0.95)")  # fmt: skip
    print(f"  iperf3 TCP pod->pod, no policy       : {no_policy / 1e9:6.2f} Gbit/s  "
          f"(Felix's table for the two pods: profile only)")  # fmt: skip
    print(f"  breakdown: no calico table at all    : {without / 1e9:6.2f} Gbit/s  "
          f"whole ruleset {with_rules / without:.3f}, no policy {no_policy / without:.3f}, "
          f"conntrack-only table {conntrack / without:.3f} of it")  # fmt: skip
    if "offload" in rates:
        offload = rates["offload"]
        print(f"  iperf3 TCP pod->pod, ruleset+offload : {offload / 1e9:6.2f} Gbit/s  "
              f"ratio {offload / without:.3f} to no table, {offload / with_rules:.3f} to "
              f"the ruleset without offload")  # fmt: skip
    else:
        print("  iperf3 TCP pod->pod, ruleset+offload : unavailable (this kernel has no nftables "
              "flowtables: CONFIG_NF_FLOW_TABLE unset; Felix runs without offload)")  # fmt: skip
    print("reproduce: sudo .venv/bin/python -m bench.felix_nft")
    return 0


if __name__ == "__main__":
    sys.exit(main())
