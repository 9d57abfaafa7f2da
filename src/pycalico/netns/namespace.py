"""Commands and code inside named network namespaces (those under ``/var/run/netns``).

What it is: thin synchronous wrappers over ``ip``, ``nsenter`` and ``setns(2)``: ``run`` a
command, ``ip`` in a namespace, ``netns_exec`` any command in one, ``enter`` one with the
calling thread for the length of a ``with`` block, and ``socket_in_netns`` to make a socket
that belongs to a namespace without moving the calling thread.  Used by the lab and by the test
fabrics in ``pycalico.testing``.  What it is not: policy about which namespaces exist or how
they are wired (``pycalico.lab.kernel``, ``pycalico.testing.netns_fabric``), nor the CNI
plugin's own namespace handling (``pycalico.cni.netns``).

Invariants: ``run`` raises ``RuntimeError`` naming the command and its stderr when ``check``
is set and the command fails, and never waits more than 60 seconds; ``enter`` always returns
the thread to its original namespace, also on error; ``socket_in_netns`` leaves the calling
thread's namespace untouched (a short-lived thread does the ``setns``).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import socket
import subprocess
import threading
from collections.abc import Iterator

CLONE_NEWNET = 0x40000000
NETNS_DIR = "/var/run/netns"
_libc = ctypes.CDLL(None, use_errno=True)


def run(*command: str, check: bool = True, input: str | None = None) -> str:
    result = subprocess.run(
        list(command), capture_output=True, text=True, input=input, timeout=60, check=False
    )
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {result.stderr.strip()}")
    return result.stdout


def ip(namespace: str | None, *args: str, check: bool = True) -> str:
    base = ["ip"] if namespace is None else ["ip", "-n", namespace]
    return run(*base, *args, check=check)


def netns_exec(namespace: str, *command: str, check: bool = True) -> str:
    return run("nsenter", f"--net={NETNS_DIR}/{namespace}", *command, check=check)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"setns: {os.strerror(error)}")


@contextlib.contextmanager
def enter(name: str) -> Iterator[None]:
    """Run the body with this thread in network namespace ``name``."""
    original = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(f"{NETNS_DIR}/{name}", os.O_RDONLY)
    try:
        _setns(target)
        yield
    finally:
        _setns(original)
        os.close(target)
        os.close(original)


def socket_in_netns(namespace: str, family: int, kind: int) -> socket.socket:
    """A socket created inside ``namespace`` (it stays bound to it), made by a short-lived
    thread so that this thread's own namespace is untouched."""
    result: list[socket.socket | BaseException] = []

    def make() -> None:
        try:
            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            with open(f"{NETNS_DIR}/{namespace}") as handle:
                if libc.setns(handle.fileno(), CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), f"setns {namespace}")
            result.append(socket.socket(family, kind))
        except BaseException as error:  # handed back to the caller
            result.append(error)

    thread = threading.Thread(target=make)
    thread.start()
    thread.join()
    outcome = result[0]
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome
