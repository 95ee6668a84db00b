"""The layout's rules, read from the source (no package is imported):

* imports among the project's modules form no cycle, function-local imports included;
* a function-local import exists only to defer a heavy or optional dependency, and says so
  with a comment containing "deferred" (on its line or the line above);
* ``cmcl_core`` imports nothing but the standard library, torch, numpy and scipy.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("cmcl_core", "pipeline", "db", "flows")
CORE_ALLOWED = {"torch", "numpy", "scipy", "cmcl_core"}


def _modules() -> dict[str, Path]:
    mods = {}
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            rel = path.relative_to(ROOT)
            if "migrations" in rel.parts:
                continue
            mods[".".join(rel.with_suffix("").parts).removesuffix(".__init__")] = path
    return mods


MODULES = _modules()


def _imports(module: str, path: Path) -> list[tuple[ast.stmt, list[str], bool]]:
    """(statement, imported dotted names, whether it sits inside a function or class)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    pkg = module if path.name == "__init__.py" else module.rpartition(".")[0]
    top = {id(n) for n in tree.body}
    # statements under `if TYPE_CHECKING:` or try/except at module level count as top level
    for node in tree.body:
        if isinstance(node, ast.If | ast.Try):
            top |= {id(n) for n in ast.walk(node)}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = pkg.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            names = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        out.append((node, names, id(node) not in top))
    return out


def _resolve(name: str) -> str | None:
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (iterative Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            v, children = work[-1]
            w = next(children, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    found.append(sorted(comp))
    return found


def test_the_module_list_is_read():
    assert {"cmcl_core.estimator", "cmcl_core.training", "flows.cli"} <= set(MODULES)


def test_no_import_cycle_among_the_projects_modules():
    graph = {m: set() for m in MODULES}
    for module, path in MODULES.items():
        for _, names, _ in _imports(module, path):
            graph[module] |= {_resolve(n) for n in names} - {None, module}
    assert _cycles(graph) == []


def test_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_function_local_imports_say_why():
    undocumented = []
    for module, path in MODULES.items():
        lines = path.read_text(encoding="utf-8").splitlines()
        for node, _, local in _imports(module, path):
            if not local:
                continue
            here = lines[node.lineno - 1]
            above = lines[node.lineno - 2] if node.lineno > 1 else ""
            if "deferred" not in here and "deferred" not in above:
                undocumented.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert undocumented == [], "function-local imports without a '# deferred: why' comment"


def test_core_imports_only_torch_numpy_scipy():
    stdlib = set(sys.stdlib_module_names) | {"__future__"}
    bad = []
    for module, path in MODULES.items():
        if not module.startswith("cmcl_core"):
            continue
        for node, names, _ in _imports(module, path):
            top = names[0].split(".")[0]
            if top not in stdlib and top not in CORE_ALLOWED:
                bad.append(f"{path.relative_to(ROOT)}:{node.lineno} imports {names[0]}")
    assert bad == []
