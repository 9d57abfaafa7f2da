"""The lab's connectivity matrix: every pod to every other pod, ICMP echo and a TCP connect.

What it is: probes built from the lab's pods, run by the shared matrix checker
(``pycalico.netns.connectivity``: in-process threads that enter the pods' namespaces, real
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
from pycalico.netns.connectivity import ConnectivityChecker, Endpoint, Probe, Protocol

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


def _families(pods: Sequence[PodState]) -> tuple[int, ...]:
    """IPv4 always; IPv6 too when every pod has an IPv6 address (a dual-stack lab)."""
    return (4, 6) if pods and all(pod.ipv6 for pod in pods) else (4,)


def _column(protocol: str, family: int) -> str:
    return protocol if family == 4 else f"{protocol}6"


def _endpoint_name(pod: str, family: int) -> str:
    return pod if family == 4 else f"{pod}@6"


def _probes(pods: Sequence[PodState]) -> dict[tuple[str, str, str], Probe]:
    """(source, destination, column) -> probe; columns icmp, tcp (and icmp6, tcp6)."""
    found = {}
    for family in _families(pods):
        for source in pods:
            for destination in pods:
                if source.name == destination.name:
                    continue
                for protocol in PROTOCOLS:
                    found[(source.name, destination.name, _column(protocol, family))] = Probe(
                        _endpoint_name(source.name, family),
                        _endpoint_name(destination.name, family),
                        TCP_PORT if protocol == "tcp" else 0,
                        protocol,
                    )
    return found


def run(
    pods: Sequence[PodState],
    expect: Expectation | None = None,
    *,
    deadline: float = 10.0,
    probe_timeout: float = 0.5,
    progress: Callable[[str], None] | None = None,
) -> MatrixResult:
    """Measure the matrix; with ``expect`` (source, destination, protocol -> reachable; the
    same answer for both address families) retry until it holds or ``deadline`` seconds pass.
    Without, retry only while some cell fails, until ``deadline`` (a freshly added pod may
    still be waiting for its routes).  ``progress`` hears, after each round that is not yet
    final, how many cells still differ and how long retrying may go on."""
    pods = tuple(pods)
    endpoints = {pod.name: Endpoint(pod.netns, pod.ipv4) for pod in pods}
    if 6 in _families(pods):
        endpoints.update(
            {_endpoint_name(pod.name, 6): Endpoint(pod.netns, pod.ipv6) for pod in pods}
        )
    checker = ConnectivityChecker(endpoints, probe_timeout=probe_timeout)
    start = time.monotonic()
    by_name = {pod.name: pod for pod in pods}
    probes = _probes(pods)
    wanted = {
        key: (expect(by_name[key[0]], by_name[key[1]], key[2].rstrip("6")) if expect else True)
        for key in probes
    }
    try:
        checker.serve(list(endpoints), tcp_ports=[TCP_PORT])
        while True:
            measured = checker.measure(probes.values())
            actual = {key: measured[probe] for key, probe in probes.items()}
            if all(actual[key] == want for key, want in wanted.items()):
                break
            if time.monotonic() - start > deadline:
                break
            if progress is not None:
                waiting = sum(1 for key, want in wanted.items() if actual[key] != want)
                left = max(0.0, deadline - (time.monotonic() - start))
                progress(
                    f"{waiting} of {len(wanted)} probes not as expected yet; "
                    f"retrying for up to {left:.0f}s more (--deadline)"
                )
            time.sleep(0.2)
    finally:
        checker.stop()
    return MatrixResult(
        pods, actual, wanted if expect is not None else None, time.monotonic() - start
    )


def _cell(result: MatrixResult, source: str, destination: str) -> str:
    groups = []
    for family in _families(result.pods):
        parts = []
        for protocol in PROTOCOLS:
            key = (source, destination, _column(protocol, family))
            got = result.actual[key]
            mark = "[green]ok[/]" if got else "[red]--[/]"
            if result.expected is not None and result.expected[key] != got:
                mark = "[bold reverse red]" + ("ok" if got else "--") + "[/]"
            parts.append(mark)
        groups.append("/".join(parts))
    return " ".join(groups)


def table(result: MatrixResult, title: str = "") -> Table:
    """Rows: from; columns: to; cells ``ICMP/TCP`` (dual stack: ``ICMP/TCP ICMP6/TCP6``; ok =
    reached, -- = blocked; a highlighted mark is not what was expected)."""
    grid = Table(title=title or None, show_lines=False, title_justify="left")
    grid.add_column("from \\ to", style="bold")
    for pod in result.pods:
        grid.add_column(f"{pod.name}\n{pod.namespace}", justify="center")
    for source in result.pods:
        row = [f"{source.name} ({source.namespace})"]
        for destination in result.pods:
            row.append(
                "·"
                if source.name == destination.name
                else _cell(result, source.name, destination.name)
            )
        grid.add_row(*row)
    return grid


def summary(result: MatrixResult) -> str:
    total = len(result.actual)
    text = f"{result.reachable} of {total} probes reached their pod ({result.seconds:.1f}s)"
    if result.expected is not None:
        wrong = result.mismatches
        text += "; all as expected" if not wrong else f"; {len(wrong)} NOT as expected"
    return text
