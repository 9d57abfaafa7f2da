"""The conntrack driver: forget the flows of an address that left this node.

What it is: ``conntrack --delete`` for each direction an address can appear in (original and
reply, source and destination), as Calico's ``felix/conntrack`` does, so a reused IP does not
inherit the old workload's established flows.  What it is not: a conntrack table reader.

Invariants: all deletions of one batch run as concurrent processes (one per address and
direction) and are waited for together; "0 flow entries" (exit status 1) counts as success.
"""

from __future__ import annotations

import logging
import subprocess

log = logging.getLogger(__name__)

_DIRECTIONS = ("--orig-src", "--orig-dst", "--reply-src", "--reply-dst")


class ConntrackCommand:
    def __init__(self, command: str = "conntrack") -> None:
        self.command = command

    def flush_addresses(self, addresses: list[str]) -> None:
        processes = []
        for address in addresses:
            family = "ipv6" if ":" in address else "ipv4"
            for direction in _DIRECTIONS:
                processes.append(
                    subprocess.Popen(
                        [self.command, "--family", family, "--delete", direction, address],
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.PIPE,
                    )
                )
        for process in processes:
            _, error = process.communicate()
            if process.returncode not in (0, 1):
                log.warning("conntrack delete failed: %s", error.decode(errors="replace"))
