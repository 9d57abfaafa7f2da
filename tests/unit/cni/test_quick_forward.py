"""The installed executables' usual path (``agent_protocol.quick_forward``) against a stub agent:
it must send exactly what ``forward`` sends, print the answer as ``entry.run`` does, and turn a
missing or malformed answer into CNI error JSON without working in-process."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from pycalico.cni.agent_protocol import Request, Response, forwarded_env
from pycalico.cni.install import InstallOptions, client_python, install


class StubAgent:
    """Answers every connection with ``reply`` (bytes, sent as is) and keeps the requests."""

    def __init__(self, path: Path, reply: bytes) -> None:
        self.reply = reply
        self.requests: list[bytes] = []
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(path))
        self.listener.listen(8)
        self.listener.settimeout(0.2)
        self.stopping = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stopping:
            try:
                connection, _ = self.listener.accept()
            except TimeoutError:
                continue
            with connection:
                data = b""
                while not data.endswith(b"\n"):
                    chunk = connection.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                self.requests.append(data)
                connection.sendall(self.reply)

    def stop(self) -> None:
        self.stopping = True
        self.thread.join(timeout=5)
        self.listener.close()


@pytest.fixture(params=["client-python", "own-python"])
def plugin(tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """The executable as installed by default (started by ``client_python``, which re-executes
    on pycalico's interpreter for in-process work) and started by pycalico's own interpreter."""
    client = sys.executable if request.param == "own-python" else ""
    options = InstallOptions(
        bin_dir=str(tmp_path / "bin"), conf_dir=str(tmp_path / "net.d"), client=client
    )
    install(options)
    path = tmp_path / "bin" / "calico-ipam"
    first = path.read_text().splitlines()[0]
    assert first == f"#!{client or client_python(sys.executable)} " + (
        "-S" if first.startswith(f"#!{sys.executable}") else "-IS"
    )
    return str(path)


@pytest.fixture
def agent_path(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "agent.sock"


def run(plugin: str, env: dict[str, str], stdin: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [plugin], input=stdin, env=env, capture_output=True, text=True, timeout=30
    )


def call_env(agent_path: Path) -> dict[str, str]:
    return {
        "CNI_COMMAND": "ADD",
        "CNI_CONTAINERID": "c-1",
        "CNI_NETNS": "/var/run/netns/c-1",
        "CNI_IFNAME": "eth0",
        "CNI_PATH": "/opt/cni/bin",
        "CNI_ARGS": 'K8S_POD_NAME=p\u00e9;X="q"',
        "ETCD_ENDPOINTS": "http://127.0.0.1:2379",
        "CALICO_AGENT_SOCKET": str(agent_path),
        "NODENAME": "node-1",
        "HOME": "/root",  # not forwarded
    }


def test_sends_what_forward_sends_and_prints_the_answer(plugin: str, agent_path: Path) -> None:
    agent = StubAgent(agent_path, Response(3, '{"cniVersion":"1.0.0"}', "careful\n").encode())
    try:
        env = call_env(agent_path)
        stdin = '{"cniVersion": "1.0.0",\n "name": "k8s-pod-network", "x": "\\u00e9\\t"}'
        done = run(plugin, env, stdin)
    finally:
        agent.stop()
    assert (done.returncode, done.stdout, done.stderr) == (
        3,
        '{"cniVersion":"1.0.0"}\n',
        "careful\n",
    )
    assert len(agent.requests) == 1
    assert Request.decode(agent.requests[0]) == Request("calico-ipam", forwarded_env(env), stdin)
    assert agent.requests[0] == Request("calico-ipam", forwarded_env(env), stdin).encode()


@pytest.mark.parametrize(
    ("reply", "message"),
    [
        (b"", "closed the connection without an answer"),
        (b"this is not json\n", "not a JSON line"),
        (b'{"protocol": 2, "exit_code": 0}\n', "unsupported protocol version 2"),
    ],
)
def test_a_bad_answer_is_a_cni_error_not_a_retry(
    plugin: str, agent_path: Path, reply: bytes, message: str
) -> None:
    agent = StubAgent(agent_path, reply)
    try:
        done = run(plugin, call_env(agent_path), "{}")
    finally:
        agent.stop()
    assert done.returncode == 1
    error = json.loads(done.stdout)
    assert error["code"] == 999 and message in error["msg"], error
    assert done.stderr.startswith("calico-ipam: ")
    assert len(agent.requests) == 1


def test_a_json_answer_in_another_layout_is_understood(plugin: str, agent_path: Path) -> None:
    reply = b'{"stderr": "", "stdout": "{}", "exit_code": 0, "protocol": 1}\n'
    agent = StubAgent(agent_path, reply)
    try:
        done = run(plugin, call_env(agent_path), "{}")
    finally:
        agent.stop()
    assert (done.returncode, done.stdout) == (0, "{}\n")


def test_without_an_agent_the_call_is_served_in_process(plugin: str, agent_path: Path) -> None:
    env = call_env(agent_path)  # nobody listens on agent_path
    del env["CNI_NETNS"]
    done = run(plugin, env, '{"cniVersion": "1.0.0", "name": "n", "ipam": {}}')
    assert done.returncode == 1
    assert "CNI_NETNS" in json.loads(done.stdout)["msg"]  # the in-process handler's check
    assert not os.path.exists(agent_path)
