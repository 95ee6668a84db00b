"""Imports run one way: flows -> pipeline -> cmcl_core, flows/pipeline -> db; no cycles.

Every import statement of ``cmcl_core``, ``pipeline``, ``flows`` and ``db`` counts,
function-local ones included; a function-local import is allowed only to defer a heavy
optional dependency, and says so in a comment on its line (or in the function's docstring).
``cmcl_core`` imports nothing but the standard library, torch, numpy and scipy.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("cmcl_core", "pipeline", "flows", "db")
FORBIDDEN = {  # package -> packages it must never import
    "db": {"pipeline", "flows"},
    "pipeline": {"flows"},
    "cmcl_core": {"pipeline", "flows", "db"},
}


def _modules(package: str) -> dict[str, Path]:
    out = {}
    for p in sorted((ROOT / package).rglob("*.py")):
        rel = p.relative_to(ROOT)
        if "migrations" in rel.parts:
            continue
        out[".".join(rel.with_suffix("").parts).removesuffix(".__init__")] = p
    return out


MODULES = {name: path for pkg in PACKAGES for name, path in _modules(pkg).items()}


def _imports(path: Path, tree: ast.Module | None = None) -> list[tuple[str, ast.AST, bool]]:
    """(imported module, node, top level?) for every import statement of a file."""
    tree = tree or ast.parse(path.read_text())
    top = {id(n) for n in tree.body}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, node, id(node) in top) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            out += [(node.module, node, id(node) in top)]
            out += [(f"{node.module}.{a.name}", node, id(node) in top) for a in node.names]
    return out


def _own(name: str) -> str | None:
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def test_no_import_cycle_among_the_projects_modules():
    graph = {m: {o for n, _, _ in _imports(p) if (o := _own(n)) and o != m}
             for m, p in MODULES.items()}  # fmt: skip
    state: dict[str, int] = {}  # 1 visiting, 2 done

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for nxt in sorted(graph[m]):
            if state.get(nxt) == 1:
                cycle = path[path.index(nxt) :] + [nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt, [*path, nxt])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_imports_run_one_way(package):
    for path in sorted((ROOT / package).rglob("*.py")):
        for name, node, _ in _imports(path):
            top = name.split(".")[0]
            assert top not in FORBIDDEN[package], f"{path.relative_to(ROOT)}:{node.lineno}: {name}"


def test_function_local_imports_only_defer_heavy_dependencies():
    for path in MODULES.values():
        lines = path.read_text().splitlines()
        tree = ast.parse(path.read_text())
        docs = {
            id(n): ast.get_docstring(n) or ""
            for n in ast.walk(tree)
            if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)
        }
        parents = {id(c): n for n in ast.walk(tree) for c in ast.iter_child_nodes(n)}
        for _, node, top in _imports(path, tree):
            if top:
                continue
            fn = node
            while id(fn) in parents and not isinstance(fn, ast.FunctionDef):
                fn = parents[id(fn)]
            said = lines[node.lineno - 1] + docs.get(id(fn), "")
            where = f"{path.relative_to(ROOT)}:{node.lineno}"
            assert "deferred" in said.lower(), f"{where}: a local import without a reason"


def test_core_imports_only_torch_numpy_scipy():
    allowed = set(sys.stdlib_module_names) | {"__future__", "torch", "numpy", "scipy", "cmcl_core"}
    for path in _modules("cmcl_core").values():
        for imported, node, _ in _imports(path):
            top = imported.split(".")[0]
            assert top in allowed, f"{path.relative_to(ROOT)}:{node.lineno} imports {imported}"
