"""The soak (issue 16, Load): what is sampled from a lab, and how "flat" and "no leak" are judged.

What it is:

* sampling, thin over ``/proc`` and etcd: ``lab_processes`` (each node's calico-node — which
  serves the CNI socket, the node agent — and its children Felix, confd, BIRD; each etcd
  member), ``usage`` (RSS and open fds of a pid), ``etcd_keys`` (every key under ``/calico/``);
* pure analysis: ``classify`` (a process kind from its command line), ``category`` (a key's kind
  of object), ``allocations`` (addresses allocated in IPAM blocks), ``trend`` (is a series flat),
  ``key_problems`` (etcd keys against what the live objects need), ``process_rows`` and
  ``table`` (the per-kind report), ``longest_outage`` (from a per-packet ping log).

What it is not: the churn or the traffic (``tests/faults/test_soak.py``, ``faults``).

Invariants: a series is judged only after its warm-up and only with enough samples (otherwise
"too short", never "flat"); a process that was restarted is reported as such, its series is
judged per pid.
"""

from __future__ import annotations

import base64
import json
import os
import re
import statistics
import subprocess
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pycalico.lab import cluster, kernel
from pycalico.lab.state import LabState

KINDS = ("calico-node", "felix", "confd", "bird", "etcd")
PREFIX = "/calico/"
POD_CATEGORIES = ("workloadendpoints", "ipam handles")
BLOCK_CATEGORIES = ("ipam blocks", "block affinities")


# --- sampling --------------------------------------------------------------------------------


def classify(words: Sequence[str]) -> str | None:
    """The kind of a lab process from its command line words (None: not one we follow)."""
    names = [os.path.basename(word) for word in words if word]
    if not names:
        return None
    if names[0] == "bird":
        return "bird"
    if names[0] == "etcd":
        return "etcd"
    if "-confd" in names:
        return "confd"
    if "calico-felix" in names:
        return "felix"
    if "calico-node" in names:
        return "calico-node"
    return None


