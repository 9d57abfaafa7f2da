"""The house style that a tool can check, over every module in src/pycalico.

* No module over 600 lines and no function over 80 lines (a function counts from its ``def``
  line to its last line, nested functions included in their parent).
* No hedging on our own modules: no ``find_spec`` probe, no ``except ImportError`` or
  ``suppress(ModuleNotFoundError)`` around an import of ``pycalico``, no
  ``getattr(<our module>, "name", default)``.  Our modules exist; import them and fail loudly.
  (An optional third-party binding, e.g. ``nftables``, may still be imported in a ``try``.)

The keep-lists hold what exists on main and is being fixed on another branch; the goal is that
they are empty.  An entry that no longer applies fails the test, so the lists only shrink.
What it is not: the import contracts (``test_layering``).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "pycalico"
MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 80

MODULES_KEPT: set[str] = set()

# "path::qualified name".  The goal is an empty set; the lead removes entries at merge.
FUNCTIONS_KEPT: set[str] = set()

# "path::qualified name of the enclosing function".
HEDGES_KEPT: set[str] = set()

ALL_FILES = sorted(PACKAGE.rglob("*.py"))
IMPORT_ERRORS = {"ImportError", "ModuleNotFoundError"}


def _relative(path: Path) -> str:
    return str(path.relative_to(PACKAGE))


def _functions(
    tree: ast.AST, prefix: str = ""
) -> Iterator[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]]:
    """Every function with its qualified name (``Class.method``, ``outer.inner``)."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield prefix + node.name, node
            yield from _functions(node, prefix + node.name + ".")
        elif isinstance(node, ast.ClassDef):
            yield from _functions(node, prefix + node.name + ".")
        else:
            yield from _functions(node, prefix)


def _parsed() -> Iterator[tuple[str, ast.Module]]:
    for path in ALL_FILES:
        yield _relative(path), ast.parse(path.read_text())


# --- sizes -----------------------------------------------------------------------------------


def long_modules() -> set[str]:
    return {_relative(p) for p in ALL_FILES if len(p.read_text().splitlines()) > MAX_MODULE_LINES}


def long_functions() -> dict[str, int]:
    found: dict[str, int] = {}
    for relative, tree in _parsed():
        for name, node in _functions(tree):
            length = (node.end_lineno or node.lineno) - node.lineno + 1
            if length > MAX_FUNCTION_LINES:
                found[f"{relative}::{name}"] = length
    return found


def test_no_module_over_600_lines() -> None:
    found = long_modules()
    assert not found - MODULES_KEPT, f"modules over {MAX_MODULE_LINES} lines: {found}"
    assert not MODULES_KEPT - found, f"short now, remove from MODULES_KEPT: {MODULES_KEPT - found}"


def test_no_function_over_80_lines() -> None:
    found = long_functions()
    new = {name: n for name, n in found.items() if name not in FUNCTIONS_KEPT}
    assert not new, f"functions over {MAX_FUNCTION_LINES} lines (name: lines): {new}"
    gone = FUNCTIONS_KEPT - set(found)
    assert not gone, f"short now (or renamed), remove from FUNCTIONS_KEPT: {sorted(gone)}"


def test_size_check_can_fail() -> None:
    tree = ast.parse("class A:\n    def f(self):\n" + "        x = 1\n" * MAX_FUNCTION_LINES)
    [(name, node)] = list(_functions(tree))
    assert name == "A.f"
    assert (node.end_lineno or 0) - node.lineno + 1 == MAX_FUNCTION_LINES + 1


# --- hedges ----------------------------------------------------------------------------------


def _our_import(node: ast.AST) -> bool:
    if isinstance(node, ast.Import):
        return any(alias.name.split(".")[0] == "pycalico" for alias in node.names)
    if isinstance(node, ast.ImportFrom):
        return node.level > 0 or (node.module or "").split(".")[0] == "pycalico"
    return False


def _call_name(node: ast.AST) -> str | None:
    if not isinstance(node, ast.Call):
        return None
    if isinstance(node.func, ast.Name):
        return node.func.id
    if isinstance(node.func, ast.Attribute):
        return node.func.attr
    return None


def _names(node: ast.expr | None) -> set[str]:
    """The exception names an ``except`` clause or ``suppress(...)`` argument names."""
    if node is None:
        return set()
    if isinstance(node, ast.Tuple):
        return set().union(*(_names(element) for element in node.elts))
    if isinstance(node, ast.Name):
        return {node.id}
    if isinstance(node, ast.Attribute):
        return {node.attr}
    return set()


def _our_module_names(tree: ast.AST) -> set[str]:
    """Names bound, anywhere in the module, by an import of one of our modules."""
    bound: set[str] = set()
    for node in ast.walk(tree):
        if _our_import(node):
            assert isinstance(node, ast.Import | ast.ImportFrom)
            for alias in node.names:
                bound.add(alias.asname or alias.name.split(".")[0])
    return bound


def _is_hedge(node: ast.AST, ours: set[str]) -> bool:
    name = _call_name(node)
    if name == "find_spec":
        return True
    if name == "suppress" and isinstance(node, ast.Call):
        return bool(set().union(*(_names(a) for a in node.args)) & IMPORT_ERRORS)
    if name == "getattr" and isinstance(node, ast.Call) and len(node.args) == 3:
        target = node.args[0]
        return isinstance(target, ast.Name) and target.id in ours
    if isinstance(node, ast.Try):
        if not any(_names(handler.type) & IMPORT_ERRORS for handler in node.handlers):
            return False
        body = [inner for statement in node.body for inner in ast.walk(statement)]
        return any(
            _our_import(inner) or _call_name(inner) in {"import_module", "__import__"}
            for inner in body
        )
    return False


def hedges_in(relative: str, tree: ast.Module) -> set[str]:
    ours = _our_module_names(tree)
    found: set[str] = set()
    scopes: list[tuple[str, ast.AST]] = [("<module>", tree), *_functions(tree)]
    for scope_name, scope in scopes:
        for node in _walk_own(scope):
            if _is_hedge(node, ours):
                found.add(f"{relative}::{scope_name}")
    return found


def _walk_own(scope: ast.AST) -> Iterator[ast.AST]:
    """The nodes of one scope, not descending into nested functions or classes."""
    for child in ast.iter_child_nodes(scope):
        if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            continue
        yield child
        yield from _walk_own(child)


def test_no_hedging_on_our_own_modules() -> None:
    found = set().union(*(hedges_in(relative, tree) for relative, tree in _parsed()))
    new = found - HEDGES_KEPT
    assert not new, f"find_spec/except ImportError/getattr hedges on our modules: {sorted(new)}"
    gone = HEDGES_KEPT - found
    assert not gone, f"no hedge left, remove from HEDGES_KEPT: {sorted(gone)}"


def test_hedge_check_can_fail() -> None:
    source = """
import contextlib
import importlib.util
from pycalico.cni import agent_server

def probe():
    return importlib.util.find_spec("pycalico.felix.daemon")

def swallow():
    try:
        import pycalico.felix.daemon
    except ModuleNotFoundError:
        return None

def suppressed():
    with contextlib.suppress(ImportError):
        import pycalico.bgp

def maybe():
    return getattr(agent_server, "default_handlers", None)

def fine():
    try:
        import nftables
    except ImportError:
        return None
"""
    found = hedges_in("x.py", ast.parse(source))
    assert found == {"x.py::probe", "x.py::swallow", "x.py::suppressed", "x.py::maybe"}
