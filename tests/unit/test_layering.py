"""The layering contracts of ``pyproject.toml`` [tool.importlinter], shown to bite.

``make lint`` runs import-linter; this file checks that what it runs means something:

* the contracts hold on the tree as it is (the same check, inside the unit tests);
* each contract FAILS when broken: a temporary copy of the package gets one forbidden import
  and lint-imports, pointed at the copy, must report that contract broken (``BREAKS``);
* the one list of pure modules (the ``pure`` contract's ``source_modules``) names modules that
  exist — a renamed module must be renamed in the list, not silently dropped from it;
* no import cycle between our modules;
* every module opens with a docstring.

What it is not: the rules themselves (pyproject.toml) or module and function sizes
(``test_code_shape``).
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import grimp
import pytest

PROJECT = Path(__file__).resolve().parents[2]
PACKAGE = PROJECT / "src" / "pycalico"
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def _importlinter_config() -> dict[str, Any]:
    with (PROJECT / "pyproject.toml").open("rb") as handle:
        config: dict[str, Any] = tomllib.load(handle)["tool"]["importlinter"]
    return config


CONTRACTS: dict[str, dict[str, Any]] = {
    c.get("id", c["name"]): c for c in _importlinter_config()["contracts"]
}
PURE_MODULES: list[str] = CONTRACTS["pure"]["source_modules"]

# One forbidden import per contract (some have more than one): (file under src/pycalico, line
# appended to it, the module that then imports what it must not).  Adding a contract without a
# break here fails test_every_contract_has_a_break.
BREAKS: dict[str, list[tuple[str, str]]] = {
    # Indirect: graph.py itself imports no I/O module, the dataplane loop does.
    "pure": [("felix/calc/graph.py", "import pycalico.felix.dataplane.loop")],
    "etcd": [("ctl/actions.py", "import aetcd")],
    "k8s": [("cni/handler.py", "import kubernetes_asyncio")],
    "components": [
        ("model/meta.py", "import pycalico.datastore.etcd"),
        # The import that once put cni above felix (workload_sysctls now lives in lib).
        ("cni/handler.py", "import pycalico.felix.drivers.interfaces"),
        ("felix/daemon.py", "import pycalico.bgp.confd"),
    ],
    "independent": [("bgp/confd.py", "import pycalico.ipam.allocator")],
    "felix": [
        ("felix/calc/graph.py", "import pycalico.felix.dataplane.loop"),
        ("felix/rules/policy.py", "import pycalico.felix.calc.graph"),
    ],
    "bgp": [("bgp/processor.py", "import pycalico.bgp.bird")],
    "cni": [("cni/spec.py", "import pycalico.cni.handler")],
    "cni-thin": [("cni/entry.py", "import pycalico.cni.spec")],
    "ipam": [("ipam/records.py", "import pycalico.ipam.allocator")],
    "node": [("node/autodetect.py", "import pycalico.node.agent")],
    "datastore": [("datastore/syncer.py", "import pycalico.datastore.etcd")],
    "testing": [("felix/daemon.py", "import pycalico.testing.fake_kernel")],
    "openstack": [("openstack/mirror.py", "import asyncio")],
}


def _module_file(module: str) -> Path | None:
    relative = Path(*module.split(".")[1:])
    for candidate in (PACKAGE / relative.with_suffix(".py"), PACKAGE / relative / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _copy_package(destination: Path) -> Path:
    """A copy of src/pycalico and pyproject.toml under ``destination``; returns the copy's root."""
    shutil.copytree(
        PACKAGE, destination / "src" / "pycalico", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copy(PROJECT / "pyproject.toml", destination / "pyproject.toml")
    return destination


def _lint_imports(root: Path, contract: str | None = None) -> subprocess.CompletedProcess[str]:
    # PYTHONPATH puts the copy ahead of the editable install's path entry, so grimp reads it.
    env = {**os.environ, "PYTHONPATH": str(root / "src")}
    command = [str(LINT_IMPORTS), "--config", str(root / "pyproject.toml"), "--no-cache"]
    if contract is not None:
        command += ["--contract", contract]
    return subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=120)


# --- the contracts hold, and each one can fail ------------------------------------------------


