"""The calicoctl command line in-process: argument errors, kind aliases, exit codes.

The datastore is the in-memory ``MemoryKVStore`` fake (shipped in ``pycalico.testing``) under the
real ``ResourceStore``; the real-etcd behaviour is covered in ``tests/integration/ctl``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from pycalico.ctl import client
from pycalico.ctl.main import cli
from pycalico.datastore.resources import ResourceStore
from pycalico.testing.memory_kv import MemoryKVStore

REPO = Path(__file__).resolve().parents[3]
POOLS = str(REPO / "examples" / "pools.yaml")


@pytest.fixture
def memory(monkeypatch: pytest.MonkeyPatch) -> Iterator[MemoryKVStore]:
    kv = MemoryKVStore()

    def run(config_file: str | None, work: Callable[[ResourceStore], Awaitable[Any]]) -> Any:
        return asyncio.run(work(ResourceStore(kv)))  # type: ignore[arg-type]

    monkeypatch.setattr(client, "run", run)
    yield kv


def calicoctl(*args: str, stdin: str | None = None) -> Any:
    return CliRunner().invoke(cli, list(args), input=stdin)


@pytest.mark.parametrize(
    "alias", ["ippool", "ippools", "IPPool", "IPPOOLS", "ipp", "ipps", "pool", "pools"]
)
def test_kind_aliases_resolve_to_the_same_kind(memory: MemoryKVStore, alias: str) -> None:
    assert calicoctl("apply", "-f", POOLS).exit_code == 0
    result = calicoctl("get", alias)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0].split() == ["NAME", "CIDR", "SELECTOR"]
    assert [line.split()[0] for line in result.stdout.splitlines()[1:3]] == [
        "default-ipv4-ippool",
        "reserved",
    ]


@pytest.mark.parametrize(
    ("alias", "kind"),
    [
        ("gnp", "GlobalNetworkPolicy"),
        ("policy", "NetworkPolicy"),
        ("pol", "NetworkPolicy"),
        ("hep", "HostEndpoint"),
        ("weps", "WorkloadEndpoint"),
        ("bgpconfig", "BGPConfiguration"),
        ("bgpp", "BGPPeer"),
        ("felixconfig", "FelixConfiguration"),
        ("clusterinfo", "ClusterInformation"),
        ("no", "Node"),
        ("tiers", "Tier"),
        ("pro", "Profile"),
        ("ipamconfig", "IPAMConfiguration"),
        ("netsets", "NetworkSet"),
        ("kubecontrollersconfig", "KubeControllersConfiguration"),
    ],
)
def test_aliases_name_their_kind_in_list_output(
    memory: MemoryKVStore, alias: str, kind: str
) -> None:
    result = calicoctl("get", alias, "-o", "yaml")
    assert result.exit_code == 0, result.output
    assert f"kind: {kind}List" in result.stdout


def test_unknown_kind(memory: MemoryKVStore) -> None:
    result = calicoctl("get", "somekind", "somename")
    assert result.exit_code == 1
    assert result.stderr == "Failed to get resources: resource type 'somekind' is not supported\n"
    result = calicoctl("delete", "somekind", "x")
    assert result.exit_code == 1
    assert result.stderr == "resource type 'somekind' is not supported\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["get", "ippool", "-o", "xml"], "unrecognized output format 'xml'"),
        (["get", "ippool", "x", ""], "resource name may not be empty"),
        (["delete", "ippool", ""], "resource name may not be empty"),
        (["label", "ippool", "x", "a=b=c"], "invalid label a=b=c"),
        (["label", "ippool", "x", "a", "--remove", "--overwrite"], "cannot be used together"),
        (["delete"], "delete needs -f FILE, or a KIND and at least one NAME"),
        (["delete", "ippool"], "delete needs -f FILE"),
        (["apply"], "Missing option '-f'"),
        (["get"], "'calicoctl get' needs a KIND"),
        (["get", "ippool", "--bogus"], "--bogus"),
        (["frobnicate"], "No such command 'frobnicate'"),
        (["-l", "loud", "get", "ippool"], "Unknown log level: loud"),
    ],
)
def test_argument_errors_exit_1_on_stderr(
    memory: MemoryKVStore, args: list[str], message: str
) -> None:
    result = calicoctl(*args)
    assert result.exit_code == 1, result.output
    assert message in result.stderr
    assert result.stdout == ""


def test_usage_errors_say_what_was_typed_like_calicoctl(memory: MemoryKVStore) -> None:
    result = calicoctl("get", "ippool", "--bogus")
    assert "Invalid option: 'calicoctl get ippool --bogus'." in result.stderr
    assert "Use flag '--help' to read about a specific subcommand." in result.stderr


def test_validate_needs_no_datastore(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_datastore(*_: Any) -> Any:
        raise AssertionError("validate must not touch the datastore")

    monkeypatch.setattr(client, "run", no_datastore)
    result = calicoctl("validate", "-f", POOLS)
    assert result.exit_code == 0
    assert result.stdout == "Successfully validated 2 'IPPool' resource(s)\n"
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: p}\n"
        "spec: {cidr: 10.0.0.1/24}\n"
    )
    result = calicoctl("validate", "-f", str(bad))
    assert result.exit_code == 1
    assert f"{bad} document 1 (IPPool 'p'): spec.cidr:" in result.stderr


def test_stdin_and_empty_input(memory: MemoryKVStore, tmp_path: Path) -> None:
    result = calicoctl("create", "-f", "-", stdin=Path(POOLS).read_text())
    assert result.stdout == "Successfully created 2 'IPPool' resource(s)\n"
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing\n")
    result = calicoctl("apply", "-f", str(empty))
    assert result.exit_code == 1
    assert result.stderr == f"No resources specified in file {empty}\n"
    assert calicoctl("apply", "--skip-empty", "-f", str(empty)).stdout == (
        "No resources specified\n"
    )
    result = calicoctl("apply", "-f", str(tmp_path / "missing.yaml"))
    assert result.exit_code == 1 and "missing.yaml" in result.stderr


def test_directory_input(memory: MemoryKVStore) -> None:
    result = calicoctl("validate", "-f", str(REPO / "examples"))
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("Successfully validated ")


def test_ipam_group_is_registered_lazily() -> None:
    result = calicoctl("--help")
    assert "ipam" in result.stdout
    assert calicoctl("ipam", "--help").exit_code == 0
