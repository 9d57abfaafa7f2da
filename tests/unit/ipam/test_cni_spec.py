"""CNI wire formats (pycalico.cni.spec) and the agent socket protocol, without processes."""

from __future__ import annotations

import json
import socket
import threading
from pathlib import Path

import pytest

from pycalico.cni import agent_protocol, thin_client
from pycalico.cni.agent_protocol import ProtocolError, Response, forward
from pycalico.cni.spec import (
    CniError,
    IPConfig,
    Result,
    Route,
    config_flag,
    determine_nodename,
    error_result,
    parse_cni_args,
    parse_invocation,
    render_result,
)

ENV = {
    "CNI_COMMAND": "ADD",
    "CNI_CONTAINERID": "abc",
    "CNI_NETNS": "/var/run/netns/x",
    "CNI_IFNAME": "eth0",
    "CNI_PATH": "/opt/cni/bin",
    "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAME=web-0;K8S_POD_NAMESPACE=default",
}
CONF = json.dumps({"cniVersion": "0.4.0", "name": "k8s-pod-network", "ipam": {"type": "x"}})


def test_invocation_parsing() -> None:
    invocation = parse_invocation(ENV, CONF)
    assert invocation.command == "ADD"
    assert invocation.args["K8S_POD_NAME"] == "web-0"
    assert invocation.cni_version == "0.4.0"
    assert invocation.network_name == "k8s-pod-network"
    assert parse_invocation(ENV, json.dumps({"name": "n"})).cni_version == "0.2.0"


@pytest.mark.parametrize(
    ("env", "stdin", "code", "text"),
    [
        ({**ENV, "CNI_COMMAND": ""}, CONF, 4, "CNI_COMMAND"),
        ({**ENV, "CNI_COMMAND": "FROB"}, CONF, 4, "unknown CNI_COMMAND"),
        ({k: v for k, v in ENV.items() if k != "CNI_NETNS"}, CONF, 4, "CNI_NETNS"),
        (ENV, "{not json", 6, "failed to load netconf"),
        ({**ENV, "CNI_ARGS": "novalue"}, CONF, 6, "CNI_ARGS"),
        (ENV, json.dumps({"cniVersion": "2.0.0"}), 1, "incompatible CNI versions"),
    ],
)
def test_invocation_errors(env: dict[str, str], stdin: str, code: int, text: str) -> None:
    with pytest.raises(CniError) as info:
        parse_invocation(env, stdin)
    assert info.value.code == code and text in info.value.msg


def test_result_shapes_per_version() -> None:
    result = Result(
        ips=[IPConfig("10.65.0.5/26"), IPConfig("fd00::5/122")], routes=[Route("0.0.0.0/0")]
    )
    old = render_result(result, "0.2.0")
    assert old == {
        "cniVersion": "0.2.0",
        "ip4": {"ip": "10.65.0.5/26", "routes": [{"dst": "0.0.0.0/0"}]},
        "ip6": {"ip": "fd00::5/122"},
        "dns": {},
    }
    middle = render_result(result, "0.3.1")
    assert middle["ips"] == [
        {"version": "4", "address": "10.65.0.5/26"},
        {"version": "6", "address": "fd00::5/122"},
    ]
    new = render_result(result, "1.0.0")
    assert new["ips"] == [{"address": "10.65.0.5/26"}, {"address": "fd00::5/122"}]
    assert new["routes"] == [{"dst": "0.0.0.0/0"}]
    for rendered in (old, middle, new):
        assert [ip.address for ip in Result.from_json(rendered).ips] == [
            "10.65.0.5/26",
            "fd00::5/122",
        ]


def test_error_json_and_flags_and_nodename() -> None:
    body = error_result(CniError("boom", code=7), "0.3.1")
    assert body == {"cniVersion": "0.3.1", "code": 7, "msg": "boom", "details": ""}
    assert error_result(CniError("x"), None)["code"] == 999
    assert config_flag("true", False) and not config_flag("false", True)
    assert config_flag(None, True) and config_flag(True, False)
    assert determine_nodename({"nodename": "a"}, "b", "c") == "a"
    assert determine_nodename({}, "b\n", "c") == "b"
    assert determine_nodename({"hostname": "h"}, None, "c") == "h"
    assert determine_nodename({}, None, "MyHost") == "myhost"
    assert parse_cni_args("A=1;;B=x=y") == {"A": "1", "B": "x=y"}


def test_forwarded_env() -> None:
    env = agent_protocol.forwarded_env({"CNI_X": "1", "ETCD_ENDPOINTS": "e", "SECRET": "s"})
    assert env == {"CNI_X": "1", "ETCD_ENDPOINTS": "e"}


def test_forward_falls_back_only_when_nobody_listens(tmp_path: Path) -> None:
    path = str(tmp_path / "agent.sock")
    assert forward("calico-ipam", {}, "{}", path) is None  # no socket file
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    assert forward("calico-ipam", {}, "{}", path) is None  # file, but not listening
    server.listen(1)
    seen: list[tuple[str, dict[str, str], str]] = []

    def answer(reply: bytes) -> None:
        connection, _ = server.accept()
        with connection:
            seen.append(thin_client.decode_request(thin_client.receive(connection)))
            connection.sendall(reply)

    def call(reply: bytes) -> Response | None:
        thread = threading.Thread(target=answer, args=(reply,))
        thread.start()
        try:
            return forward("calico-ipam", {"CNI_COMMAND": "DEL", "HOME": "/root"}, "{}", path)
        finally:
            thread.join(5)

    try:
        got = call(thin_client.encode_response(0, b'{"ok":true}', b""))
        assert got == Response(0, '{"ok":true}')
        assert seen[0] == ("calico-ipam", {"CNI_COMMAND": "DEL"}, "{}")
        with pytest.raises(ProtocolError, match="bad frame"):
            call(b'{"protocol": 1, "exit_code": 0}\n')
    finally:
        server.close()