def test_contracts_hold_on_the_tree(tmp_path: Path) -> None:
    result = _lint_imports(_copy_package(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"Contracts: {len(CONTRACTS)} kept, 0 broken." in result.stdout


def test_every_contract_has_an_id() -> None:
    # BREAKS and ``lint-imports --contract`` name contracts by id.
    missing = [c["name"] for c in CONTRACTS.values() if "id" not in c]
    assert not missing, f"give these contracts an id in pyproject.toml: {missing}"


def test_every_contract_has_a_break() -> None:
    assert set(BREAKS) == set(CONTRACTS), "each contract needs a forbidden import in BREAKS"


@pytest.mark.parametrize(
    ("contract", "file", "line"),
    [(c, f, line) for c, breaks in BREAKS.items() for f, line in breaks],
    ids=lambda value: str(value),
)
def test_contract_fails_when_broken(tmp_path: Path, contract: str, file: str, line: str) -> None:
    root = _copy_package(tmp_path)
    target = root / "src" / "pycalico" / file
    assert target.is_file(), f"BREAKS names {file}, which does not exist: update the test"
    target.write_text(target.read_text() + f"\n{line}  # deliberately forbidden\n")
    result = _lint_imports(root, contract)
    output = result.stdout + result.stderr
    assert result.returncode != 0, f"contract {contract!r} kept despite {file}: {line}\n{output}"
    assert "BROKEN" in output, output
    importer = "pycalico." + file.removesuffix(".py").replace("/", ".")
    assert importer in output, f"the failure should name {importer}:\n{output}"


# --- the one list of pure modules -----------------------------------------------------------


@pytest.mark.parametrize("module", PURE_MODULES)
def test_listed_pure_module_exists(module: str) -> None:
    assert _module_file(module) is not None, (
        f"{module} is in the 'pure' contract of pyproject.toml but no such module exists: "
        "rename or remove it there"
    )


# Modules whose imports look pure but that do I/O an import check cannot see: files, the
# environment, or the datastore reached through the ``KVStore`` protocol.  Any other module that
# imports no I/O must be in the "pure" contract, so that it stays pure.
NOT_PURE: dict[str, str] = {
    "pycalico.datastore.config": "reads the CalicoAPIConfig file and the environment",
    "pycalico.ipam.check": "reads every IPAM key through the KVStore protocol",
    "pycalico.ctl.loading": "reads the -f files, directories and stdin",
    "pycalico.ctl.flows": "reads (and follows) the node's flow-log file",
    "pycalico.lab.state": "reads and writes the lab's state.json",
    "pycalico.kubecontrollers.status": "reads and writes kube-controllers' status file",
    "pycalico.felix.drivers.ipip": "reads /sys/module and /lib/modules (the IPIP probe)",
    "pycalico.felix.dataplane.ipip": "runs the IPIP probe of drivers.ipip, once",
    "pycalico.openstack.etcd_gateway": "HTTP to etcd's JSON gateway through urllib",
}


def test_every_pure_looking_module_is_listed_or_explained() -> None:
    graph = grimp.build_graph("pycalico", include_external_packages=True)
    io_modules = set(CONTRACTS["pure"]["forbidden_modules"])
    unlisted = []
    for module in sorted(graph.modules):
        if not module.startswith("pycalico.") or module.startswith("pycalico.testing"):
            continue
        if graph.find_children(module) or module in NOT_PURE:
            continue  # packages: their modules are checked one by one
        if any(module == pure or module.startswith(pure + ".") for pure in PURE_MODULES):
            continue
        if not (graph.find_upstream_modules(module) | {module}) & io_modules:
            unlisted.append(module)
    assert not unlisted, (
        f"{unlisted} import no I/O: add them to the 'pure' contract in pyproject.toml, or say "
        "in NOT_PURE what I/O they do"
    )
    stale = [module for module in NOT_PURE if _module_file(module) is None]
    assert not stale, f"NOT_PURE names modules that do not exist: {stale}"


def test_pure_list_has_no_duplicates_or_nesting() -> None:
    # A module listed under a listed package is a second copy of the same fact.
    for module in PURE_MODULES:
        parents = [other for other in PURE_MODULES if module.startswith(other + ".")]
        assert not parents, f"{module} is already covered by {parents}"
    assert len(set(PURE_MODULES)) == len(PURE_MODULES)


# --- no import cycles ------------------------------------------------------------------------

# Cycles that exist on main and are being removed elsewhere.  The goal is an empty set.
CYCLES_KEPT: set[frozenset[str]] = set()


def import_cycles(graph: grimp.ImportGraph) -> set[frozenset[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: set[frozenset[str]] = set()
    for start in sorted(graph.modules):
        if start in index:
            continue
        work: list[tuple[str, Iterable[str]]] = []
        _visit(start, graph, index, low, stack, on_stack, work)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    _visit(child, graph, index, low, stack, on_stack, work)
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.add(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        cycles.add(frozenset(component))
    return cycles


def _visit(
    node: str,
    graph: grimp.ImportGraph,
    index: dict[str, int],
    low: dict[str, int],
    stack: list[str],
    on_stack: set[str],
    work: list[tuple[str, Iterable[str]]],
) -> None:
    index[node] = low[node] = len(index)
    stack.append(node)
    on_stack.add(node)
    work.append((node, iter(sorted(graph.find_modules_directly_imported_by(node)))))


def test_cycle_finder_finds_a_cycle() -> None:
    graph = grimp.ImportGraph()
    for importer, imported in [("p.a", "p.b"), ("p.b", "p.c"), ("p.c", "p.a"), ("p.c", "p.d")]:
        graph.add_import(importer=importer, imported=imported)
    assert import_cycles(graph) == {frozenset({"p.a", "p.b", "p.c"})}


def test_no_import_cycles() -> None:
    # TYPE_CHECKING imports count: a cycle hidden from the interpreter is still one in the design.
    cycles = import_cycles(grimp.build_graph("pycalico", cache_dir=None))
    new = cycles - CYCLES_KEPT
    assert not new, f"import cycles: {[sorted(c) for c in new]}"
    gone = CYCLES_KEPT - cycles
    assert not gone, f"no longer cycles, remove them from CYCLES_KEPT: {[sorted(c) for c in gone]}"


# --- module docstrings -----------------------------------------------------------------------

ALL_FILES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", ALL_FILES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_module_has_docstring(path: Path) -> None:
    tree = ast.parse(path.read_text())
    if not tree.body:  # an empty __init__.py says nothing and needs nothing
        return
    assert ast.get_docstring(tree), f"{path.relative_to(PACKAGE)} has no module docstring"
