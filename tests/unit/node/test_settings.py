"""calico-node's settings from the environment, node naming, restart backoff, paths, Felix."""

from __future__ import annotations

from pathlib import Path

import pytest

from pycalico.node.agent import (
    INITIAL_BACKOFF,
    MAX_BACKOFF,
    NodePaths,
    felix_command,
    next_backoff,
)
from pycalico.node.autodetect import Interface
from pycalico.node.startup import (
    StartupError,
    StartupSettings,
    node_name,
    resolve_address,
)


def test_node_name_precedence(tmp_path: Path) -> None:
    nodename = tmp_path / "nodename"
    assert node_name({"NODENAME": "a", "HOSTNAME": "B"}, str(nodename)) == "a"
    nodename.write_text("from-file\n")
    assert node_name({"HOSTNAME": "B"}, str(nodename)) == "from-file"
    assert node_name({"HOSTNAME": "Mixed-Case"}, str(tmp_path / "missing")) == "mixed-case"


def test_settings_defaults_and_values(tmp_path: Path) -> None:
    settings = StartupSettings.from_env(
        {"NODENAME": "n1", "CALICO_NODENAME_FILE": str(tmp_path / "f")}
    )
    assert settings.ip == "autodetect" and settings.ip6 is None
    assert settings.ip_method == "first-found" and settings.backend == "bird"
    assert settings.ipv4_pool_ipip == "Never" and settings.ipv4_pool_nat_outgoing
    assert not settings.no_default_pools
    custom = StartupSettings.from_env(
        {
            "NODENAME": "n1",
            "IP": "10.0.0.1/24",
            "AS": "65001",
            "CALICO_NETWORKING_BACKEND": "none",
            "CALICO_IPV4POOL_CIDR": "10.70.0.0/16",
            "CALICO_IPV4POOL_BLOCK_SIZE": "28",
            "NO_DEFAULT_POOLS": "true",
        }
    )
    assert custom.ip == "10.0.0.1/24" and custom.as_number == "65001"
    assert custom.ipv4_block_size == 28 and custom.no_default_pools and custom.backend == "none"
    with pytest.raises(StartupError, match="CALICO_IPV4POOL_BLOCK_SIZE"):
        StartupSettings.from_env({"NODENAME": "n", "CALICO_IPV4POOL_BLOCK_SIZE": "big"})


def test_explicit_addresses() -> None:
    interfaces = [Interface("eth0", ("10.0.0.5/24",))]
    assert resolve_address("10.0.0.5", "first-found", 4, interfaces) == "10.0.0.5/24"
    assert resolve_address("10.9.9.9/16", "first-found", 4, interfaces) == "10.9.9.9/16"
    assert resolve_address("none", "first-found", 4, interfaces) is None
    assert resolve_address(None, "first-found", 6, interfaces) is None
    assert resolve_address("autodetect", "interface=eth0", 4, interfaces) == "10.0.0.5/24"
    with pytest.raises(StartupError, match="IP6"):
        resolve_address("10.0.0.5", "first-found", 6, interfaces)


def test_backoff_doubles_caps_and_resets() -> None:
    wait = next_backoff(None, 0.1)
    assert wait == INITIAL_BACKOFF
    waits = [wait]
    for _ in range(8):
        waits.append(next_backoff(waits[-1], 0.1))
    assert waits[:4] == [0.5, 1.0, 2.0, 4.0] and waits[-1] == MAX_BACKOFF
    assert next_backoff(MAX_BACKOFF, 60.0) == INITIAL_BACKOFF  # it ran long enough: start over


def test_paths_are_per_node() -> None:
    paths = NodePaths.from_env({"CALICO_RUN_DIR": "/tmp/n1/run", "CALICO_LOG_DIR": "/tmp/n1/log"})
    assert paths.bird_socket == "/tmp/n1/run/bird.ctl"
    assert paths.agent_socket == "/tmp/n1/run/cni.sock"
    assert paths.bird_config == "/etc/calico/confd/config/bird.cfg"
    default = NodePaths.from_env({})
    assert default.bird_socket == "/var/run/calico/bird.ctl"


def test_felix_is_optional(tmp_path: Path) -> None:
    assert felix_command({"CALICO_DISABLE_FELIX": "true"}) is None
    fake = tmp_path / "calico-felix"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    assert felix_command({"CALICO_FELIX_BINARY": str(fake)}) == [str(fake)]
