"""NFLOG and counter reading for flow logs: a raw netfilter-netlink socket, and one nft listing.

What it is: ``NflogSocket`` binds one NFLOG group (the ``log group N`` statements the renderer
puts on deny paths) and returns the packets the kernel sends; ``read_rule_counters`` lists the
``calico`` table once (libnftables in process, else one ``nft -j`` call) for the policy-rule
counters.  pyroute2 has no NFLOG support, hence the few lines of netlink here.
What it is not: parsing or naming (``rules.flows``), or writing records (``dataplane.flows``).

Invariants: a socket belongs to the network namespace it was created in (create it there);
nothing here spawns a process per packet or per rule — at most one ``nft`` per counter read.
"""

from __future__ import annotations

import json
import socket
import subprocess
from typing import Any

from pycalico.felix.drivers.errors import NftError
from pycalico.felix.rules import flows
from pycalico.felix.rules.names import TABLE

NETLINK_NETFILTER = 12
_RECEIVE_BUFFER = 1 << 20


class NflogError(OSError):
    """Binding an NFLOG group failed (another listener holds it, or no nfnetlink_log)."""


class NflogSocket:
    """One bound NFLOG group; non-blocking, for ``loop.add_reader``."""

    def __init__(self, group: int, copy_range: int = 128) -> None:
        self.group = group
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _RECEIVE_BUFFER)
            self.sock.bind((0, 0))
            self._request(flows.config_message(group, flows.NFULNL_CFG_CMD_BIND, 1))
            self._request(flows.config_message(group, None, 2, copy_range=copy_range))
        except OSError:
            self.sock.close()
            raise
        self.sock.setblocking(False)

    def _request(self, message: bytes) -> None:
        self.sock.send(message)
        error = flows.netlink_error(self.sock.recv(65536))
        if error:
            raise NflogError(-error, f"NFLOG group {self.group}: {error}")

    def fileno(self) -> int:
        return self.sock.fileno()

    def read(self) -> list[flows.NflogPacket]:
        """Every packet waiting now (empty when none); never blocks."""
        packets: list[flows.NflogPacket] = []
        while True:
            try:
                data = self.sock.recv(_RECEIVE_BUFFER)
            except (BlockingIOError, InterruptedError):
                return packets
            except OSError as error:  # ENOBUFS: the kernel dropped some; go on with the rest
                if error.errno == 105:
                    continue
                raise
            packets += flows.parse_nflog(data)

    def close(self) -> None:
        self.sock.close()


def read_rule_counters(nft: Any = None) -> dict[str, Any]:
    """``list table inet calico`` as JSON, set elements left out (terse).

    ``nft``: a ``nftables.Nftables`` context of the right namespace (reused between reads), or
    None for one ``nft -t -j`` process.
    """
    command = f"list table {TABLE}"
    if nft is not None:
        nft.set_json_output(True)
        nft.set_terse_output(True)
        rc, output, error = nft.cmd(command)
        if rc != 0:
            raise NftError(f"libnftables list failed: {str(error)[:500]}", command)
        return dict(json.loads(output))
    done = subprocess.run(["nft", "-t", "-j", *command.split()], capture_output=True, check=False)
    if done.returncode != 0:
        raise NftError(f"nft list failed: {done.stderr.decode(errors='replace')[:500]}", command)
    return dict(json.loads(done.stdout))
