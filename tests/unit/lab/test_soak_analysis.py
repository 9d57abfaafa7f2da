"""The soak's judgement (pycalico.testing.soak): flat or growing, keys against live objects,
addresses, process kinds, outages — pure functions on made-up samples."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

from pycalico.testing import soak
from pycalico.testing.soak import Live, ProcessSample


def test_flat_series_with_noise_and_a_spike_is_flat() -> None:
    values = [100_000.0 + (i % 3) * 500 for i in range(30)]
    values[25] = 180_000.0  # one GC spike
    result = soak.trend(values, warmup=3, tolerance=0.05, slack=2048)
    assert result.flat is True


def test_steady_growth_after_the_warmup_is_not_flat() -> None:
    values = [100_000.0 + 1000 * i for i in range(30)]  # 1 MiB per sample
    result = soak.trend(values, warmup=3, tolerance=0.05, slack=2048)
    assert result.flat is False
    assert result.growth > result.allowed


def test_warmup_ramp_is_ignored() -> None:
    values = [50_000.0 + 5000 * i for i in range(12)] + [110_000.0] * 12
    assert soak.trend(values, warmup=12, tolerance=0.0, slack=0).flat is True
    assert soak.trend(values, warmup=0, tolerance=0.0, slack=0).flat is False


def test_too_few_samples_are_not_judged() -> None:
    result = soak.trend([1.0, 100.0, 1000.0], warmup=0, tolerance=0.0, slack=0)
    assert result.flat is None
    assert result.describe() == "too short"


def test_fd_growth_of_a_few_is_within_slack_but_a_leak_is_not() -> None:
    assert soak.trend([20.0] * 10 + [22.0] * 10, warmup=2, tolerance=0, slack=3).flat is True
    leak = [20.0 + i for i in range(20)]
    assert soak.trend(leak, warmup=2, tolerance=0, slack=3).flat is False


def test_classify_lab_processes() -> None:
    python = "/work/main/.venv/bin/python"
    assert soak.classify([python, "/x/bin/calico-node"]) == "calico-node"
    assert soak.classify([python, "-m", "pycalico.node.main", "-confd"]) == "confd"
    assert soak.classify([python, "/x/bin/calico-felix"]) == "felix"
    assert soak.classify(["bird", "-f", "-R", "-c", "bird.cfg"]) == "bird"
    assert soak.classify(["/usr/bin/etcd", "--name", "etcd0"]) == "etcd"
    assert soak.classify(["sleep", "10"]) is None
    assert soak.classify([]) is None


def test_usage_reads_rss_and_fds(tmp_path: Path) -> None:
    (tmp_path / "42" / "fd").mkdir(parents=True)
    (tmp_path / "42" / "status").write_text("Name:\tx\nVmRSS:\t  1234 kB\n")
    for fd in ("0", "1", "5"):
        os.symlink("/dev/null", tmp_path / "42" / "fd" / fd)
    assert soak.usage(42, proc=str(tmp_path)) == (1234, 3)
    assert soak.usage(43, proc=str(tmp_path)) is None


KEYS = {
    "/calico/felix/v2/no-region/host/node1/status": "{}",
    "/calico/ipam/v2/assignment/ipv4/block/10.65.16.64-26": json.dumps(
        {"allocations": [0, None, 1, None]}
    ),
    "/calico/ipam/v2/handle/k8s-pod-network.abc": "{}",
    "/calico/ipam/v2/host/node1/ipv4/block/10.65.16.64-26": "{}",
    "/calico/resources/v3/projectcalico.org/workloadendpoints/churn/node2-k8s-b-eth0": "{}",
    "/calico/resources/v3/projectcalico.org/globalnetworkpolicies/default.x": "{}",
}


def test_categories_and_allocations() -> None:
    counts = soak.categories(KEYS)
    assert counts == {
        "felix status": 1,
        "ipam blocks": 1,
        "ipam handles": 1,
        "block affinities": 1,
        "workloadendpoints": 1,
        "globalnetworkpolicies": 1,
    }
    assert soak.allocations(KEYS) == 2


def test_parse_etcdctl_json() -> None:
    def b64(text: str) -> str:
        return base64.b64encode(text.encode()).decode()

    text = json.dumps(
        {"header": {"revision": "17"}, "kvs": [{"key": b64("/calico/a"), "value": b64("{}")}]}
    )
    assert soak.parse_etcdctl_json(text) == ({"/calico/a": "{}"}, 17)
    assert soak.parse_etcdctl_json(json.dumps({"header": {"revision": "3"}})) == ({}, 3)


def test_keys_match_live_objects_or_name_the_leak() -> None:
    baseline = {"workloadendpoints": 3, "ipam handles": 3, "ipam blocks": 3, "nodes": 10}
    at_baseline = Live(pods=3, nodes=10, max_pods_per_node=1)
    now = Live(pods=5, policies={"globalnetworkpolicies": 2}, nodes=10, max_pods_per_node=2)
    expected = soak.expected_keys(baseline, at_baseline, now)
    good = {
        "workloadendpoints": 5,
        "ipam handles": 5,
        "ipam blocks": 9,
        "nodes": 10,
        "globalnetworkpolicies": 2,
    }
    assert soak.key_problems(good, expected) == []
    leaked = {**good, "ipam handles": 6, "ipam blocks": 11, "globalnetworkpolicies": 3}
    assert soak.key_problems(leaked, expected) == [
        "globalnetworkpolicies: 3 keys, 2 expected",
        "ipam blocks: 11 keys, at most 10 needed",
        "ipam handles: 6 keys, 5 expected",
    ]


def _samples(rss_growth: int, restart_at: int | None = None) -> list[list[ProcessSample]]:
    taken = []
    for i in range(24):
        pid = 200 if restart_at is not None and i >= restart_at else 100
        taken.append(
            [
                ProcessSample("felix", "node1", pid, 80_000 + rss_growth * i, 12),
                ProcessSample("felix", "node2", 101, 80_000, 12),
                ProcessSample("etcd", "etcd0", 7, 50_000, 30 + (i % 2)),
            ]
        )
    return taken


def test_process_rows_flat_and_growing() -> None:
    rows = {row.kind: row for row in soak.process_rows(_samples(0), warmup=3)}
    assert rows["felix"].flat and rows["etcd"].flat
    assert rows["felix"].processes == 2 and rows["felix"].restarts == 0
    assert rows["felix"].rss_start_kib == 80_000
    growing = {row.kind: row for row in soak.process_rows(_samples(1024), warmup=3)}
    assert not growing["felix"].flat
    assert growing["felix"].worst == "node1 (100)"
    assert growing["felix"].rss_max_kib == 80_000 + 1024 * 23
    text = soak.table(list(growing.values()))
    assert "| felix | 2 | 0 |" in text and "GROWS" in text


def test_a_restarted_process_is_counted_and_judged_per_pid() -> None:
    rows = {row.kind: row for row in soak.process_rows(_samples(0, restart_at=12), warmup=3)}
    assert rows["felix"].restarts == 1
    assert rows["felix"].processes == 2


def test_longest_outage_from_sequence_numbers() -> None:
    replies = "\n".join(f"64 bytes from x: icmp_seq={n} ttl=64" for n in (1, 2, 3, 7, 8, 10))
    output = replies + "\n10 packets transmitted, 6 received, 40% packet loss\n"
    assert abs(soak.longest_outage(output, 0.1) - 0.3) < 1e-9  # 4, 5, 6
    tail = replies + "\n14 packets transmitted, 6 received\n"
    assert abs(soak.longest_outage(tail, 0.1) - 0.4) < 1e-9  # 11..14
    # ping -D -O: an unanswered request is reported on a line of its own, not a reply
    unanswered = "[1796593085.123] no answer yet for icmp_seq=5\n"
    assert abs(soak.longest_outage(unanswered + output, 0.1) - 0.3) < 1e-9


def test_node_files_skip_logs(tmp_path: Path) -> None:
    for name in (
        "run/status/a",
        "run/cni.sock",
        "confd/bird.cfg",
        "log/x.log",
        "flows/f",
        "net.d/c",
    ):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("")
    assert soak.node_files(str(tmp_path)) == {"run/status/a", "run/cni.sock", "confd/bird.cfg"}
