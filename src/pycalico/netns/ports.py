"""Free loopback TCP ports for processes we are about to start (etcd members, relays).

What it is: one helper that asks the kernel for an unused port.  What it is not: a
reservation; the port is released before the caller binds it.

Invariants: the returned port was free on 127.0.0.1 a moment ago; a caller that can lose the
race to another process must retry with a new port.
"""

from __future__ import annotations

import socket


def free_port() -> int:
    """A loopback TCP port that was free a moment ago (the caller retries if it is taken)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
