"""Fault drills on a calico-lab: steady traffic, process faults, and the consistency check.

What it is: the pieces of ``tests/faults`` that talk to a running lab —

* ``Traffic``: a 10/s ping between every ordered pair of pods plus one iperf3 UDP flow, run for
  a fixed time; ``Traffic.losses`` gives the percentage each flow lost, ``Traffic.timeline``
  when each flow lost its packets and ``loss_report`` the same relative to the fault's events;
* ``child_pid`` / ``kill_child``: one of calico-node's children (Felix, BIRD, confd) in a node's
  namespace, and SIGKILL to it;
* ``wait_for``: polls a condition until it holds or a deadline passes (never a fixed sleep);
* ``consistency``: ``calicoctl ipam check`` clean, every pod's route on every node, and each
  node's nft ruleset equal to what a freshly started Felix programs (``ruleset``);
* ``conclude``: a drill's end — reachability, ``consistency``, stray interfaces, the table's
  row, then the asserts (steady traffic included).

What it is not: the fault cases themselves (``tests/faults``) nor the lab (``pycalico.lab``).

Invariants: every process started here is killed when its context exits, also on failure; a
wait always has a deadline and says what it waited for when it runs out.
"""

from __future__ import annotations

import asyncio
import difflib
import json
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field

from pycalico.datastore.api import DatastoreFull
from pycalico.datastore.etcd import EtcdKVStore
from pycalico.lab import cluster, kernel, matrix, pods
from pycalico.lab.state import LabState, NodeState
from pycalico.testing.calicoctl import Calicoctl

PING_INTERVAL = 0.1
UDP_RATE = "1M"
IPERF_PORT = "5201"

CHILD_NAMES = {
    "felix": ("calico-felix",),
    "bird": ("bird",),
    "confd": ("-confd",),
}


class FaultTimeout(AssertionError):
    """A wait in a fault drill ran out; the message says what was awaited."""


def wait_for(what: str, condition: Callable[[], bool], timeout: float, step: float = 0.1) -> float:
    """Polls ``condition`` until true; returns the seconds it took, or raises naming ``what``."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise FaultTimeout(f"{what}: not reached within {timeout:.0f} s")
        time.sleep(step)
    return time.monotonic() - started


# --- traffic ---------------------------------------------------------------------------------


@dataclass
class Flow:
    name: str
    process: subprocess.Popen[str]
    log: str | None = None  # per-packet output goes to this file (a pipe would fill up)


@dataclass
class Traffic:
    """Flows started by ``steady_traffic``; ``losses`` once they have finished."""

    flows: list[Flow] = field(default_factory=list)
    outputs: dict[str, str] = field(default_factory=dict)

    def finish(self, timeout: float) -> None:
        for flow in self.flows:
            output = flow.process.communicate(timeout=timeout)[0]
            if flow.log is not None:
                with open(flow.log) as handle:
                    output = handle.read()
            self.outputs[flow.name] = output

    def losses(self) -> dict[str, float]:
        return {name: loss(name, output) for name, output in self.outputs.items()}

    def packets_lost(self) -> int:
        return sum(lost_packets(name, output) for name, output in self.outputs.items())

    def timeline(self) -> dict[str, list[tuple[float, int]]]:
        """Per flow with loss: (wall-clock time, packets lost then), in time order."""
        found = {name: lost_at(name, output) for name, output in self.outputs.items()}
        return {name: times for name, times in found.items() if times}


def lost_at(name: str, output: str) -> list[tuple[float, int]]:
    """When a finished flow lost its packets.  A ping's lost request is one ``ping -D -O``
    reported as unanswered and that never got a reply (sent one interval before the report; a
    loss in the last interval is never reported, so it is missing here); iperf3's are the
    receiving server's per-second interval counts (``--get-server-output``), at each
    interval's start."""
    if name.startswith("ping"):
        replied = {int(seq) for seq in re.findall(r"icmp_seq=(\d+) ttl=", output)}
        waited = re.findall(r"\[(\d+\.\d+)\] no answer yet for icmp_seq=(\d+)", output)
        return sorted(
            (float(stamp) - PING_INTERVAL, 1) for stamp, seq in waited if int(seq) not in replied
        )
    report = json.loads(output)
    server = report.get("server_output_json") or {}
    started = float(server.get("start", {}).get("timestamp", {}).get("timesecs", 0))
    return [
        (started + float(interval["sum"]["start"]), int(interval["sum"]["lost_packets"]))
        for interval in server.get("intervals", [])
        if interval["sum"].get("lost_packets")
    ]