def _cmdline(pid: int, proc: str) -> list[str]:
    try:
        raw = Path(f"{proc}/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [word.decode(errors="replace") for word in raw.split(b"\0")]


def usage(pid: int, proc: str = "/proc") -> tuple[int, int] | None:
    """(RSS in KiB, open file descriptors) of ``pid``; None when it is gone."""
    try:
        status = Path(f"{proc}/{pid}/status").read_text()
        fds = len(os.listdir(f"{proc}/{pid}/fd"))
    except OSError:
        return None
    found = re.search(r"^VmRSS:\s+(\d+)", status, flags=re.M)
    return (int(found[1]) if found else 0), fds


@dataclass(frozen=True)
class ProcessSample:
    kind: str
    node: str
    pid: int
    rss_kib: int
    fds: int


def lab_processes(lab: LabState) -> list[tuple[str, str, int]]:
    """(kind, node or etcd member, pid) of every long-lived process of the lab."""
    found = []
    for node in lab.nodes:
        agent = kernel.read_pid(cluster.pid_file(node))
        if agent is None or not kernel.alive(agent):
            continue
        found.append(("calico-node", node.name, agent))
        for pid in kernel.children(agent):
            kind = classify(_cmdline(pid, "/proc"))
            if kind is not None:
                found.append((kind, node.name, pid))
    for member in lab.etcd:
        etcd = kernel.read_pid(os.path.join(lab.state_dir, f"{member.name}.pid"))
        if etcd is not None and kernel.alive(etcd):
            found.append(("etcd", member.name, etcd))
    return found


def sample_processes(lab: LabState) -> list[ProcessSample]:
    samples = []
    for kind, node, pid in lab_processes(lab):
        measured = usage(pid)
        if measured is not None:
            samples.append(ProcessSample(kind, node, pid, *measured))
    return samples


def parse_etcdctl_json(text: str) -> tuple[dict[str, str], int]:
    """(key -> value, the store's revision) from ``etcdctl get -w json`` output (keys and
    values are base64)."""
    document = json.loads(text)
    keys = {
        base64.b64decode(kv["key"]).decode(): base64.b64decode(kv.get("value", "")).decode()
        for kv in document.get("kvs", [])
    }
    return keys, int(document.get("header", {}).get("revision", 0))


def etcd_keys(lab: LabState) -> tuple[dict[str, str], int]:
    """Every key under ``/calico/`` with its value, and etcd's revision (how many writes it has
    seen), read through the lab's host endpoint."""
    done = subprocess.run(
        ["etcdctl", f"--endpoints={lab.host_endpoints}", "get", PREFIX, "--prefix", "-w", "json"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
        env={**os.environ, "ETCDCTL_API": "3"},
    )
    return parse_etcdctl_json(done.stdout)


def node_files(directory: str, skip: Sequence[str] = ("log", "flows", "net.d")) -> set[str]:
    """Files under a node's directory (relative paths), but for its logs and flow logs (which
    grow by design) and ``net.d`` (the CNI config the lab writes with a node's first pod):
    endpoint status files, cached CNI results, sockets, configs."""
    found: set[str] = set()
    for root, dirs, files in os.walk(directory):
        if root == directory:
            dirs[:] = [name for name in dirs if name not in skip]
        found.update(os.path.relpath(os.path.join(root, name), directory) for name in files)
    return found


# --- keys and addresses ----------------------------------------------------------------------


def category(key: str) -> str:
    """What kind of object a Calico etcd key stores (its path without the names)."""
    parts = key.removeprefix(PREFIX).split("/")
    if parts[:3] == ["resources", "v3", "projectcalico.org"] and len(parts) > 3:
        return parts[3]
    if parts[:2] == ["ipam", "v2"] and len(parts) > 2:
        return {"assignment": "ipam blocks", "handle": "ipam handles"}.get(
            parts[2], "block affinities" if parts[2] == "host" else "ipam " + parts[2]
        )
    if parts[:1] == ["felix"] and "host" in parts:
        return "felix " + parts[-1]  # per-node status keys
    return "/".join(parts[:3])


def categories(keys: Mapping[str, str] | Sequence[str]) -> Counter[str]:
    return Counter(category(key) for key in keys)


def allocations(keys: Mapping[str, str]) -> int:
    """Addresses allocated in every IPAM block (non-null ``allocations`` entries)."""
    total = 0
    for key, value in keys.items():
        if category(key) == "ipam blocks":
            total += sum(1 for entry in json.loads(value)["allocations"] if entry is not None)
    return total


@dataclass(frozen=True)
class Live:
    """The objects that exist: pods, per-category policies the soak added, nodes."""

    pods: int
    policies: Mapping[str, int] = field(default_factory=dict)
    nodes: int = 0
    block_size: int = 64
    max_pods_per_node: int = 0


def expected_keys(baseline: Mapping[str, int], at_baseline: Live, live: Live) -> dict[str, int]:
    """Keys each category should hold now: the baseline's, plus one per pod (endpoint, handle)
    and per policy added since; for blocks and affinities an upper bound (each node may hold
    the blocks its most pods need)."""
    expected = dict(baseline)
    for name in POD_CATEGORIES:
        expected[name] = baseline.get(name, 0) + live.pods - at_baseline.pods
    for name in set(live.policies) | set(at_baseline.policies):
        wanted = live.policies.get(name, 0) - at_baseline.policies.get(name, 0)
        expected[name] = baseline.get(name, 0) + wanted
    per_node = max(1, -(-live.max_pods_per_node // live.block_size))
    for name in BLOCK_CATEGORIES:
        expected[name] = max(baseline.get(name, 0), live.nodes * per_node)
    return expected


def key_problems(counts: Mapping[str, int], expected: Mapping[str, int]) -> list[str]:
    """Categories holding more (or fewer) keys than the live objects need."""
    problems = []
    for name in sorted(set(counts) | set(expected)):
        have, want = counts.get(name, 0), expected.get(name, 0)
        if name in BLOCK_CATEGORIES:
            if have > want:
                problems.append(f"{name}: {have} keys, at most {want} needed")
        elif have != want:
            problems.append(f"{name}: {have} keys, {want} expected")
    return problems


# --- trends ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Trend:
    """``flat`` None: too few samples after the warm-up to judge."""

    flat: bool | None
    growth: float  # median of the last third minus median of the second third
    allowed: float

    def describe(self, unit: str = "") -> str:
        if self.flat is None:
            return "too short"
        word = "flat" if self.flat else "GROWS"
        return f"{word} ({self.growth:+.0f}{unit}, allowed {self.allowed:.0f}{unit})"


def trend(
    values: Sequence[float], *, warmup: int, tolerance: float, slack: float, minimum: int = 6
) -> Trend:
    """Flat when, after dropping ``warmup`` samples, the median of the last third exceeds the
    median of the second third by no more than ``tolerance`` (relative) plus ``slack``
    (absolute).  Medians ignore a single spike (a GC cycle, a burst of connections); comparing
    thirds of the steady part rather than start and end ignores the first third's ramp."""
    steady = list(values[warmup:])
    if len(steady) < minimum:
        return Trend(None, 0.0, 0.0)
    third = len(steady) // 3
    middle = statistics.median(steady[third : 2 * third])
    last = statistics.median(steady[len(steady) - third :])
    allowed = tolerance * middle + slack
    growth = last - middle
    return Trend(growth <= allowed, growth, allowed)


# Memory: 5 % + 2 MiB (Python's allocator and caches settle in steps); fds: 3 (a connection in
# flight at the moment of a sample).
RSS_TOLERANCE, RSS_SLACK_KIB = 0.05, 2048.0
FD_TOLERANCE, FD_SLACK = 0.0, 3.0


@dataclass(frozen=True)
class ProcessRow:
    kind: str
    processes: int
    restarts: int
    rss_start_kib: float  # mean per process
    rss_end_kib: float
    rss_max_kib: int
    fds_start: float
    fds_end: float
    rss_trend: Trend
    fds_trend: Trend
    worst: str  # the process whose growth is the largest, as "node (pid)"

    @property
    def flat(self) -> bool:
        return self.rss_trend.flat is not False and self.fds_trend.flat is not False


def _worst(trends: list[tuple[str, Trend]]) -> tuple[str, Trend]:
    judged = [item for item in trends if item[1].flat is not None] or trends
    return max(judged, key=lambda item: (item[1].flat is False, item[1].growth - item[1].allowed))


def process_rows(samples: Sequence[Sequence[ProcessSample]], warmup: int) -> list[ProcessRow]:
    """One row per kind; each process (kind, node, pid) judged on its own series."""
    series: dict[tuple[str, str, int], list[ProcessSample]] = {}
    for taken in samples:
        for one in taken:
            series.setdefault((one.kind, one.node, one.pid), []).append(one)
    rows = []
    for kind in KINDS:
        mine = {key: value for key, value in series.items() if key[0] == kind}
        if not mine:
            continue
        nodes = {key[1] for key in mine}
        rss_trends, fd_trends = [], []
        for (_, node, pid), values in mine.items():
            label = f"{node} ({pid})"
            rss = [float(v.rss_kib) for v in values]
            fds = [float(v.fds) for v in values]
            rss_trends.append(
                (label, trend(rss, warmup=warmup, tolerance=RSS_TOLERANCE, slack=RSS_SLACK_KIB))
            )
            fd_trends.append(
                (label, trend(fds, warmup=warmup, tolerance=FD_TOLERANCE, slack=FD_SLACK))
            )
        start = [values[0] for values in mine.values() if values[0] in samples[0]]
        end = [values[-1] for values in mine.values() if values[-1] in samples[-1]]
        worst_rss = _worst(rss_trends)
        worst_fds = _worst(fd_trends)
        rows.append(
            ProcessRow(
                kind=kind,
                processes=len(nodes),
                restarts=len(mine) - len(nodes),
                rss_start_kib=_mean([s.rss_kib for s in start]),
                rss_end_kib=_mean([s.rss_kib for s in end]),
                rss_max_kib=max(v.rss_kib for values in mine.values() for v in values),
                fds_start=_mean([s.fds for s in start]),
                fds_end=_mean([s.fds for s in end]),
                rss_trend=worst_rss[1],
                fds_trend=worst_fds[1],
                worst=worst_rss[0] if worst_rss[1].flat is False else worst_fds[0],
            )
        )
    return rows


def _mean(values: Sequence[int]) -> float:
    return statistics.fmean(values) if values else 0.0


def _mib(kib: float) -> str:
    return f"{kib / 1024:.1f}"


def table(rows: Sequence[ProcessRow]) -> str:
    """The per-kind report (RSS in MiB, mean per process; trend = the worst process's)."""
    lines = [
        "| process | count | restarts | RSS start | RSS end | RSS max | fds start | fds end "
        "| RSS trend (KiB) | fds trend | worst |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        lines.append(
            f"| {row.kind} | {row.processes} | {row.restarts} | {_mib(row.rss_start_kib)} "
            f"| {_mib(row.rss_end_kib)} | {_mib(row.rss_max_kib)} | {row.fds_start:.0f} "
            f"| {row.fds_end:.0f} | {row.rss_trend.describe()} | {row.fds_trend.describe()} "
            f"| {row.worst} |"
        )
    return "\n".join(lines)


# --- traffic ---------------------------------------------------------------------------------


def longest_outage(output: str, interval: float) -> float:
    """Seconds of the longest run of unanswered pings in a per-packet ping log (sequence numbers
    of the replies; a run at the end counts up to the last request sent)."""
    # Replies only: with ``-O`` an unanswered request has its own line with ``icmp_seq=``.
    seqs = sorted({int(n) for n in re.findall(r"icmp_seq=(\d+) ttl=", output)})
    sent = re.search(r"(\d+) packets transmitted", output)
    last = int(sent[1]) if sent else (seqs[-1] if seqs else 0)
    previous, longest = 0, 0
    for seq in [*seqs, last + 1]:
        longest = max(longest, seq - previous - 1)
        previous = seq
    return longest * interval
