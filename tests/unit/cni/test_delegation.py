"""Reading a delegated plugin's answer: results pass, errors keep the plugin's code."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pycalico.cni.agent_protocol import Response
from pycalico.cni.delegation import checked, exec_plugin, find_plugin
from pycalico.cni.spec import CniError


def test_result_and_errors() -> None:
    assert checked("host-local", Response(0, '{"ips": []}')) == {"ips": []}
    error = {"cniVersion": "1.0.0", "code": 11, "msg": "busy", "details": "d"}
    with pytest.raises(CniError) as caught:
        checked("host-local", Response(1, json.dumps(error)))
    assert (caught.value.code, caught.value.msg, caught.value.details) == (
        11,
        "host-local: busy",
        "d",
    )
    with pytest.raises(CniError, match="exit 2"):
        checked("x", Response(2, "", "crashed"))
    with pytest.raises(CniError, match="not a JSON object"):
        checked("x", Response(0, "[1]"))


def test_plugins_are_found_on_cni_path_only(tmp_path: Path) -> None:
    plugin = tmp_path / "echo-ipam"
    plugin.write_text('#!/bin/sh\necho "{\\"cmd\\": \\"$CNI_COMMAND\\"}"\n')
    plugin.chmod(0o755)
    assert find_plugin("echo-ipam", f"/nonexistent:{tmp_path}") == str(plugin)
    with pytest.raises(CniError) as caught:
        find_plugin("echo-ipam", "/usr/lib/nothing")
    assert caught.value.code == 7


async def test_exec_passes_environment_and_stdin(tmp_path: Path) -> None:
    plugin = tmp_path / "cat-ipam"
    plugin.write_text('#!/bin/sh\necho "$CNI_COMMAND" >&2\ncat\n')
    plugin.chmod(0o755)
    response = await exec_plugin(
        "cat-ipam", {"CNI_PATH": str(tmp_path), "CNI_COMMAND": "ADD"}, '{"a": 1}'
    )
    assert (response.exit_code, response.stdout, response.stderr) == (0, '{"a": 1}', "ADD\n")