def loss_report(
    timeline: dict[str, list[tuple[float, int]]], events: list[tuple[str, float]], gap: float = 1.0
) -> str:
    """Each flow's losses as bursts (losses less than ``gap`` s apart), in seconds relative to
    the first of ``events`` (name, wall-clock time), which are listed the same way."""
    zero = events[0][1] if events else 0.0
    lines = ["events: " + ", ".join(f"{name} {at - zero:+.1f} s" for name, at in events)]
    for name, times in sorted(timeline.items()):
        bursts: list[list[float]] = []  # [first, last, packets]
        for at, count in times:
            if bursts and at - bursts[-1][1] < gap:
                bursts[-1][1] = at
                bursts[-1][2] += count
            else:
                bursts.append([at, at, count])
        text = ", ".join(f"{a - zero:+.1f}..{b - zero:+.1f} s: {n:.0f}" for a, b, n in bursts)
        lines.append(f"{name}: {sum(c for _, c in times)} lost ({text})")
    return "\n".join(lines)


def loss(name: str, output: str) -> float:
    """Percentage of packets lost by a finished flow, from its output."""
    sent, received = _counts(name, output)
    return 100.0 * (sent - received) / sent


def lost_packets(name: str, output: str) -> int:
    sent, received = _counts(name, output)
    return sent - received


def _counts(name: str, output: str) -> tuple[int, int]:
    if name.startswith("ping"):
        found = re.search(r"(\d+) packets transmitted, (\d+) received", output)
        assert found, f"{name}: no ping summary in {output[-500:]!r}"
        sent, received = int(found[1]), int(found[2])
    else:
        report = json.loads(output)
        assert "error" not in report, f"{name}: {report['error']}"
        total = report["end"]["sum"]
        sent, received = int(total["packets"]), int(total["packets"]) - int(total["lost_packets"])
    assert sent > 0, f"{name}: nothing sent"
    return sent, received


def _listening(lab: LabState, pod: str) -> bool:
    done = subprocess.run(
        pods.exec_argv(lab, pod, ["ss", "-Hln", "sport", "=", f":{IPERF_PORT}"]),
        capture_output=True,
        text=True,
        check=False,
    )
    return IPERF_PORT in done.stdout


