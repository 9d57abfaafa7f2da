"""The installed executables' usual path (``thin_client.forward``) against a stub agent: it must
send the forwarded environment and stdin byte for byte in a CNI2 frame, print the answer as
``entry.run`` does, and turn a missing or malformed answer into CNI error JSON without working
in-process.  Also the frame codec on its own."""

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
from hypothesis import given
from hypothesis import strategies as st

from pycalico.cni import thin_client
from pycalico.cni.agent_protocol import forwarded_env
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
                while True:
                    needed = thin_client.frame_length(data) if data else None
                    if needed is not None and len(data) >= needed:
                        break
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


def test_sends_the_call_in_a_frame_and_prints_the_answer(plugin: str, agent_path: Path) -> None:
    reply = thin_client.encode_response(3, b'{"cniVersion":"1.0.0"}', b"careful\n")
    agent = StubAgent(agent_path, reply)
    try:
        env = call_env(agent_path)
        stdin = '{"cniVersion": "1.0.0",\n "name": "k8s-pod-network", "x": "\\u00e9\\t\u00e9"}'
        done = run(plugin, env, stdin)
    finally:
        agent.stop()
    assert (done.returncode, done.stdout, done.stderr) == (
        3,
        '{"cniVersion":"1.0.0"}\n',
        "careful\n",
    )
    assert len(agent.requests) == 1
    name, sent_env, sent_stdin = thin_client.decode_request(agent.requests[0])
    assert (name, sent_env, sent_stdin) == ("calico-ipam", forwarded_env(env), stdin)


@pytest.mark.parametrize(
    ("reply", "message"),
    [
        (b"", "closed the connection without an answer"),
        (b"this is not a frame\n", "not a CNI2 frame"),
        (b"CNI2 0 10 0\nshort", "truncated"),
        (b'{"protocol": 1, "exit_code": 0, "stdout": "", "stderr": ""}\n', "not a CNI2 frame"),
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
    assert str(agent_path) in error["msg"]
    assert done.stderr.startswith("calico-ipam: ")
    assert len(agent.requests) == 1


def test_without_an_agent_the_call_is_served_in_process(plugin: str, agent_path: Path) -> None:
    env = call_env(agent_path)  # nobody listens on agent_path
    del env["CNI_NETNS"]
    done = run(plugin, env, '{"cniVersion": "1.0.0", "name": "n", "ipam": {}}')
    assert done.returncode == 1
    assert "CNI_NETNS" in json.loads(done.stdout)["msg"]  # the in-process handler's check
    assert not os.path.exists(agent_path)


text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)
# An environment value can hold anything but NUL (the kernel's separator, and the frame's).
env_text = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"), max_size=40
)
names = st.text(st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZ_0123456789"), min_size=1, max_size=12)


@given(st.dictionaries(names, env_text, max_size=6), st.binary(max_size=200).map(bytes.hex) | text)
def test_request_frames_round_trip(env: dict[str, str], stdin: str) -> None:
    pairs = [(k.encode(), v.encode()) for k, v in env.items()]
    frame = thin_client.encode_request(b"calico", pairs, stdin.encode())
    assert thin_client.frame_length(frame) == len(frame)
    assert thin_client.frame_length(frame[: frame.index(b"\n")]) is None
    assert thin_client.decode_request(frame) == ("calico", env, stdin)


@given(st.integers(0, 255), st.binary(max_size=300), st.binary(max_size=300))
def test_response_frames_round_trip(code: int, stdout: bytes, stderr: bytes) -> None:
    frame = thin_client.encode_response(code, stdout, stderr)
    assert thin_client.frame_length(frame) == len(frame)
    assert thin_client.decode_response(frame) == (code, stdout, stderr)


@pytest.mark.parametrize(
    "data",
    [b"CNI2 calico 1\n", b"CNI2 calico x 1\n", b"CNI2 calico -1 0\n", b"CNI9 a 0 0\n", b"C" * 300],
)
def test_malformed_headers_are_refused(data: bytes) -> None:
    with pytest.raises(thin_client.FrameError):
        thin_client.frame_length(data)


@given(text)
def test_error_json_is_what_json_dumps_would_parse(message: str) -> None:
    assert json.loads(thin_client.error_json(message))["msg"] == message
