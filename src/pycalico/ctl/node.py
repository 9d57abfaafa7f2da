"""``calicoctl node status``: is calico-node running, and the BGP peer tables from BIRD.

A click group ``node`` registered by ``pycalico.ctl.main``.  Output follows calicoctl's
(reference §8.1): "Calico process is running." (or "Calico process is not running." and exit
status 1), then per family "IPv4 BGP status" / "IPv6 BGP status" with a table ``PEER ADDRESS |
PEER TYPE | STATE | SINCE | INFO`` of the ``Mesh_``/``Global_``/``Node_`` protocols that
``show protocols`` lists over BIRD's control socket, or "No IPv4 peers found.".  One BIRD 2
daemon carries both families here, so both tables come from the same socket
(``--bird-socket``, else ``CALICO_BIRD_SOCKET``, else ``/var/run/calico/bird.ctl`` then
``/var/run/bird/bird.ctl``, else the ``-s`` socket of the BIRD running in calicoctl's own network
namespace: on a machine running several nodes, one network namespace each, as the lab does,
``ip netns exec <node> calicoctl node status`` then finds that node's BIRD wherever its socket
is); a protocol's family is the family of the address in its name.

Not here: BIRD's reply protocol (``pycalico.bgp.bird``).  This module talks to no datastore.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import click

from pycalico.bgp.bird import BirdControl, BirdError, ProtocolRow

DEFAULT_SOCKETS = ("/var/run/calico/bird.ctl", "/var/run/bird/bird.ctl")
PEER_NAME = re.compile(r"^(Global|Node|Mesh)_(.+?)(?:_port_(\d+))?$")
PEER_TYPES = {"Global": "global", "Mesh": "node-to-node mesh", "Node": "node specific"}
HEADINGS = ("Peer address", "Peer type", "State", "Since", "Info")


class NodeFailure(click.ClickException):
    exit_code = 1

    def show(self, file: Any = None) -> None:
        click.echo(self.message, file=file or sys.stderr)


@dataclass(frozen=True, slots=True)
class PeerRow:
    version: int
    address: str
    peer_type: str
    state: str
    since: str
    info: str


def peer_rows(rows: Sequence[ProtocolRow]) -> list[PeerRow]:
    """The BGP protocols named like Calico's peers, with their family."""
    peers = []
    for row in rows:
        if row.proto != "BGP":
            continue
        match = PEER_NAME.match(row.name)
        if match is None:
            continue
        kind, body = match.group(1), match.group(2)
        address: str | None = None
        for candidate in (body.replace("_", "."), body.replace("_", ":")):
            try:
                address = str(ipaddress.ip_address(candidate))
                break
            except ValueError:
                continue
        if address is None:
            continue
        peers.append(
            PeerRow(
                version=ipaddress.ip_address(address).version,
                address=address,
                peer_type=PEER_TYPES[kind],
                state=row.state,
                since=row.since,
                info=row.info,
            )
        )
    return peers


def format_table(rows: Sequence[Sequence[str]], headings: Sequence[str] = HEADINGS) -> str:
    """tablewriter's default layout, as calicoctl prints it: upper-case centred headings,
    left-aligned cells, one space of padding, ``+---+`` rules."""
    heads = [heading.upper() for heading in headings]
    widths = [max(len(heads[i]), *(len(row[i]) for row in rows)) for i in range(len(heads))]
    rule = "+" + "+".join("-" * (width + 2) for width in widths) + "+"

    def centred(text: str, width: int) -> str:
        left = (width - len(text)) // 2
        return " " * left + text + " " * (width - len(text) - left)

    lines = [
        rule,
        "|" + "|".join(f" {centred(h, w)} " for h, w in zip(heads, widths, strict=True)) + "|",
        rule,
    ]
    for row in rows:
        lines.append(
            "|" + "|".join(f" {cell.ljust(w)} " for cell, w in zip(row, widths, strict=True)) + "|"
        )
    lines.append(rule)
    return "\n".join(lines) + "\n"


