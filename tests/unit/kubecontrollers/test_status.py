"""The status file and Calico's check-status -r / -l, through the executable's entry point."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pycalico.kubecontrollers.main import main
from pycalico.kubecontrollers.status import StatusFile, check


def test_status_file_has_calicos_shape(tmp_path: Path) -> None:
    path = tmp_path / "status" / "status.json"
    status = StatusFile(path)
    status.set_ready("Startup", True)
    status.set_ready("CalicoDatastore", False, "Error verifying datastore: refused")
    assert json.loads(path.read_text()) == {
        "Readiness": {
            "Startup": {"Ready": True, "Reason": ""},
            "CalicoDatastore": {"Ready": False, "Reason": "Error verifying datastore: refused"},
        }
    }
    assert not status.ready()
    assert check(path) == (False, "Error verifying datastore: refused")
    status.set_ready("CalicoDatastore", True)
    assert status.ready()
    assert check(path) == (True, "Ready")
    assert [p.name for p in path.parent.iterdir()] == ["status.json"]  # no temporary left


def test_no_conditions_and_no_file_are_not_ready(tmp_path: Path) -> None:
    (tmp_path / "empty.json").write_text('{"Readiness": {}}')
    assert check(tmp_path / "empty.json") == (False, "")
    ready, line = check(tmp_path / "missing.json")
    assert not ready
    assert line.startswith(f"Failed to read status file {tmp_path / 'missing.json'}")


@pytest.mark.parametrize("flag", ["-r", "-l"])
def test_check_flags_exit_codes(
    tmp_path: Path, flag: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "status.json"
    status = StatusFile(path)
    status.set_ready("KubeAPIServer", False, "Error reaching apiserver: timeout")
    assert main([flag, "--status-file", str(path)]) == 1
    assert capsys.readouterr().out == "Error reaching apiserver: timeout\n"
    status.set_ready("KubeAPIServer", True)
    assert main([flag, "-f", str(path)]) == 0
    assert capsys.readouterr().out == "Ready\n"


def test_bad_configuration_exits_1_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setenv("DATASTORE_TYPE", "kubernetes")
    assert main(["--status-file", str(tmp_path / "s.json")]) == 1
    assert "DATASTORE_TYPE=kubernetes is not supported" in capsys.readouterr().err
    monkeypatch.setenv("DATASTORE_TYPE", "etcdv3")
    monkeypatch.delenv("KUBECONFIG", raising=False)
    assert main(["--status-file", str(tmp_path / "s.json")]) == 1
    assert "KUBECONFIG" in capsys.readouterr().err
