"""calico-node run by its path finds calico-felix in its own directory (issue 20 item 3)."""

from __future__ import annotations

from pathlib import Path

from pycalico.node.agent import beside_me


def test_calico_felix_beside_calico_node_is_found(tmp_path: Path) -> None:
    node = tmp_path / "calico-node"
    felix = tmp_path / "calico-felix"
    for path in (node, felix):
        path.write_text("#!/bin/sh\n")
        path.chmod(0o755)
    assert beside_me("calico-felix", str(node)) == str(felix)


def test_nothing_beside_means_none(tmp_path: Path) -> None:
    (tmp_path / "calico-felix").write_text("not executable")
    assert beside_me("calico-felix", str(tmp_path / "calico-node")) is None
    assert beside_me("calico-felix", str(tmp_path / "bin" / "calico-node")) is None
