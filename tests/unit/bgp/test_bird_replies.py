"""BIRD's reply protocol and ``show protocols`` parsing, and calicoctl node status's tables,
from BIRD 2.0.12's own output."""

from __future__ import annotations

import pytest

from pycalico.bgp.bird import BirdError, bird_command, parse_protocols, parse_reply_lines
from pycalico.ctl.node import family_section, format_table, peer_rows, status_text

SHOW_PROTOCOLS = [
    "2002-Name       Proto      Table      State  Since         Info",
    "1002-kernel4    Kernel     master4    up     14:24:45      ",
    " device1    Device     ---        up     14:24:45      ",
    " Mesh_10_213_0_2 BGP        ---        up     14:24:46      Established   ",
    " Node_10_213_0_9_port_1790 BGP        ---        start  14:24:46      Active        Socket: Connection refused",
    " Global_fd00__fe BGP        ---        up     14:25:01      Established   ",
    " static1    Static     master4    up     14:24:45      ",
    "0000 ",
]


def test_reply_lines_codes_and_continuations() -> None:
    reply = parse_reply_lines(SHOW_PROTOCOLS)
    assert reply.code == 0 and reply.ok
    assert reply.lines[0] == (2002, "Name       Proto      Table      State  Since         Info")
    assert reply.lines[2][0] == 1002  # a continuation keeps the code of the line before it
    error = parse_reply_lines(["8002 /etc/bird.cfg:3:1 syntax error"])
    assert error.code == 8002 and not error.ok and "syntax error" in error.text


def test_show_protocols_rows() -> None:
    rows = parse_protocols(parse_reply_lines(SHOW_PROTOCOLS))
    assert [row.name for row in rows] == [
        "kernel4",
        "device1",
        "Mesh_10_213_0_2",
        "Node_10_213_0_9_port_1790",
        "Global_fd00__fe",
        "static1",
    ]
    mesh = rows[2]
    assert (mesh.proto, mesh.state, mesh.since, mesh.info) == (
        "BGP",
        "up",
        "14:24:46",
        "Established",
    )
    assert rows[3].info == "Active Socket: Connection refused"


def test_unknown_heading_is_refused() -> None:
    with pytest.raises(BirdError):
        parse_protocols(parse_reply_lines(["2002-Name Proto Whatever", "0000 "]))


def test_peer_rows_split_families_and_types() -> None:
    peers = peer_rows(parse_protocols(parse_reply_lines(SHOW_PROTOCOLS)))
    assert [(p.version, p.address, p.peer_type) for p in peers] == [
        (4, "10.213.0.2", "node-to-node mesh"),
        (4, "10.213.0.9", "node specific"),
        (6, "fd00::fe", "global"),
    ]


def test_table_layout_is_calicoctls() -> None:
    table = format_table([("172.17.8.102", "node-to-node mesh", "up", "23:30:04", "Established")])
    assert table == (
        "+--------------+-------------------+-------+----------+-------------+\n"
        "| PEER ADDRESS |     PEER TYPE     | STATE |  SINCE   |    INFO     |\n"
        "+--------------+-------------------+-------+----------+-------------+\n"
        "| 172.17.8.102 | node-to-node mesh | up    | 23:30:04 | Established |\n"
        "+--------------+-------------------+-------+----------+-------------+\n"
    )
    assert family_section(6, []) == "\nIPv6 BGP status\nNo IPv6 peers found.\n"


def test_status_without_calico_or_bird(tmp_path: object) -> None:
    from pycalico.ctl.node import NodeFailure

    with pytest.raises(NodeFailure, match=r"Calico process is not running\."):
        status_text("/nonexistent/bird.ctl", running=False)
    text = status_text("/nonexistent/bird.ctl", running=True)
    assert text == (
        "Calico process is running.\n\nThe BGP backend process (BIRD) is not running: no BIRD "
        "control socket at /nonexistent/bird.ctl (give another with --bird-socket or "
        "CALICO_BIRD_SOCKET).\n\n"
    )


def test_bird_runs_in_the_foreground_with_graceful_restart_recovery() -> None:
    assert bird_command("/c", "/s") == ["bird", "-f", "-R", "-c", "/c", "-s", "/s"]
