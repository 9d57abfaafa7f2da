"""The node agent's socket speaks one protocol, the CNI2 frame (the installed executables, and
``entry.run`` through ``agent_protocol.forward``); anything else, or a malformed frame, gets CNI
error JSON in a frame, never a dropped connection."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import pytest

from pycalico.cni import agent_protocol, thin_client
from pycalico.cni.agent_protocol import Response
from pycalico.cni.agent_server import AgentServer

seen: list[tuple[Mapping[str, str], str]] = []


async def echo(env: Mapping[str, str], stdin: str) -> Response:
    seen.append((dict(env), stdin))
    return Response(7, json.dumps({"command": env.get("CNI_COMMAND"), "stdin": stdin}), "note\n")


@pytest.fixture
async def socket_path(tmp_path: Path) -> AsyncIterator[str]:
    seen.clear()
    path = str(tmp_path / "cni.sock")
    server = AgentServer(path, {"calico-ipam": echo})
    await server.start()
    try:
        yield path
    finally:
        await server.close()


async def exchange(path: str, data: bytes, chunk: int = 0) -> bytes:
    reader, writer = await asyncio.open_unix_connection(path)
    try:
        if chunk:  # the request arrives in pieces, as a slow writer's would
            for start in range(0, len(data), chunk):
                writer.write(data[start : start + chunk])
                await writer.drain()
                await asyncio.sleep(0.001)
        else:
            writer.write(data)
        writer.write_eof()
        return await asyncio.wait_for(reader.read(), timeout=10)
    finally:
        writer.close()


@pytest.mark.parametrize("chunk", [0, 1, 7])
async def test_a_frame_is_answered_with_a_frame(socket_path: str, chunk: int) -> None:
    stdin = '{"name": "n\u00e9t"}'
    env = [(b"CNI_COMMAND", b"ADD"), (b"CNI_ARGS", "K8S_POD_NAME=p\u00e9".encode())]
    request = thin_client.encode_request(b"calico-ipam", env, stdin.encode())
    code, stdout, stderr = thin_client.decode_response(await exchange(socket_path, request, chunk))
    assert (code, json.loads(stdout), stderr) == (7, {"command": "ADD", "stdin": stdin}, b"note\n")
    assert seen == [({"CNI_COMMAND": "ADD", "CNI_ARGS": "K8S_POD_NAME=p\u00e9"}, stdin)]


async def test_agent_protocol_forward_speaks_frames(socket_path: str) -> None:
    forwarded = await asyncio.to_thread(
        agent_protocol.forward,
        "calico-ipam",
        {"CNI_COMMAND": "CHECK", "HOME": "/root"},
        "{}",
        socket_path,
    )
    assert forwarded is not None and json.loads(forwarded.stdout)["command"] == "CHECK"
    assert (forwarded.exit_code, forwarded.stderr) == (7, "note\n")
    assert seen == [({"CNI_COMMAND": "CHECK"}, "{}")]


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"CNI2 calico-ipam 5 0\nAB", "truncated"),
        (b"CNI2 calico-ipam x 0\n", "not numbers"),
        (b"CNI2 calico-ipam 3 0\nABC", "without '='"),
        (thin_client.encode_request(b"frobnicate", [], b"{}"), "does not serve plugin"),
        (b'{"protocol": 1, "plugin": "calico-ipam", "env": {}, "stdin": ""}\n', "not a CNI2"),
    ],
)
async def test_a_bad_frame_gets_cni_error_json(socket_path: str, data: bytes, problem: str) -> None:
    code, stdout, _ = thin_client.decode_response(await exchange(socket_path, data))
    error = json.loads(stdout)
    assert code == 1 and error["code"] == 999 and problem in error["msg"], error
    assert seen == []


async def test_a_sandboxs_calls_run_one_at_a_time_even_when_the_caller_is_gone(
    tmp_path: Path,
) -> None:
    """A plugin killed mid-ADD leaves the agent's ADD running; the runtime's DEL that follows
    must start only once that ADD is done (else it undoes half an ADD that then completes)."""
    order: list[str] = []
    release = asyncio.Event()

    async def slow(env: Mapping[str, str], stdin: str) -> Response:
        command = f"{env['CNI_COMMAND']} {env['CNI_CONTAINERID']}"
        order.append(f"{command} starts")
        if env["CNI_COMMAND"] == "ADD":
            await release.wait()
        order.append(f"{command} ends")
        return Response(0, "", "")

    path = str(tmp_path / "cni.sock")
    server = AgentServer(path, {"calico": slow})
    await server.start()

    def request(command: bytes, container: bytes) -> bytes:
        env = [(b"CNI_COMMAND", command), (b"CNI_CONTAINERID", container)]
        return thin_client.encode_request(b"calico", env, b"{}")

    try:
        _, killed = await asyncio.open_unix_connection(path)
        killed.write(request(b"ADD", b"a"))
        await killed.drain()
        while order != ["ADD a starts"]:
            await asyncio.sleep(0.01)
        killed.close()  # the plugin dies; its ADD goes on in the agent
        other = asyncio.create_task(exchange(path, request(b"DEL", b"b")))
        assert thin_client.decode_response(await other)[0] == 0  # another sandbox: not held
        undo = asyncio.create_task(exchange(path, request(b"DEL", b"a")))
        await asyncio.sleep(0.2)  # time in which the DEL would have run, were it not held
        assert "DEL a starts" not in order
        release.set()
        assert thin_client.decode_response(await undo)[0] == 0
        assert order == [
            "ADD a starts", "DEL b starts", "DEL b ends", "ADD a ends", "DEL a starts", "DEL a ends"
        ]  # fmt: skip
        assert not server._sandboxes  # nothing kept once the sandbox's calls are done
    finally:
        await server.close()
