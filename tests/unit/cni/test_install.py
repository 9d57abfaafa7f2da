"""install-cni: executables and a conflist into chosen directories; templates as Calico's."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from pycalico.cni.install import InstallOptions, install, options_from, render_conflist


def test_install_into_chosen_directories(tmp_path: Path) -> None:
    options = InstallOptions(
        bin_dir=str(tmp_path / "bin"),
        conf_dir=str(tmp_path / "net.d"),
        nodename="node-7",
        etcd_endpoints="http://127.0.0.1:1234",
        agent_socket=str(tmp_path / "node-7.sock"),
        with_reference_plugins=os.path.exists("/usr/lib/cni/portmap"),
    )
    written = install(options)
    conflist = json.loads((tmp_path / "net.d" / "10-calico.conflist").read_text())
    assert [p["type"] for p in conflist["plugins"]] == ["calico", "portmap", "bandwidth"]
    calico = conflist["plugins"][0]
    assert calico["nodename"] == "node-7" and calico["ipam"] == {"type": "calico-ipam"}
    assert calico["etcd_endpoints"] == "http://127.0.0.1:1234"
    assert str(tmp_path / "bin" / "calico") in written
    for name in ("calico", "calico-ipam"):
        binary = tmp_path / "bin" / name
        assert os.access(binary, os.X_OK)
        done = subprocess.run(
            [str(binary)],
            input='{"cniVersion": "0.4.0"}',
            capture_output=True,
            text=True,
            env={"CNI_COMMAND": "VERSION"},
            timeout=30,
        )
        assert done.returncode == 0, done.stderr
        assert "1.1.0" in json.loads(done.stdout)["supportedVersions"]
    assert str(tmp_path / "node-7.sock") in (tmp_path / "bin" / "calico").read_text()


def test_template_placeholders_and_bad_template(tmp_path: Path) -> None:
    template = '{"name": "k", "cniVersion": "0.3.1", "plugins": [{"type": "calico", "mtu": __CNI_MTU__, "nodename": "__KUBERNETES_NODE_NAME__"}]}'
    text = render_conflist(InstallOptions(template=template, mtu=1410, nodename="n"))
    assert json.loads(text)["plugins"][0] == {"type": "calico", "mtu": 1410, "nodename": "n"}
    options = InstallOptions(
        template="{not json __CNI_MTU__", conf_dir=str(tmp_path / "c"), bin_dir=str(tmp_path / "b")
    )
    with pytest.raises(ValueError, match="CNI_NETWORK_CONFIG"):
        install(options)
    assert not (tmp_path / "c").exists()


def test_options_from_environment() -> None:
    options = options_from(["--bin-dir", "/x"], {"CNI_MTU": "1400", "CNI_NETWORK_CONFIG": "{}"})
    assert (options.bin_dir, options.mtu, options.template) == ("/x", 1400, "{}")


def test_every_option_of_the_help_says_what_it_is() -> None:
    from pycalico.cni.install import build_parser

    parser = build_parser({})
    options = [action for action in parser._actions if action.option_strings]
    assert len(options) >= 19
    undescribed = [a.option_strings[0] for a in options if not (a.help or "").strip()]
    assert undescribed == []
