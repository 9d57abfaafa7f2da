"""``calico-lab ui`` in headless Chromium: a 2-node lab with pods in two namespaces, the UI
server, and the page as Chromium renders it (its DOM after the page's own requests finished,
and a screenshot kept under the test's tmp dir).  What the page must show is read from the lab
(its state and etcd), not written here."""

from __future__ import annotations

import queue
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import pytest

from tests.e2e.conftest import BIN, LabRunner

pytestmark = [pytest.mark.root, pytest.mark.slow]

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def _chromium(tmp: Path, url: str, *extra: str) -> str:
    """Chromium renders ``url``; virtual time stands still while the page's fetches are
    pending, so the DOM/screenshot is taken after every answer arrived."""
    done = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",  # the e2e tests run as root
            "--disable-gpu",
            f"--user-data-dir={tmp / 'chromium-profile'}",
            "--virtual-time-budget=30000",
            "--window-size=1280,2400",
            *extra,
            url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.fixture
def ui_url(lab: LabRunner) -> Iterator[str]:
    server = subprocess.Popen(
        [str(BIN / "calico-lab"), "ui", "--port", "0"],
        env=lab.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        assert server.stdout is not None
        for line in server.stdout:
            lines.put(line)
        lines.put("")

    threading.Thread(target=read, daemon=True).start()
    try:
        seen = []
        while True:
            line = lines.get(timeout=30)
            seen.append(line)
            assert line, f"calico-lab ui exited: {''.join(seen)}"
            if "serving on " in line:
                yield line.split("serving on ", 1)[1].strip()
                break
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.fixture
def small_lab(lab: LabRunner) -> LabRunner:
    lab.run("up", "--nodes", "2")
    lab.run("pod", "add", "web", "--node", "node1", "--labels", "app=web")
    lab.run("pod", "add", "db", "--node", "node2", "--namespace", "data", "--labels", "app=db")
    lab.run("pod", "add", "cache", "--node", "node2", "--namespace", "data")
    return lab


DENY_DB = """\
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: deny-db-8080, namespace: data}
spec:
  selector: app == 'db'
  ingress:
  - {action: Deny, protocol: TCP, destination: {ports: [8080]}}
"""


def _apply(lab: LabRunner, manifest: str) -> None:
    env = {**lab.env, "DATASTORE_TYPE": "etcdv3", "ETCD_ENDPOINTS": lab.state().host_endpoints}
    done = subprocess.run(
        [str(BIN / "calicoctl"), "apply", "-f", "-"],
        input=manifest,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def test_page_shows_the_labs_nodes_sessions_and_pods_and_explains(
    small_lab: LabRunner, ui_url: str, tmp_path: Path
) -> None:
    state = small_lab.state()
    query = urlencode(
        {"from": "default/web", "to": "data/db", "port": "8080", "protocol": "TCP", "matrix": "1"}
    )
    page = f"{ui_url}?{query}"
    dom = _chromium(tmp_path, page, "--dump-dom")
    assert 'data-loaded="yes"' in dom, dom[-3000:]
    assert "error:" not in dom, dom
    nodes_part = dom.split('id="nodes"', 1)[1].split('id="pods-section"', 1)[0]
    for node in state.nodes:
        assert f'data-node="{node.name}"' in nodes_part
        # The other node is this node's BGP peer, Established (from its BIRD).
        for other in state.nodes:
            if other is not node:
                assert other.address in nodes_part
    assert nodes_part.count("Established") >= len(state.nodes), nodes_part
    pods_part = dom.split('id="pods-table"', 1)[1].split("</table>", 1)[0]
    assert len(state.pods) == 3
    for pod in state.pods:
        row = f"<td>{pod.node}</td><td>{pod.namespace}</td><td>{pod.name}</td><td>{pod.ipv4}</td>"
        assert row in pods_part, pods_part
    # The matrix, measured on load (?matrix=1): the lab's profiles allow everything.
    probes = len(state.pods) * (len(state.pods) - 1) * 2
    matrix_part = dom.split('id="matrix"', 1)[1][:3000]
    assert f"{probes} of {probes} probes reached their pod" in matrix_part, matrix_part
    explain_part = dom.split('id="explain"', 1)[1]
    verdict = explain_part.split('id="explain-verdict"', 1)[1][:600]
    # The lab's namespace profiles allow everything and no policy exists: allowed, by profile.
    assert "allow" in verdict and "deny" not in verdict, verdict
    assert "Profile kns.data" in explain_part, explain_part[:3000]
    # A policy denies db's TCP 8080: the page's explain names it and the rule, and the matrix
    # (measured again on load) shows the blocked cell.
    _apply(small_lab, DENY_DB)
    dom = _chromium(tmp_path, page, "--dump-dom")
    verdict = dom.split('id="explain-verdict"', 1)[1][:600]
    assert "deny" in verdict, verdict
    ingress = dom.split("Ingress: data/db", 1)[1].split("</table>", 1)[0]
    assert "deny-db-8080" in ingress and "rule 0" in ingress, ingress
    matrix_part = dom.split('id="matrix"', 1)[1][:3000]
    assert f"{probes - 4} of {probes} probes reached their pod" in matrix_part, matrix_part
    # The screenshot (kept as the test's artefact) shows the denial and the blocked cells.
    screenshot = tmp_path / "calico-lab-ui.png"
    _chromium(tmp_path, page, f"--screenshot={screenshot}")
    assert screenshot.stat().st_size > 10_000
    print(f"\nscreenshot of the page: {screenshot}")
    # The matrix's denied probes (web and cache to db) as denied flows, naming the rule.
    dom = _chromium(tmp_path, page.replace("&matrix=1", ""), "--dump-dom")
    flows_part = dom.split('id="flows"', 1)[1].split('id="explain-section"', 1)[0]
    assert list(Path(small_lab.state_dir).rglob("denied.jsonl")), "the lab wrote no flow records"
    assert "deny-db-8080" in flows_part and "ingress[0]" in flows_part, flows_part
