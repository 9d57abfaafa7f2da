"""A connectivity matrix checker on real namespaces (packets, not rule reads), for
``calico-lab check`` (``pycalico.lab.matrix``) and for tests (``pycalico.testing.connectivity``
re-exports it).

What it is: servers (TCP accept, UDP echo) and probes (TCP connect, UDP round trip, ICMP echo)
that run in-process on threads which ``setns`` into the pods' network namespaces, so a whole
matrix of (source, destination, port, protocol) probes runs in parallel without a process per
probe.  ``check`` retries the matrix until every verdict matches or a deadline passes, then
fails with the whole matrix — expected, actual, and which cells differ.
What it is not: a traffic generator or a throughput meter (use iperf3 for that).

Invariants: a probe's verdict is ``True`` only if a reply came back from the destination within
``probe_timeout``; ``stop`` closes every server socket and joins every thread, also after a
failed check.  Sources may be any namespace (a pod or the node), with an optional forged source
address (the address must exist on the source's interface for ``bind`` to work).
"""

from __future__ import annotations

import contextlib
import os
import random
import selectors
import socket
import struct
import threading
import time
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Literal

from pycalico.netns.namespace import enter

Protocol = Literal["tcp", "udp", "icmp"]


@dataclass(frozen=True, slots=True, order=True)
class Endpoint:
    netns: str
    ip: str


@dataclass(frozen=True, slots=True, order=True)
class Probe:
    source: str  # a name from the checker's endpoints
    destination: str
    port: int = 0  # ignored for icmp
    protocol: Protocol = "tcp"
    source_ip: str = ""  # forge/bind a specific source address

    def label(self) -> str:
        target = f"{self.destination}:{self.protocol}" + (
            f"/{self.port}" if self.protocol != "icmp" else ""
        )
        forged = f" (from {self.source_ip})" if self.source_ip else ""
        return f"{self.source}{forged} -> {target}"


class MatrixMismatch(AssertionError):
    pass


