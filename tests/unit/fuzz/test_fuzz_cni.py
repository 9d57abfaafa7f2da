"""Fuzzing what a CNI plugin reads from the runtime (environment and stdin) and what the node
agent reads from its socket (CNI2 frames), with arbitrary input.

Properties:

* ``parse_invocation`` + ``NetConf.parse`` either accept or raise ``CniError`` with a CNI error
  code and a message; a mutated key of a valid network configuration is named in the message;
* the node agent answers every byte sequence a client can send with one well-formed CNI2
  response frame (CNI error JSON for a bad request), never a dropped connection or a crash, and
  keeps serving well-formed requests afterwards.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from pycalico.cni import thin_client
from pycalico.cni.agent_protocol import Response
from pycalico.cni.agent_server import AgentServer
from pycalico.cni.config import NetConf
from pycalico.cni.spec import CniError, parse_invocation

from .budgets import budget

VALID_CONF: dict[str, Any] = {
    "cniVersion": "1.0.0",
    "name": "k8s-pod-network",
    "type": "calico",
    "log_level": "info",
    "datastore_type": "etcdv3",
    "nodename": "node-1",
    "mtu": 1440,
    "ipam": {"type": "calico-ipam", "assign_ipv4": "true", "ipv4_pools": ["10.0.0.0/16"]},
    "policy": {"type": "k8s"},
    "kubernetes": {"kubeconfig": "/etc/cni/net.d/calico-kubeconfig"},
    "feature_control": {"floating_ips": False},
    "container_settings": {"allow_ip_forwarding": False},
}
ENV = {
    "CNI_COMMAND": "ADD",
    "CNI_CONTAINERID": "c1",
    "CNI_NETNS": "/var/run/netns/x",
    "CNI_IFNAME": "eth0",
    "CNI_PATH": "/opt/cni/bin",
    "CNI_ARGS": "K8S_POD_NAMESPACE=default;K8S_POD_NAME=p",
}
json_leaf = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**66), 2**66), st.floats(), st.text(max_size=12)
)
json_value = st.recursive(
    json_leaf,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)


def _read(env: Mapping[str, str], stdin: str) -> None:
    invocation = parse_invocation(env, stdin)
    if invocation.command != "VERSION":
        NetConf.parse(invocation.config)


@budget(300)
@given(
    st.dictionaries(st.sampled_from(sorted(ENV)), st.text(max_size=20), max_size=6),
    st.text(max_size=300) | json_value.map(json.dumps),
)
@example({"CNI_COMMAND": "ADD"}, "{")
@example(ENV, "[]")
@example(ENV, '{"cniVersion": "9.9.9", "name": "n"}')
def test_any_environment_and_stdin_is_read_or_refused(env: dict[str, str], stdin: str) -> None:
    try:
        _read(env, stdin)
    except CniError as error:
        assert error.code > 0 and error.msg


@budget(400)
@given(st.sampled_from(sorted(VALID_CONF)), json_value)
@example("mtu", "1500x")
@example("ipam", [])
@example("name", "")
def test_a_mutated_netconf_key_is_accepted_or_named(key: str, value: Any) -> None:
    conf = dict(VALID_CONF)
    conf[key] = value
    try:
        _read(ENV, json.dumps(conf))
    except CniError as error:
        assert error.code > 0
        # A bad cniVersion is named by its value, as libcni does ("incompatible CNI versions").
        assert key in error.msg or (key == "cniVersion" and "version" in error.msg.lower()), (
            error.msg
        )


# --- the agent socket ------------------------------------------------------------------------


async def _echo(env: Mapping[str, str], stdin: str) -> Response:
    return Response(0, json.dumps({"env": len(env), "stdin": len(stdin)}), "")


@pytest.fixture(scope="module")
def agent_socket(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real AgentServer on its own event loop thread for the whole module."""
    path = str(tmp_path_factory.mktemp("agent") / "cni.sock")
    loop = asyncio.new_event_loop()
    server = AgentServer(path, {"calico": _echo})
    loop.run_until_complete(server.start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield path
    finally:
        asyncio.run_coroutine_threadsafe(server.close(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


def _exchange(path: str, data: bytes) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.settimeout(10)
        client.connect(path)
        try:
            client.sendall(data)
            client.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the agent answered early (bad header) and closed its read side
        answer = b""
        while chunk := client.recv(65536):
            answer += chunk
    return answer


frames = st.one_of(
    st.binary(max_size=300),
    st.builds(
        lambda plugin, env, stdin, cut: thin_client.encode_request(plugin, env, stdin)[:cut],
        st.sampled_from([b"calico", b"calico-ipam", b"x", b""]),
        st.lists(st.tuples(st.binary(max_size=8), st.binary(max_size=8)), max_size=3),
        st.binary(max_size=60),
        st.integers(0, 200),
    ),
    st.builds(
        lambda a, b: b"CNI2 calico %s %s\n" % (a, b), st.binary(max_size=6), st.binary(max_size=6)
    ),
)


@budget(150)
@given(data=frames)
@example(data=b"")
@example(data=b"CNI2 calico 99999999999 0\n")
@example(data=b"CNI2 calico -1 0\n")
@example(data=b"CNI2 calico 1 1\nx")
@example(data=b"CNI2" + b"x" * 400)
def test_agent_answers_every_byte_sequence(agent_socket: str, data: bytes) -> None:
    answer = _exchange(agent_socket, data)
    if not data:
        # A connection that sends nothing (a liveness probe's connect) is closed unanswered.
        assert answer == b""
        return
    code, stdout, _ = thin_client.decode_response(answer)
    if code != 0:
        error = json.loads(stdout)
        assert error["code"] and error["msg"], error
    # And it still serves a well-formed request.
    good = thin_client.encode_request(b"calico", [(b"CNI_COMMAND", b"ADD")], b"{}")
    assert thin_client.decode_response(_exchange(agent_socket, good))[0] == 0
