"""Rendered BIRD configuration against golden files (mesh, reflectors, external peers,
passwords, IPv6), each golden file also accepted by BIRD itself (``bird -p -c``).

Regenerate after an intended change with ``UPDATE_GOLDEN=1 pytest tests/unit/bgp`` and review
the diff like code.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from pycalico.bgp.bird import check_config
from pycalico.bgp.processor import BgpInputs, build
from pycalico.bgp.render import bird_string, render

from .scenarios import GOLDEN

GOLDEN_DIR = Path(__file__).parent / "golden"


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_render_matches_golden(name: str) -> None:
    factory: Callable[[], BgpInputs] = GOLDEN[name]
    text = render(build(factory()))
    path = GOLDEN_DIR / f"{name}.cfg"
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(text)
    assert path.exists(), f"no golden file {path}: run with UPDATE_GOLDEN=1"
    assert text == path.read_text()
    assert text.endswith("\n") and not text.endswith("\n\n")


@pytest.mark.skipif(shutil.which("bird") is None, reason="BIRD is not installed")
@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_bird_accepts_golden(name: str) -> None:
    assert check_config(str(GOLDEN_DIR / f"{name}.cfg")) is None


@pytest.mark.skipif(shutil.which("bird") is None, reason="BIRD is not installed")
def test_check_config_reports_bird_complaint(tmp_path: Path) -> None:
    path = tmp_path / "bad.cfg"
    path.write_text("router id 1.2.3.4;\nprotocol nonsense {}\n")
    problem = check_config(str(path))
    assert problem is not None and "bad.cfg:2" in problem


def test_golden_files_say_what_they_should() -> None:
    mesh = (GOLDEN_DIR / "mesh.cfg").read_text()
    assert "protocol bgp Mesh_10_0_0_1 from bgp_template {" in mesh
    assert mesh.count("passive on;") == 2
    assert "route 192.168.10.0/26 blackhole;" in mesh
    # The pending block is not this node's yet: neither blackholed nor exported.
    assert "192.168.11.0/26" not in mesh
    assert "if ( net ~ 192.168.10.0/26 && krt_metric < 1024 ) then { accept; }" in mesh
    reflector = (GOLDEN_DIR / "route-reflector.cfg").read_text()
    assert reflector.count("rr cluster id 244.0.0.1;") == 2
    passwords = (GOLDEN_DIR / "passwords.cfg").read_text()
    assert 'password "mesh-secret";' in passwords and 'password "t0r s3cret";' in passwords
    external = (GOLDEN_DIR / "external-peers.cfg").read_text()
    assert "neighbor 172.16.5.1 port 1790 as 65001;" in external
    assert "ttl security on;\n  multihop 2;" in external
    assert "calico_export_to_bgp_peers(false);\n      reject;" in external
    assert "if (net ~ 10.99.0.0/16) then { reject; }  # BGP export is disabled." in external
    ipv6 = (GOLDEN_DIR / "ipv6.cfg").read_text()
    assert "protocol bgp Mesh_fd00__3 from bgp_template6 {" in ipv6
    assert "local port 1179 as 64512;" in ipv6


def test_bird_string_refuses_what_bird_cannot_read() -> None:
    assert bird_string("plain text") == "plain text"
    with pytest.raises(ValueError):
        bird_string('a"b')
