"""``python -m pycalico.cni.agent_server``: a real command line that refuses bad socket paths
before touching anything (no socket named ``--help``, no directories made)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from pycalico.cni.agent_server import SocketPathError, check_socket_path, main


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pycalico.cni.agent_server", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_help_prints_usage_and_creates_nothing(tmp_path: Path) -> None:
    done = run("--help", cwd=tmp_path)
    assert done.returncode == 0
    assert "--socket" in done.stdout
    assert "CALICO_AGENT_SOCKET" in done.stdout
    assert list(tmp_path.iterdir()) == []


def test_missing_directory_is_refused_and_not_created(tmp_path: Path) -> None:
    path = tmp_path / "no" / "such" / "cni.sock"
    done = run("--socket", str(path), cwd=tmp_path)
    assert done.returncode == 1
    assert f"directory {tmp_path / 'no' / 'such'} does not exist" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "no").exists()


def test_unknown_argument_is_an_error(tmp_path: Path) -> None:
    done = run("cni.sock", cwd=tmp_path)
    assert done.returncode == 2
    assert "unrecognized arguments" in done.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("make", "problem"),
    [
        (lambda p: p.mkdir(), "is a directory"),
        (lambda p: p.write_text("keep me"), "exists and is not a socket"),
    ],
)
def test_existing_non_socket_is_never_replaced(tmp_path: Path, make, problem: str) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "cni.sock"
    make(path)
    with pytest.raises(SocketPathError, match=problem):
        check_socket_path(str(path))
    assert main(["--socket", str(path)]) == 1
    assert path.exists()


def test_a_stale_socket_and_a_fresh_path_are_accepted(tmp_path: Path) -> None:
    fresh = tmp_path / "fresh.sock"
    check_socket_path(str(fresh))
    stale = tmp_path / "stale.sock"
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(stale))
    listener.close()
    check_socket_path(str(stale))
    with pytest.raises(SocketPathError, match="starts with '-'"):
        check_socket_path("--help")
    assert os.listdir(tmp_path) == ["stale.sock"]
