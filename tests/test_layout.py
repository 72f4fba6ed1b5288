"""The layout's rules, checked on the source: no import circle anywhere in agents/, envs/, runners/ and
sb3/ (imports inside functions count: a late import is still a circle), and the rooms of runners/
import only downwards (core at the bottom, the `taco` command on top)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TREES = {
    "agents": "taco_rl.agents",
    "envs": "taco_rl.envs",
    "runners": "taco_rl.runners",
    "sb3": "taco_rl.sb3",
    "taco_rl": "taco_rl",
}
# runners' rooms from the bottom up; a room may import its own modules and any room below it
ROOMS = ["core", "online", "data", "offline", "study", "bench", "cli"]


def modules() -> dict[str, Path]:
    """Dotted module name -> file, as the wheel installs them (a package is its __init__)."""
    found = {}
    for folder, dotted in TREES.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join([dotted, *parts])] = path
    return found


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The suite's modules that ``name`` imports anywhere in its file (top level or in a function)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            # `from pkg import sub` imports the module pkg.sub; `from pkg import attr` imports pkg
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        out.update(t for t in targets if t in known and t != name)
    return out


def graph() -> dict[str, set[str]]:
    found = modules()
    return {name: imports(name, path, set(found)) for name, path in found.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def room(module: str) -> str | None:
    parts = module.split(".")
    if parts[:2] != ["taco_rl", "runners"] or len(parts) < 3:
        return None
    return parts[2]


def test_the_import_graph_sees_function_level_imports():
    edges = graph()
    # data/collect.py imports the worker module inside collect(), at call time
    assert "taco_rl.runners.data.collect_workers" in edges["taco_rl.runners.data.collect"]
    assert "taco_rl.runners.core.workers" in edges["taco_rl.runners.data.collect_workers"]


def test_no_import_circle():
    found = cycles(graph())
    assert found == [], "modules that import each other (directly or around a loop): " + "; ".join(
        " -> ".join(c) for c in found
    )


def test_rooms_import_downwards_only():
    upward = []
    for module, targets in graph().items():
        mine = room(module)
        if mine is None:
            continue
        for target in targets:
            theirs = room(target)
            if theirs is not None and theirs != mine and ROOMS.index(theirs) > ROOMS.index(mine):
                upward.append(f"{module} imports {target}")
    assert upward == []


def test_pure_rooms_stay_pure():
    # agents/ and envs/ know nothing of the runners; agents/ nothing of the envs
    bad = [
        f"{m} imports {t}"
        for m, ts in graph().items()
        for t in ts
        if (m.startswith(("taco_rl.agents", "taco_rl.envs")) and t.startswith(("taco_rl.runners", "taco_rl.sb3")))
        or (m.startswith("taco_rl.agents") and t.startswith("taco_rl.envs"))
    ]
    assert bad == []


def test_runners_top_level_is_small_and_every_room_says_what_it_holds():
    entries = sorted(p.name for p in (ROOT / "runners").iterdir() if p.name != "__pycache__")
    assert len(entries) <= 8, entries
    for name in ROOMS[:-1]:
        init = ROOT / "runners" / name / "__init__.py"
        assert ast.get_docstring(ast.parse(init.read_text())), f"{init}: no docstring saying what the room holds"