def _family(ip: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in ip else socket.AF_INET


class _Server:
    """TCP accept-and-close and UDP echo on given ports, in one namespace, on one thread."""

    def __init__(self, endpoint: Endpoint, tcp_ports: Iterable[int], udp_ports: Iterable[int]):
        self.selector = selectors.DefaultSelector()
        self.sockets: list[socket.socket] = []
        wake_r, self._wake_w = os.pipe()
        self._wake_r = wake_r
        with enter(endpoint.netns):
            family = _family(endpoint.ip)
            for port in tcp_ports:
                sock = socket.socket(family, socket.SOCK_STREAM)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind((endpoint.ip, port))
                sock.listen(64)
                sock.setblocking(False)
                self._register(sock, "tcp")
            for port in udp_ports:
                sock = socket.socket(family, socket.SOCK_DGRAM)
                sock.bind((endpoint.ip, port))
                sock.setblocking(False)
                self._register(sock, "udp")
        self.selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _register(self, sock: socket.socket, kind: str) -> None:
        self.sockets.append(sock)
        self.selector.register(sock, selectors.EVENT_READ, kind)

    def _serve(self) -> None:
        while True:
            for key, _ in self.selector.select():
                if key.data == "wake":
                    return
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                with contextlib.suppress(OSError):
                    if key.data == "tcp":
                        connection, _ = sock.accept()
                        connection.close()
                    else:
                        data, peer = sock.recvfrom(2048)
                        sock.sendto(data, peer)

    def stop(self) -> None:
        os.write(self._wake_w, b"x")
        self.thread.join(timeout=5)
        for sock in self.sockets:
            sock.close()
        self.selector.close()
        os.close(self._wake_r)
        os.close(self._wake_w)


_ICMP_ECHO = {socket.AF_INET: 8, socket.AF_INET6: 128}


def _probe(endpoints: Mapping[str, Endpoint], probe: Probe, timeout: float) -> bool:
    source = endpoints[probe.source]
    destination = endpoints[probe.destination]
    family = _family(destination.ip)
    with enter(source.netns):
        if probe.protocol == "tcp":
            sock = socket.socket(family, socket.SOCK_STREAM)
        elif probe.protocol == "udp":
            sock = socket.socket(family, socket.SOCK_DGRAM)
        else:
            proto = socket.IPPROTO_ICMP if family == socket.AF_INET else socket.IPPROTO_ICMPV6
            # Raw, not ping sockets: those need ping_group_range set in every namespace.
            sock = socket.socket(family, socket.SOCK_RAW, proto)
    try:
        sock.settimeout(timeout)
        if probe.source_ip:
            sock.setsockopt(socket.SOL_IP, 15, 1)  # IP_FREEBIND: forge an absent address too
            sock.bind((probe.source_ip, 0))
        if probe.protocol == "tcp":
            sock.connect((destination.ip, probe.port))
            return True
        if probe.protocol == "udp":
            sock.sendto(b"probe", (destination.ip, probe.port))
            data, _ = sock.recvfrom(64)
            return data == b"probe"
        ident = random.randrange(1, 0xFFFF)
        header = struct.pack("!BBHHH", _ICMP_ECHO[family], 0, 0, ident, 1)
        if family == socket.AF_INET:  # the kernel fills in ICMPv6 checksums, not ICMP ones
            header = struct.pack("!BBHHH", 8, 0, _checksum(header + b"probe"), ident, 1)
        sock.sendto(header + b"probe", (destination.ip, 0))
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            data, peer = sock.recvfrom(256)
            if family == socket.AF_INET:
                data = data[(data[0] & 0x0F) * 4 :]  # raw IPv4 sockets include the IP header
            reply_type = 0 if family == socket.AF_INET else 129
            if peer[0] == destination.ip and data[0] == reply_type and data[4:6] == header[4:6]:
                return True
        return False
    except OSError:
        return False
    finally:
        sock.close()


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return int(~total & 0xFFFF)


class ConnectivityChecker:
    def __init__(self, endpoints: Mapping[str, Endpoint], probe_timeout: float = 0.5) -> None:
        self.endpoints = dict(endpoints)
        self.probe_timeout = probe_timeout
        self._servers: list[_Server] = []
        self._pool = ThreadPoolExecutor(max_workers=32, thread_name_prefix="probe")

    def serve(
        self, names: Iterable[str], tcp_ports: Iterable[int] = (), udp_ports: Iterable[int] = ()
    ) -> None:
        tcp, udp = tuple(tcp_ports), tuple(udp_ports)
        for name in names:
            self._servers.append(_Server(self.endpoints[name], tcp, udp))

    def measure(self, probes: Iterable[Probe]) -> dict[Probe, bool]:
        probes = list(probes)
        futures = [
            self._pool.submit(_probe, self.endpoints, probe, self.probe_timeout) for probe in probes
        ]
        return {probe: future.result() for probe, future in zip(probes, futures, strict=True)}

    def check(self, expected: Mapping[Probe, bool], deadline: float = 5.0) -> float:
        """Retry until every probe gives its expected verdict; returns the seconds it took."""
        start = time.monotonic()
        while True:
            actual = self.measure(expected)
            if all(actual[p] == want for p, want in expected.items()):
                return time.monotonic() - start
            if time.monotonic() - start > deadline:
                raise MatrixMismatch(format_matrix(expected, actual))
            time.sleep(0.05)

    def stop(self) -> None:
        for server in self._servers:
            server.stop()
        self._servers.clear()
        self._pool.shutdown(wait=True)


def format_matrix(expected: Mapping[Probe, bool], actual: Mapping[Probe, bool]) -> str:
    """The whole matrix, one probe a line, mismatches flagged."""
    wrong = sum(1 for p in expected if actual.get(p) != expected[p])
    lines = [f"connectivity matrix: {wrong} of {len(expected)} probes differ", ""]
    width = max(len(p.label()) for p in expected)
    lines.append(f"  {'probe'.ljust(width)}  expected  actual")
    for probe in sorted(expected):
        want, got = expected[probe], actual.get(probe)
        flag = "  <-- MISMATCH" if want != got else ""
        lines.append(f"  {probe.label().ljust(width)}  {_verdict(want):8}  {_verdict(got):6}{flag}")
    return "\n".join(lines)


def _verdict(value: bool | None) -> str:
    return "?" if value is None else ("pass" if value else "block")
