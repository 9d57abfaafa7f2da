"""Namespaces, veths, processes and per-namespace HTTP for the lab: the only lab module that
runs ``ip``, ``nsenter`` or signals processes.

What it is: small synchronous helpers over ``ip`` and ``/proc`` (the command-line helpers
``run``/``ip``/``netns_exec``/``socket_in_netns`` come from ``pycalico.netns.namespace``,
shared with the test fabric).  What it is not: policy about what the lab builds
(``pycalico.lab.cluster``).

Invariants: every namespace is created by ``add_namespace`` under a name the caller chose (the
lab's prefix); interfaces are created directly inside lab namespaces, never in the machine's
own namespace; ``kill_tree`` never signals a pid it cannot tie to the lab (pid file, lab
namespace, or a command line naming the state directory).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from pycalico.netns.namespace import NETNS_DIR, ip, netns_exec, run, socket_in_netns

__all__ = ["NETNS_DIR", "ip", "netns_exec", "run"]


def list_namespaces(prefix: str) -> list[str]:
    output = run("ip", "netns", "list", check=False)
    names = [line.split()[0] for line in output.splitlines() if line.strip()]
    return sorted(name for name in names if name.startswith(f"{prefix}-"))


def add_namespace(name: str) -> None:
    run("ip", "netns", "add", name)
    ip(name, "link", "set", "lo", "up")


def delete_namespace(name: str) -> None:
    run("ip", "netns", "del", name, check=False)


def attach_to_bridge(fabric: str, namespace: str, port: str, bridge: str = "br0") -> None:
    """A veth ``port`` on the fabric's ``bridge`` whose other end is ``eth0`` in ``namespace``."""
    ip(fabric, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", namespace)
    ip(fabric, "link", "set", port, "master", bridge, "up")
    ip(namespace, "link", "set", "eth0", "up")


def sysctls(namespace: str, settings: Mapping[str, str]) -> None:
    netns_exec(namespace, "sysctl", "-q", "-w", *(f"{k}={v}" for k, v in settings.items()))


def start_daemon(
    command: Sequence[str],
    *,
    namespace: str | None,
    env: Mapping[str, str],
    log_path: str,
    pid_path: str,
) -> int:
    """Start a process that outlives this one (own session), in ``namespace`` when given;
    its pid goes to ``pid_path`` before this returns."""
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    prefix = ["nsenter", f"--net={NETNS_DIR}/{namespace}"] if namespace else []
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            [*prefix, *command],
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    Path(pid_path).write_text(str(process.pid))
    return process.pid


def read_pid(pid_path: str | os.PathLike[str]) -> int | None:
    try:
        return int(Path(pid_path).read_text().strip())
    except (OSError, ValueError):
        return None


def alive(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        with open(f"/proc/{pid}/stat") as file:
            return file.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def namespace_pids(namespace: str) -> list[int]:
    output = run("ip", "netns", "pids", namespace, check=False)
    return [int(word) for word in output.split() if word.isdigit()]


def pids_naming(text: str) -> list[int]:
    """Live processes whose command line contains ``text`` (e.g. the lab's state directory)."""
    found = []
    for entry in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if text.encode() in entry.read_bytes():
                found.append(int(entry.parent.name))
        except (OSError, ValueError):
            continue
    return [pid for pid in found if pid != os.getpid()]


KILLED_EXIT_WAIT = 10.0  # seconds a SIGKILLed process may take to be gone (uninterruptible I/O)


def kill_tree(pids: Iterable[int], *, grace: float = 2.0) -> int:
    """SIGTERM each pid's process group (daemons lead their own), then SIGKILL what is left, and
    return once every target is gone (a SIGKILLed process exits only when next scheduled, which
    on a busy machine is not at once; callers count on the pids being dead)."""
    targets = sorted({pid for pid in pids if pid > 1 and pid != os.getpid() and alive(pid)})
    for pid in targets:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if os.getpgid(pid) == pid:
                os.killpg(pid, signal.SIGTERM)
            else:
                os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(alive(pid) for pid in targets):
        time.sleep(0.05)
    for pid in targets:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + KILLED_EXIT_WAIT
    while time.monotonic() < deadline and any(alive(pid) for pid in targets):
        time.sleep(0.02)
    return len(targets)


def http_get(namespace: str, port: int, path: str, timeout: float = 1.0) -> int | None:
    """The HTTP status of ``GET path`` on ``127.0.0.1:port`` inside ``namespace`` (None: no
    answer)."""
    try:
        sock = socket_in_netns(namespace, socket.AF_INET, socket.SOCK_STREAM)
    except OSError:
        return None
    with sock:
        sock.settimeout(timeout)
        try:
            sock.connect(("127.0.0.1", port))
            sock.sendall(f"GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n".encode())
            head = sock.recv(64).decode(errors="replace")
        except OSError:
            return None
    parts = head.split()
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None


def rss_kib(pid: int) -> int:
    """Resident memory of one process (VmRSS), 0 when it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def children(pid: int) -> list[int]:
    """Direct children of ``pid``."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(word) for word in text.split()]


def command_name(pid: int) -> str:
    try:
        words = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return ""
    return " ".join(os.path.basename(word.decode(errors="replace")) for word in words[:3] if word)


# The kernel's neighbour (ARP/NDP) tables are shared by every namespace and hold 1,024 entries
# by default, while a full mesh of N nodes needs about N² of them: past ~30 nodes BGP sessions
# die with "No buffer space available".  The lab raises the limits and puts back what it found.
NEIGHBOUR_SYSCTLS = tuple(
    f"/proc/sys/net/{family}/neigh/default/gc_thresh{level}"
    for family in ("ipv4", "ipv6")
    for level in (2, 3)
)


def raise_neighbour_limits(hosts: int) -> dict[str, tuple[int, int]]:
    """Make room for ``hosts`` hosts that all see each other; path -> (found, set) for each
    limit that was raised."""
    needed = hosts * hosts + 1024
    changed: dict[str, tuple[int, int]] = {}
    for path in NEIGHBOUR_SYSCTLS:
        with contextlib.suppress(OSError, ValueError):
            current = int(Path(path).read_text().strip())
            wanted = needed if path.endswith("2") else 2 * needed
            if current < wanted:
                Path(path).write_text(str(wanted))
                changed[path] = (current, wanted)
    return changed


def restore_neighbour_limits(changed: Mapping[str, Sequence[int]]) -> None:
    """Put back each limit ``raise_neighbour_limits`` set, unless someone changed it since."""
    for path, (found, wanted) in changed.items():
        with contextlib.suppress(OSError, ValueError):
            if int(Path(path).read_text().strip()) == wanted:
                Path(path).write_text(str(found))
