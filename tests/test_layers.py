"""Imports run downhill: no import cycle among the modules of `app`, counting imports inside
functions (a late import is not a way around a cycle), and the layers keep their order:
routers -> services -> models -> db / errors / config."""

from __future__ import annotations

import ast
from pathlib import Path

APP = Path(__file__).resolve().parent.parent / "app"


def _modules(root: Path = APP) -> dict[str, Path]:
    found = {}
    for path in root.rglob("*.py"):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _imports(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Each module's imports of other app modules, wherever they stand in the file (type-only
    imports under `if TYPE_CHECKING:` excepted: they never run)."""
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        tree = ast.parse(path.read_text())
        skip = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
                and "TYPE_CHECKING" in ast.unparse(node.test) for n in ast.walk(node)}
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*up, base]) if base else ".".join(up)
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base
                           for a in node.names]
            else:
                continue
            found = {t for t in targets if t in modules and t != name}
            # Importing a.b.c runs a/__init__ and a/b/__init__ first: those are imports too.
            for t in list(found):
                parts = t.split(".")
                found |= {p for i in range(2, len(parts)) if (p := ".".join(parts[:i])) in modules
                          and p != name and not name.startswith(p + ".")}
            graph[name] |= found
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            scc = []
            while True:
                w = stack.pop()
                on.discard(w)
                scc.append(w)
                if w == v:
                    break
            if len(scc) > 1:
                out.append(sorted(scc))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles() -> None:
    modules = _modules()
    assert len(modules) > 40, "the walk found too few modules to mean anything"
    assert _cycles(_imports(modules)) == []


# Which top-level layer may import which: a module never imports a layer above its own.
_LAYER = {"routers": 3, "services": 2, "models": 1}


def test_layers_run_downhill() -> None:
    modules = _modules()
    graph = _imports(modules)
    uphill = []
    for name, targets in graph.items():
        mine = _LAYER.get(name.split(".")[1], 0) if name.count(".") else 0
        for t in targets:
            theirs = _LAYER.get(t.split(".")[1], 0) if t.count(".") else 0
            if mine and theirs > mine:
                uphill.append(f"{name} -> {t}")
    assert uphill == []


def test_the_check_sees_a_late_import(tmp_path: Path) -> None:
    """The check itself: a cycle closed by an import inside a function is a cycle; one under
    `if TYPE_CHECKING:` is not (it never runs)."""
    pkg = tmp_path / "app"
    (pkg / "services").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "services" / "__init__.py").write_text("")
    (pkg / "services" / "a.py").write_text("from app.services import b\n")
    (pkg / "services" / "b.py").write_text("def f():\n    from app.services.a import x\n")
    (pkg / "services" / "c.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from app.services import a\n")
    (pkg / "services" / "d.py").write_text("from . import c\n")
    graph = _imports(_modules(pkg))
    assert _cycles(graph) == [["app.services.a", "app.services.b"]]
    assert graph["app.services.c"] == set() and graph["app.services.d"] == {"app.services.c"}
