"""When the steady traffic lost its packets: ping's ``-D -O`` lines and iperf3's server
intervals turned into a timeline, and that timeline as bursts relative to a fault's events."""

from __future__ import annotations

import json

from pycalico.testing.faults import Traffic, loss_report, lost_at, route_report

PING = """PING 10.65.0.2 (10.65.0.2) 56(84) bytes of data.
[100.000000] 64 bytes from 10.65.0.2: icmp_seq=1 ttl=63 time=0.1 ms
[100.200000] no answer yet for icmp_seq=2
[100.300000] no answer yet for icmp_seq=3
[100.310000] 64 bytes from 10.65.0.2: icmp_seq=3 ttl=63 time=210 ms
[100.400000] From 10.99.0.1 icmp_seq=4 Destination Host Unreachable
[100.500000] no answer yet for icmp_seq=4
[100.510000] 64 bytes from 10.65.0.2: icmp_seq=5 ttl=63 time=0.1 ms

--- 10.65.0.2 ping statistics ---
5 packets transmitted, 3 received, 40% packet loss, time 400ms
"""
IPERF = {
    "end": {"sum": {"packets": 250, "lost_packets": 7}},
    "server_output_json": {
        "start": {"timestamp": {"timesecs": 99}},
        "intervals": [
            {"sum": {"start": 0.0, "lost_packets": 0}},
            {"sum": {"start": 1.0, "lost_packets": 7}},
        ],
    },
}


def test_ping_losses_are_the_unanswered_requests_that_never_got_a_reply() -> None:
    # seq 3 was late, not lost; seq 4 got an error, not a reply.
    found = lost_at("ping p1->p2", PING)
    assert [(round(at, 3), count) for at, count in found] == [(100.1, 1), (100.4, 1)]


def test_iperf_losses_come_from_the_servers_intervals() -> None:
    assert lost_at("iperf3 UDP p1->p2", json.dumps(IPERF)) == [(100.0, 7)]


def test_report_groups_bursts_relative_to_the_first_event() -> None:
    traffic = Traffic(outputs={"ping p1->p2": PING, "iperf3 UDP p1->p2": json.dumps(IPERF)})
    report = loss_report(traffic.timeline(), [("kill", 100.0), ("restart", 103.0)])
    assert report.splitlines() == [
        "events: kill +0.0 s, restart +3.0 s",
        "iperf3 UDP p1->p2: 7 lost (+0.0..+0.0 s: 7)",
        "ping p1->p2: 2 lost (+0.1..+0.4 s: 2)",
    ]


def test_route_report_gives_each_wrong_route_its_first_and_last_sample() -> None:
    samples = [(10.0, []), (10.5, ["node2: route to p1"]), (11.0, ["node2: route to p1"])]
    assert route_report(samples, 10.0) == "route wrong +0.5..+1.0 s: node2: route to p1"
    assert route_report([(10.0, [])], 10.0) == "routes: every route right in every sample"
