"""The house rules of DESIGN.md §3 that import-linter cannot express.

import-linter checks the layer order; this test checks, file by file, that every pure module
imports nothing that does I/O, and that every module opens with a docstring.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "pycalico"

PURE_PATHS = (
    "model",
    "lib",
    "datastore/api.py",
    "datastore/paths.py",
    "ipam/blocks.py",
    "ipam/records.py",
    "ipam/check_report.py",
    "felix/calc",
    "felix/rules",
    "bgp/processor.py",
    "cni/spec.py",
    "k8s/translation.py",
    "node/autodetect.py",
)
IO_MODULES = {"asyncio", "subprocess", "socket", "aetcd", "grpc", "pyroute2", "kubernetes"}


def _modules_under(relative: str) -> list[Path]:
    path = PACKAGE / relative
    if path.is_dir():
        return sorted(path.rglob("*.py"))
    return [path] if path.exists() else []


def _imported_roots(tree: ast.AST) -> set[str]:
    roots: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


PURE_FILES = [p for rel in PURE_PATHS for p in _modules_under(rel)]


@pytest.mark.parametrize("path", PURE_FILES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_pure_module_does_no_io(path: Path) -> None:
    forbidden = _imported_roots(ast.parse(path.read_text())) & IO_MODULES
    assert not forbidden, f"{path.relative_to(PACKAGE)} is pure but imports {sorted(forbidden)}"


ALL_FILES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", ALL_FILES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_module_has_docstring(path: Path) -> None:
    tree = ast.parse(path.read_text())
    if not tree.body:  # an empty __init__.py says nothing and needs nothing
        return
    assert ast.get_docstring(tree), f"{path.relative_to(PACKAGE)} has no module docstring"


def test_pure_set_is_not_empty() -> None:
    # Guards the test above from passing vacuously if the layout moves.
    assert len(PURE_FILES) >= 2
