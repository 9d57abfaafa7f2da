"""calico-lab's command line where nothing runs: refusals before anything starts, ``env``."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from tests.unit.lab.test_lab_logic import make_lab

from pycalico.lab import cli, cluster
from pycalico.lab import state as lab_state


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--nodes", "0"], "--nodes: 0 is out of range (1 to 200)"),
        (["--route-reflectors", "5"], "--route-reflectors: 5 is more than the 3 nodes"),
        (["--route-reflectors", "-1"], "--route-reflectors: -1 is negative"),
    ],
)
def test_up_refuses_before_it_starts_anything(
    tmp_path: Path, args: list[str], message: str
) -> None:
    state_dir = tmp_path / "lab"
    done = CliRunner().invoke(cli.main, ["--state-dir", str(state_dir), "up", *args])
    assert done.exit_code == 1
    assert message in done.output
    assert "Bringing up" not in done.output  # no banner for a lab that is never built
    assert "calico-lab down" not in done.output  # nothing was started
    assert not state_dir.exists()


def test_refusals_are_lab_refused() -> None:
    with pytest.raises(cluster.LabRefused):
        cluster.check_request(nodes=3, route_reflectors=0, etcd_members=2)
    assert issubclass(cluster.LabExists, cluster.LabRefused)


def test_env_prints_the_one_export_line_of_the_docs(tmp_path: Path) -> None:
    lab = make_lab(tmp_path)
    lab_state.save(lab)
    done = CliRunner().invoke(cli.main, ["--state-dir", str(tmp_path), "env"])
    assert done.exit_code == 0
    assert done.output == (f"export DATASTORE_TYPE=etcdv3 ETCD_ENDPOINTS={lab.host_endpoints}\n")


def test_overlay_requests_checked_and_two_subnets_laid_out() -> None:
    from pycalico.lab import layout

    with pytest.raises(layout.LabRefused, match="--subnets 2 needs --encapsulation"):
        layout.check_request(nodes=4, route_reflectors=0, etcd_members=1, subnets=2)
    with pytest.raises(layout.LabRefused, match="--route-reflectors"):
        layout.check_request(
            nodes=4, route_reflectors=1, etcd_members=1, encapsulation="vxlan", subnets=1
        )
    lab = layout.plan(state_dir="/tmp/x", prefix="t", nodes=4, route_reflectors=0,
                      etcd_members=1, ipv6=True, encapsulation="vxlan", subnets=2)  # fmt: skip
    assert [n.address for n in lab.nodes] == ["10.99.0.1", "10.99.0.2", "10.99.1.3", "10.99.1.4"]
    assert lab.nodes[3].address6 == "fd00:99:0:1::4"
    assert (lab.encapsulation, lab.subnets) == ("vxlan", 2)


def test_etcd_quota_reaches_etcd_and_survives_the_state_file(tmp_path: Path) -> None:
    import dataclasses

    lab = make_lab(tmp_path)
    assert "--quota-backend-bytes" not in cluster._etcd_command(lab, lab.etcd[0])
    lab = dataclasses.replace(lab, etcd_quota_bytes=4_000_000)
    lab_state.save(lab)
    loaded = lab_state.load(str(tmp_path))
    assert loaded is not None and loaded.etcd_quota_bytes == 4_000_000
    command = cluster._etcd_command(loaded, loaded.etcd[0])
    assert command[command.index("--quota-backend-bytes") + 1] == "4000000"


def test_kube_drills_refuse_a_lab_without_kubernetes_and_an_unknown_component(
    tmp_path: Path,
) -> None:
    lab_state.save(make_lab(tmp_path))
    done = CliRunner().invoke(
        cli.main, ["--state-dir", str(tmp_path), "kube", "stop", "kube-apiserver"]
    )
    assert done.exit_code == 1
    assert "this lab has no Kubernetes" in done.output
    done = CliRunner().invoke(cli.main, ["--state-dir", str(tmp_path), "kube", "start", "etcd"])
    assert done.exit_code == 2 and "'etcd' is not one of" in done.output
