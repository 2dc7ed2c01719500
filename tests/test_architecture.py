"""The rooms and their edges (docs/architecture.md): data flows one way, source -> trace -> planner ->
report -> CLI / GUI. Read from the source with ``ast`` (every import, also those inside functions)."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ROOMS = ("engine", "hardware", "gui", "cli", "resources", "bench")
# room -> rooms it must never import
FORBIDDEN = {
    "hardware": {"engine", "gui", "cli", "bench"},
    "engine": {"gui", "cli", "bench"},
    "gui": {"cli", "bench"},
    "cli": {"gui", "bench"},
}
QT = ("PySide6", "pyqtgraph")


def _modules() -> dict[str, Path]:
    found = {}
    for room in ROOMS:
        for path in (ROOT / room).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(("torchbudget", *parts)).removesuffix(".__init__")
            found[name] = path
    found["torchbudget.errors"] = ROOT / "torchbudget" / "errors.py"
    return found


def _imports(path: Path, name: str, known: set[str]) -> set[str]:
    """Project modules ``path`` imports (resolving ``from package import module``)."""
    out = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    type_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If)
                 and getattr(block.test, "id", None) == "TYPE_CHECKING" for n in ast.walk(block)}
    for node in ast.walk(tree):
        if id(node) in type_only:   # annotations only: never imported at run time
            continue
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1] + ([base] if base else []))
            targets = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name and not name.startswith(target + "."):  # a parent package is not an edge
                out.add(target)
    return out


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: _imports(path, name, known) for name, path in modules.items()}


def _room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_rooms_import_only_downstream():
    wrong = sorted(f"{a} -> {b}" for a, targets in _graph().items() for b in targets
                   if _room(b) in FORBIDDEN.get(_room(a), ()))
    assert wrong == []


def test_engine_and_hardware_never_import_qt():
    offenders = []
    for name, path in _modules().items():
        if _room(name) in ("engine", "hardware"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                         else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
                offenders += [f"{name}: {n}" for n in names if n.split(".")[0] in QT]
    assert offenders == []


def test_no_import_cycles():
    graph = _graph()
    cycles, state = [], {}

    def visit(node, stack):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, stack)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [])
    assert cycles == []


def test_every_package_is_installed():
    """pyproject's explicit package list names every folder with an __init__.py (a new subpackage would
    otherwise be missing from an installed copy)."""
    import tomllib

    declared = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(("torchbudget", *p.parent.relative_to(ROOT).parts))
             for room in ROOMS for p in (ROOT / room).rglob("__init__.py")}
    assert found | {"torchbudget"} == declared
