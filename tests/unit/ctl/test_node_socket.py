"""Which BIRD control socket ``calicoctl node status`` asks: the option, the environment, the
usual paths, then the BIRD of calicoctl's own network namespace (a lab node)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pycalico.ctl.node import DEFAULT_SOCKETS, bird_socket_in_this_namespace, socket_path


def _process(proc: Path, pid: str, argv: list[str], net: Path) -> None:
    """A fake /proc/<pid>: its command line, and its network namespace as a hard link to
    ``net`` (same inode = same namespace, as the kernel's nsfs reports it)."""
    (proc / pid / "ns").mkdir(parents=True)
    (proc / pid / "cmdline").write_bytes(b"\0".join(w.encode() for w in argv) + b"\0")
    os.link(net, proc / pid / "ns" / "net")


@pytest.fixture
def proc(tmp_path: Path) -> Path:
    root = tmp_path / "proc"
    (root / "self" / "ns").mkdir(parents=True)
    (tmp_path / "net-mine").write_text("")
    (tmp_path / "net-other").write_text("")
    os.link(tmp_path / "net-mine", root / "self" / "ns" / "net")
    return root


def test_the_bird_of_this_network_namespace_is_found(proc: Path, tmp_path: Path) -> None:
    _process(proc, "10", ["bird", "-f", "-s", "/elsewhere/bird.ctl"], tmp_path / "net-other")
    _process(proc, "11", ["python3", "-s", "/not/bird.ctl"], tmp_path / "net-mine")
    _process(
        proc, "12", ["/usr/sbin/bird", "-f", "-R", "-s", "/lab/n1/bird.ctl"], tmp_path / "net-mine"
    )
    assert bird_socket_in_this_namespace(str(proc)) == "/lab/n1/bird.ctl"


def test_no_bird_here_means_the_default_path(
    proc: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CALICO_BIRD_SOCKET", raising=False)
    _process(proc, "10", ["bird", "-s", "/elsewhere/bird.ctl"], tmp_path / "net-other")
    assert bird_socket_in_this_namespace(str(proc)) is None
    if not any(os.path.exists(path) for path in DEFAULT_SOCKETS):
        assert socket_path(None, proc=str(proc)) == DEFAULT_SOCKETS[0]


def test_option_and_environment_come_first(
    proc: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _process(proc, "12", ["bird", "-s", "/lab/n1/bird.ctl"], tmp_path / "net-mine")
    monkeypatch.setenv("CALICO_BIRD_SOCKET", "/from/env.ctl")
    assert socket_path("/given.ctl", proc=str(proc)) == "/given.ctl"
    assert socket_path(None, proc=str(proc)) == "/from/env.ctl"
    monkeypatch.delenv("CALICO_BIRD_SOCKET")
    if not any(os.path.exists(path) for path in DEFAULT_SOCKETS):
        assert socket_path(None, proc=str(proc)) == "/lab/n1/bird.ctl"
