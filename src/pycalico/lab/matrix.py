"""The lab's connectivity matrix: every pod to every other pod, ICMP echo and a TCP connect.

What it is: probes built from the lab's pods, run by the shared matrix checker
(``pycalico.testing.connectivity``: in-process threads that enter the pods' namespaces, real
packets), and a table of the verdicts — rows are sources, columns destinations, each cell
``ICMP/TCP``.  With expectations (the demo, tests) it retries until they hold or a deadline
passes, and marks cells that differ.  What it is not: a throughput test.

Invariants: the TCP servers it starts in the pods are stopped before ``run`` returns, also on
failure; a verdict is "pass" only when a reply came back from the destination pod.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from rich.table import Table

from pycalico.lab.state import PodState
from pycalico.testing.connectivity import ConnectivityChecker, Endpoint, Probe, Protocol

TCP_PORT = 8080
PROTOCOLS: tuple[Protocol, ...] = ("icmp", "tcp")
Expectation = Callable[[PodState, PodState, str], bool]  # source, destination, protocol


@dataclass(frozen=True)
class MatrixResult:
    pods: tuple[PodState, ...]
    actual: dict[tuple[str, str, str], bool]  # (source, destination, protocol) -> reached
    expected: dict[tuple[str, str, str], bool] | None
    seconds: float

    @property
    def mismatches(self) -> list[tuple[str, str, str]]:
        if self.expected is None:
            return []
        return sorted(k for k, want in self.expected.items() if self.actual.get(k) != want)

    @property
    def reachable(self) -> int:
        return sum(1 for value in self.actual.values() if value)


def _probes(pods: Sequence[PodState]) -> list[Probe]:
    return [
        Probe(source.name, destination.name, TCP_PORT if protocol == "tcp" else 0, protocol)
        for source in pods
        for destination in pods
        if source.name != destination.name
        for protocol in PROTOCOLS
    ]


def run(
    pods: Sequence[PodState],
    expect: Expectation | None = None,
    *,
    deadline: float = 10.0,
    probe_timeout: float = 0.5,
) -> MatrixResult:
    """Measure the matrix; with ``expect`` (source, destination, protocol -> reachable)
    retry until it holds or ``deadline`` seconds pass.  Without, retry only failing cells
    until ``deadline`` (a freshly added pod may still be waiting for its routes)."""
    pods = tuple(pods)
    endpoints = {pod.name: Endpoint(pod.netns, pod.ipv4) for pod in pods}
    checker = ConnectivityChecker(endpoints, probe_timeout=probe_timeout)
    start = time.monotonic()
    try:
        checker.serve([pod.name for pod in pods], tcp_ports=[TCP_PORT])
        probes = _probes(pods)
        by_name = {pod.name: pod for pod in pods}
        wanted = (
            {p: expect(by_name[p.source], by_name[p.destination], p.protocol) for p in probes}
            if expect is not None
            else {p: True for p in probes}
        )
        while True:
            actual = checker.measure(probes)
            if all(actual[p] == want for p, want in wanted.items()):
                break
            if time.monotonic() - start > deadline:
                break
            time.sleep(0.2)
    finally:
        checker.stop()

    def key(probe: Probe) -> tuple[str, str, str]:
        return (probe.source, probe.destination, probe.protocol)

    return MatrixResult(
        pods,
        {key(p): actual[p] for p in probes},
        {key(p): wanted[p] for p in probes} if expect is not None else None,
        time.monotonic() - start,
    )


def _cell(result: MatrixResult, source: str, destination: str) -> str:
    parts = []
    for protocol in PROTOCOLS:
        got = result.actual[(source, destination, protocol)]
        mark = "[green]ok[/]" if got else "[red]--[/]"
        if result.expected is not None and result.expected[(source, destination, protocol)] != got:
            mark = "[bold reverse red]" + ("ok" if got else "--") + "[/]"
        parts.append(mark)
    return "/".join(parts)


def table(result: MatrixResult, title: str = "") -> Table:
    """Rows: from; columns: to; cells ``ICMP/TCP`` (ok = reached, -- = blocked; a highlighted
    cell is not what was expected)."""
    grid = Table(title=title or None, show_lines=False, title_justify="left")
    grid.add_column("from \\ to", style="bold")
    for pod in result.pods:
        grid.add_column(f"{pod.name}\n{pod.namespace}", justify="center")
    for source in result.pods:
        row = [f"{source.name} ({source.namespace})"]
        for destination in result.pods:
            row.append("·" if source.name == destination.name else _cell(result, source.name,
                                                                        destination.name))  # fmt: skip
        grid.add_row(*row)
    return grid


def summary(result: MatrixResult) -> str:
    total = len(result.actual)
    text = f"{result.reachable} of {total} probes reached their pod ({result.seconds:.1f}s)"
    if result.expected is not None:
        wrong = result.mismatches
        text += "; all as expected" if not wrong else f"; {len(wrong)} NOT as expected"
    return text