def family_section(version: int, peers: Sequence[PeerRow]) -> str:
    mine = [peer for peer in peers if peer.version == version]
    text = f"\nIPv{version} BGP status\n"
    if not mine:
        return text + f"No IPv{version} peers found.\n"
    rows = [(p.address, p.peer_type, p.state, p.since, p.info) for p in mine]
    return text + format_table(rows)


def calico_running(proc: str = "/proc") -> bool:
    """Is a calico-node or calico-felix process running on this machine?"""
    try:
        entries = os.listdir(proc)
    except OSError:
        return False
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(os.path.join(proc, entry, "cmdline"), "rb") as file:
                words = file.read().split(b"\0")[:3]
        except OSError:
            continue
        names = {os.path.basename(word.decode(errors="replace")) for word in words if word}
        if names & {"calico-node", "calico-felix"}:
            return True
    return False


def bird_socket_in_this_namespace(proc: str = "/proc") -> str | None:
    """The ``-s`` control socket of a BIRD running in this process's network namespace."""
    try:
        mine = os.stat(os.path.join(proc, "self", "ns", "net"))
        entries = os.listdir(proc)
    except OSError:
        return None
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(os.path.join(proc, entry, "cmdline"), "rb") as file:
                words = [w.decode(errors="replace") for w in file.read().split(b"\0")]
            theirs = os.stat(os.path.join(proc, entry, "ns", "net"))
        except OSError:
            continue
        if os.path.basename(words[0]) != "bird" or "-s" not in words[:-1]:
            continue
        if (theirs.st_dev, theirs.st_ino) == (mine.st_dev, mine.st_ino):
            return words[words.index("-s") + 1]
    return None


def socket_path(given: str | None, *, proc: str = "/proc") -> str:
    """Where to ask BIRD: the option, the environment, the usual places, this namespace's BIRD."""
    if given:
        return given
    from_env = os.environ.get("CALICO_BIRD_SOCKET")
    if from_env:
        return from_env
    for path in DEFAULT_SOCKETS:
        if os.path.exists(path):
            return path
    return bird_socket_in_this_namespace(proc) or DEFAULT_SOCKETS[0]


def status_text(socket_path: str, *, running: bool | None = None) -> str:
    """The whole ``calicoctl node status`` output (raises ``NodeFailure`` if not running)."""
    if not (calico_running() if running is None else running):
        raise NodeFailure("Calico process is not running.")
    text = "Calico process is running.\n"
    try:
        rows = asyncio.run(BirdControl(socket_path, timeout=2.0).protocols())
    except BirdError as error:
        if not os.path.exists(socket_path):
            return text + (
                f"\nThe BGP backend process (BIRD) is not running: no BIRD control socket at "
                f"{socket_path} (give another with --bird-socket or CALICO_BIRD_SOCKET).\n\n"
            )
        return text + f"\nError querying BIRD: {error}\n\n"
    peers = peer_rows(rows)
    return text + family_section(4, peers) + family_section(6, peers) + "\n"


@click.group()
def node() -> None:
    """Calico node: status of this node's BGP sessions."""


@node.command()
@click.option("--allow-version-mismatch", is_flag=True, help="Accepted for compatibility.")
@click.option(
    "--bird-socket",
    default=None,
    help=(
        "BIRD's control socket. Default: $CALICO_BIRD_SOCKET, else /var/run/calico/bird.ctl, "
        "else /var/run/bird/bird.ctl, else the socket of the BIRD running in this network "
        "namespace (so `ip netns exec <node> calicoctl node status` finds a lab node's BIRD)."
    ),
)
def status(allow_version_mismatch: bool, bird_socket: str | None) -> None:
    """Check the status of the Calico node instance: BGP peering states."""
    if os.geteuid() != 0:
        raise NodeFailure("This command must be run as root.")
    click.echo(status_text(socket_path(bird_socket)), nl=False)