@contextmanager
def steady_traffic(
    lab: LabState,
    duration: float,
    iperf: tuple[str, str] = ("p1", "p2"),
    log_dir: str | None = None,
) -> Iterator[Traffic]:
    """A ping of every ordered pod pair and an iperf3 UDP flow ``iperf[0]`` -> ``iperf[1]``.
    With ``log_dir``, each ping's lines go to a file there, read at ``finish`` (for flows
    longer than about a minute, which would fill a pipe)."""
    client, target = iperf
    server = subprocess.Popen(
        pods.exec_argv(lab, target, ["iperf3", "-s", "-1", "-p", IPERF_PORT]),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    traffic = Traffic()
    try:
        wait_for("iperf3 server listening", lambda: _listening(lab, target), 10.0, 0.05)
        count = str(int(duration / PING_INTERVAL))
        for source in lab.pods:
            for destination in lab.pods:
                if source.name == destination.name:
                    continue
                name = f"ping {source.name}->{destination.name}"
                # -D -O: a timestamped line per reply and per unanswered request (timeline).
                argv = ["ping", "-n", "-D", "-O", "-i", str(PING_INTERVAL), "-c", count]
                # With log_dir the lines go to a file: a pipe read only at the end fills up
                # (64 KiB, about 90 s of these lines) and then stalls the ping.
                log = (
                    os.path.join(log_dir, f"{source.name}-{destination.name}.ping")
                    if log_dir
                    else None
                )
                with open(log or os.devnull, "w") as sink:
                    process = subprocess.Popen(
                        pods.exec_argv(lab, source.name, [*argv, destination.ipv4]),
                        stdout=sink if log else subprocess.PIPE,
                        text=True,
                    )
                traffic.flows.append(Flow(name, process, log))
        iperf_argv = ["iperf3", "-c", lab.pod(target).ipv4, "-p", IPERF_PORT, "-u", "-b"]
        iperf_argv += [UDP_RATE, "-l", "1000", "-t", str(int(duration)), "--json"]
        iperf_argv += ["--get-server-output"]  # the receiver's per-second loss (timeline)
        traffic.flows.append(
            Flow(
                f"iperf3 UDP {client}->{target}",
                subprocess.Popen(
                    pods.exec_argv(lab, client, iperf_argv), stdout=subprocess.PIPE, text=True
                ),
            )
        )
        yield traffic
    finally:
        for flow in traffic.flows:
            if flow.process.poll() is None:
                flow.process.send_signal(signal.SIGINT)
                try:
                    flow.process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    flow.process.kill()
                    flow.process.wait()
        server.kill()
        server.wait()


# --- calico-node's children ------------------------------------------------------------------


def child_pid(node: NodeState, child: str) -> int | None:
    """The pid of calico-node's ``child`` ("felix", "bird", "confd") on ``node``, if running."""
    agent = kernel.read_pid(cluster.pid_file(node))
    if not kernel.alive(agent):
        return None
    assert agent is not None
    marks = CHILD_NAMES[child]
    for pid in kernel.children(agent):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                words = handle.read().split(b"\0")
        except OSError:
            continue
        names = [os.path.basename(word.decode(errors="replace")) for word in words if word]
        if child == "bird" and names and names[0] == "bird":
            return pid
        if child != "bird" and any(mark in names for mark in marks):
            return pid
    return None


def kill_child(node: NodeState, child: str) -> int:
    """SIGKILL ``child`` on ``node``; returns the killed pid."""
    pid = child_pid(node, child)
    assert pid is not None, f"{node.name}: no {child} running under calico-node"
    os.kill(pid, signal.SIGKILL)
    return pid


def restarted(node: NodeState, child: str, old: int) -> bool:
    pid = child_pid(node, child)
    return pid is not None and pid != old


def node_ready(lab: LabState, node: NodeState) -> bool:
    return cluster.node_ready(lab, node, cluster.node_status(node))


def all_ready(lab: LabState) -> bool:
    return all(node_ready(lab, node) for node in lab.nodes)


# --- consistency -----------------------------------------------------------------------------


def ruleset(node: NodeState) -> str:
    """The node's nft ruleset without counters, chains and sets in a stable order."""
    text = kernel.run("ip", "netns", "exec", node.namespace, "nft", "-s", "list", "ruleset")
    return normalise_ruleset(text)


def normalise_ruleset(text: str) -> str:
    """Blocks (chains, sets, maps) sorted within each table; element lists sorted."""
    tables: list[str] = []
    for table in re.split(r"(?m)^(?=table )", text):
        if not table.strip():
            continue
        header, _, body = table.partition("\n")
        body = body.rstrip().removesuffix("}")  # the table's own closing brace
        blocks = re.split(r"(?m)^\t(?=chain |set |map |flowtable )", body)
        kept = sorted(_sorted_elements(block.rstrip()) for block in blocks[1:])
        tables.append(header + "\n" + "\n".join(kept))
    return "\n".join(sorted(tables))


def _sorted_elements(block: str) -> str:
    def sort(match: re.Match[str]) -> str:
        items = sorted(item.strip() for item in match[1].replace("\n", " ").split(","))
        return "elements = { " + ", ".join(items) + " }"

    return re.sub(r"elements = \{(.*?)\}", sort, block, flags=re.S)


def route_problems(lab: LabState) -> list[str]:
    """Each pod's address: on its own node through its interface, elsewhere via its node."""
    problems = []
    for pod in lab.pods:
        home = lab.node(pod.node)
        for node in lab.nodes:
            found = kernel.run(
                "ip", "netns", "exec", node.namespace, "ip", "route", "get", pod.ipv4, check=False
            )
            wanted = f"dev {pod.interface}" if node.name == pod.node else f"via {home.address}"
            if wanted not in found:
                problems.append(f"{node.name}: route to {pod.name} {pod.ipv4}: {found.strip()!r}")
    return problems


@contextmanager
def route_timeline(lab: LabState, step: float = 0.5) -> Iterator[list[tuple[float, list[str]]]]:
    """Samples ``route_problems`` every ``step`` s in a thread while the context runs: a list
    of (wall-clock time, problems) to put against a fault's events (``route_report``)."""
    samples: list[tuple[float, list[str]]] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(step):
            samples.append((time.time(), route_problems(lab)))

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield samples
    finally:
        stop.set()
        thread.join(timeout=30)


def route_report(samples: list[tuple[float, list[str]]], zero: float) -> str:
    """Each wrong route seen while sampling, with when it was first and last seen (seconds
    relative to ``zero``, wall clock); "every route right" when none was."""
    seen: dict[str, tuple[float, float]] = {}
    for at, problems in samples:
        for problem in problems:
            first, _ = seen.get(problem, (at, at))
            seen[problem] = (first, at)
    if not seen:
        return "routes: every route right in every sample"
    return "\n".join(
        f"route wrong {first - zero:+.1f}..{last - zero:+.1f} s: {problem}"
        for problem, (first, last) in sorted(seen.items(), key=lambda item: item[1])
    )


def ipam_check(lab: LabState) -> tuple[bool, str]:
    done = Calicoctl(lab.host_endpoints)("ipam", "check")
    return done.returncode == 0, done.stdout + done.stderr


@dataclass(frozen=True)
class Consistency:
    ipam: str
    routes: list[str]
    rulesets: list[str]

    @property
    def clean(self) -> bool:
        return self.ipam == "" and not self.routes and not self.rulesets

    def summary(self) -> str:
        if self.clean:
            return "clean"
        parts = []
        if self.ipam:
            parts.append("ipam check failed")
        if self.routes:
            parts.append(f"{len(self.routes)} routes wrong")
        if self.rulesets:
            names = ", ".join(entry.split(" ", 1)[0] for entry in self.rulesets)
            parts.append(f"nft differs on {names}")
        return "; ".join(parts)

    def details(self) -> str:
        rulesets = "\n".join(self.rulesets)
        return f"ipam: {self.ipam}\nroutes: {self.routes}\nrulesets differ: {rulesets}"


def fresh_felix_ruleset(lab: LabState, node: NodeState, timeout: float = 60.0) -> str:
    """The ruleset after Felix on ``node`` was killed, restarted by calico-node and is ready."""
    old = kill_child(node, "felix")
    wait_for(f"{node.name}: Felix restarted", lambda: restarted(node, "felix", old), timeout)
    wait_for(f"{node.name}: ready again", lambda: node_ready(lab, node), timeout)
    return ruleset(node)


def consistency(
    lab: LabState, fresh_felix: list[NodeState] | None = None, timeout: float = 30.0
) -> Consistency:
    """``calicoctl ipam check``, every route, and the ruleset of each node in ``fresh_felix``
    (default: all) against the one Felix programs after a restart.  Routes are waited for up to
    ``timeout``."""
    ok, output = ipam_check(lab)
    with suppress(FaultTimeout):  # what is still wrong then is reported below
        wait_for("every pod route", lambda: not route_problems(lab), timeout, 0.25)
    routes = route_problems(lab)
    differ = []
    for node in lab.nodes if fresh_felix is None else fresh_felix:
        before = ruleset(node)
        after = fresh_felix_ruleset(lab, node)
        if after != before:
            lines = difflib.unified_diff(before.splitlines(), after.splitlines(), lineterm="")
            differ.append(node.name + " (before/after a Felix restart):\n" + "\n".join(lines))
    return Consistency("" if ok else output, routes, differ)


# --- etcd and the dataplane behind Felix's back ----------------------------------------------


def stop_etcd(lab: LabState, index: int = 0) -> None:
    """SIGKILL etcd member ``index`` (its data directory stays)."""
    member = lab.etcd[index]
    pid = kernel.read_pid(os.path.join(lab.state_dir, f"{member.name}.pid"))
    assert kernel.alive(pid), f"{member.name}: not running"
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    wait_for(f"{member.name} gone", lambda: not kernel.alive(pid), 10.0, 0.05)


def start_etcd(lab: LabState, index: int = 0) -> None:
    """Start etcd member ``index`` again on its data directory, as ``up`` started it."""
    member = lab.etcd[index]
    kernel.start_daemon(
        cluster._etcd_command(lab, member),  # the command `up` started it with
        namespace=member.namespace,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
        log_path=os.path.join(lab.state_dir, member.name, "etcd.log"),
        pid_path=os.path.join(lab.state_dir, f"{member.name}.pid"),
    )


def etcdctl(lab: LabState, *args: str) -> str:
    """``etcdctl`` (API v3) against every member of the lab's etcd; raises on failure."""
    done = subprocess.run(
        ["etcdctl", "--endpoints", lab.host_endpoints, *args],
        env={**os.environ, "ETCDCTL_API": "3"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, f"etcdctl {' '.join(args)}: {done.stderr.strip()}"
    return done.stdout


def write_junk(lab: LabState, prefix: str, count: int, size: int, parallel: int = 32) -> int:
    """Up to ``count`` keys of ``size`` bytes under ``prefix``, each its own revision; stops
    early when etcd is full.  Returns how many were written."""

    async def fill() -> int:
        kv = EtcdKVStore(lab.host_endpoints.split(","), timeout=10.0, retry_timeout=20.0)
        value = b"j" * size
        written = 0
        try:
            for start in range(0, count, parallel):
                batch = range(start, min(count, start + parallel))
                puts = [kv.put(f"{prefix}{i}", value) for i in batch]
                results = await asyncio.gather(*puts, return_exceptions=True)
                written += sum(1 for result in results if isinstance(result, int))
                for result in results:
                    if isinstance(result, DatastoreFull):
                        return written
                    if isinstance(result, BaseException):
                        raise result
            return written
        finally:
            await kv.close()

    return asyncio.run(fill())


def delete_junk(lab: LabState, prefix: str) -> None:
    etcdctl(lab, "del", "--prefix", prefix)


def compact_and_defrag(lab: LabState) -> int:
    """Compact etcd's history up to its current revision, then defragment every member (what
    an operator does to give space back).  Returns the revision compacted to."""
    status = json.loads(etcdctl(lab, "endpoint", "status", "-w", "json"))
    revision = max(int(member["Status"]["header"]["revision"]) for member in status)
    etcdctl(lab, "compact", str(revision), "--physical")
    etcdctl(lab, "defrag")
    return revision


def alarms(lab: LabState) -> str:
    return etcdctl(lab, "alarm", "list").strip()


def tamper(node: NodeState, pod_address: str) -> list[str]:
    """Behind Felix's back on ``node``: a chain of the calico table deleted (the first nothing
    jumps to; flushed if every chain is referenced), a set with elements flushed,
    ``pod_address``'s route removed.  Returns what was done."""
    text = kernel.run(
        "ip", "netns", "exec", node.namespace, "nft", "list", "table", "inet", "calico"
    )
    done = []
    chains = re.findall(r"(?m)^\tchain (\S+) \{", text)
    nft = ["ip", "netns", "exec", node.namespace, "nft"]
    for chain in chains:
        if f"jump {chain}" not in text and f"goto {chain}" not in text:
            kernel.run(*nft, "delete", "chain", "inet", "calico", chain)
            done.append(f"chain {chain} deleted")
            break
    else:
        kernel.run(*nft, "flush", "chain", "inet", "calico", chains[-1])
        done.append(f"chain {chains[-1]} flushed")
    for name in re.findall(r"(?m)^\tset (\S+) \{", text):
        block = text.split(f"\tset {name} {{", 1)[1].split("\n\t}", 1)[0]
        if "elements" in block:
            kernel.run(*nft, "flush", "set", "inet", "calico", name)
            done.append(f"set {name} flushed")
            break
    kernel.run("ip", "netns", "exec", node.namespace, "ip", "route", "del", pod_address)
    done.append(f"route {pod_address} removed")
    return done


def stray_interfaces(lab: LabState) -> list[str]:
    """``cali*`` interfaces on a node that no pod of the lab owns, and pods' missing ones."""
    problems = []
    for node in lab.nodes:
        text = kernel.run("ip", "-n", node.namespace, "-o", "link", "show")
        found = set(re.findall(r"^\d+: (cali[0-9a-f]+)[@:]", text, flags=re.M))
        owned = {pod.interface for pod in lab.pods if pod.node == node.name}
        problems += [f"{node.name}: {name} owned by no pod" for name in sorted(found - owned)]
        problems += [f"{node.name}: {name} missing" for name in sorted(owned - found)]
    return problems


# --- a drill's end -----------------------------------------------------------------------------


def conclude(
    lab: LabState,
    traffic: Traffic,
    record: Callable[[str, int, float, str], None],
    fault: str,
    seconds: float,
    *,
    fresh_felix: str,
    note: str = "",
    reach_all: bool = True,
    logs: Callable[[], str] = lambda: "",
) -> None:
    """A drill's end: with ``reach_all`` every pod reaching every other (with packets), then
    ``consistency`` (node ``fresh_felix``'s ruleset against a restarted Felix's) and
    ``stray_interfaces``; the row recorded (``note`` follows the consistency summary); then
    asserted, in this order: reachability, no stray interface, consistency clean (``logs()``
    appended to its details), no steady flow that lost 1 % or more."""
    reached = matrix.run(lab.pods, lambda *_: True, deadline=60.0) if reach_all else None
    checked = consistency(lab, fresh_felix=[lab.node(fresh_felix)])
    stray = stray_interfaces(lab)
    summary = checked.summary() + (f"; {len(stray)} stray interfaces" if stray else "")
    record(fault, traffic.packets_lost(), seconds, summary + note)
    if reached is not None:
        assert not reached.mismatches, matrix.summary(reached)
    assert not stray, stray
    assert checked.clean, checked.details() + logs()
    losses = {name: f"{value:.1f} %" for name, value in traffic.losses().items() if value >= 1.0}
    assert not losses, f"traffic lost: {losses}"
