"""The import graph of src/lmsmith keeps its shape (docs/ARCHITECTURE.md), checked by walking the source with `ast`:

- no import cycle between modules, counting imports inside functions too;
- packages import only down the floors: the ground floor imports no stage, a stage imports the ground floor
  and the stages before it in the flow, and only entry points sit above the stages;
- nothing imports a command-line module (`*.cli`) except the dispatcher `lmsmith/cli.py` and `__main__`;
- no module imports another module's private (`_name`) attributes.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "lmsmith"

# Rank of each top-level module or package: an import must go to a lower (or the same) rank. Ground floor first
# (in its own order), then the stages in the flow, then the entry points. A new package must be placed here.
FLOORS: list[tuple[str, list[str]]] = [
    ("ground", ["lmsmith", "errors", "home", "hardware", "runtime", "progress", "config", "endpoint", "registry", "quant",
                "models"]),
    ("stages", ["data", "guard", "train", "evaluate", "compress", "rag", "serve", "align", "ops"]),
    ("entry points", ["tiny", "demo", "ui", "cli", "__main__"]),
]
RANK = {name: i for i, name in enumerate(n for _, names in FLOORS for n in names)}
FLOOR = {name: floor for floor, names in FLOORS for name in names}
CLI_IMPORTERS = {"lmsmith.cli", "lmsmith.__main__"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


# assets/ holds data and the scripts that made it (e.g. the guard dataset builder), not importable code
MODULES = {module_name(p): p for p in sorted(SRC.rglob("*.py")) if "assets" not in p.relative_to(SRC).parts}


def package_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "lmsmith"


def internal_target(name: str) -> str | None:
    """The lmsmith module an imported dotted name lives in (longest existing prefix)."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def imports(module: str) -> list[tuple[str, str | None, int]]:
    """(target module, imported attribute or None, line) for every lmsmith import in `module`."""
    path = MODULES[module]
    tree = ast.parse(path.read_text(), str(path))
    is_pkg = path.name == "__init__.py"
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] == "lmsmith":
                    out.append((internal_target(a.name), None, node.lineno))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")[: len(module.split(".")) - node.level + (1 if is_pkg else 0)]
                src = ".".join(base + ([node.module] if node.module else []))
            else:
                src = node.module or ""
            if src.split(".")[0] != "lmsmith":
                continue
            for a in node.names:
                if f"{src}.{a.name}" in MODULES:  # `from lmsmith.x import submodule`
                    out.append((f"{src}.{a.name}", None, node.lineno))
                else:
                    out.append((internal_target(src), a.name, node.lineno))
    return [(t, a, ln) for t, a, ln in out if t is not None]


GRAPH = {m: imports(m) for m in MODULES}


def where(module: str, line: int) -> str:
    return f"{MODULES[module].relative_to(SRC.parent.parent)}:{line}"


def test_every_package_has_a_floor():
    unplaced = sorted({package_of(m) for m in MODULES} - set(RANK))
    assert not unplaced, (f"packages {unplaced} are on no floor: add each to FLOORS in tests/test_architecture.py "
                          "(and its paragraph to docs/ARCHITECTURE.md)")


def test_no_import_cycles():
    edges = {m: {t for t, _, _ in GRAPH[m] if t != m} for m in MODULES}
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for t in sorted(edges[m]):
            if state.get(t) == 1:
                cycles.append(stack[stack.index(t):] + [t])
            elif t not in state:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in sorted(MODULES):
        if m not in state:
            visit(m)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def is_command_module(module: str) -> bool:
    """A stage's command module (`x.cli`, `x.deploy_cli`): an entry point that wires stages together, like
    lmsmith/cli.py; nothing imports it (test below), so it may import upward."""
    last = module.rpartition(".")[2]
    return last == "cli" or last.endswith("_cli")


def test_imports_only_go_down_the_floors():
    bad = []
    for m, targets in GRAPH.items():
        if is_command_module(m):
            continue
        src = package_of(m)
        for t, _, line in targets:
            dst = package_of(t)
            if src != dst and src in RANK and dst in RANK and RANK[dst] > RANK[src]:
                bad.append(f"{where(m, line)}: {m} ({FLOOR[src]}) imports {t} ({FLOOR[dst]}), which comes after it")
    assert not bad, "imports against the one-way flow:\n" + "\n".join(bad)


def test_nothing_imports_a_cli_module():
    bad = [f"{where(m, line)}: {m} imports {t}" for m, targets in GRAPH.items() if m not in CLI_IMPORTERS
           for t, _, line in targets if is_command_module(t)]
    assert not bad, "command-line modules are only for lmsmith/cli.py to dispatch to:\n" + "\n".join(bad)


def test_no_private_cross_module_imports():
    bad = []
    for m, targets in GRAPH.items():
        for t, attr, line in targets:
            if t != m and attr and attr.startswith("_") and not attr.startswith("__"):
                bad.append(f"{where(m, line)}: {m} imports {t}.{attr}")
        # `import lmsmith.x as X; X._private` and `from lmsmith import x; x._private`
        tree = ast.parse(MODULES[m].read_text())
        aliases = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                aliases.update({a.asname: a.name for a in node.names if a.asname and a.name in MODULES})
            elif isinstance(node, ast.ImportFrom) and not node.level and (node.module or "").startswith("lmsmith"):
                aliases.update({a.asname or a.name: f"{node.module}.{a.name}" for a in node.names
                                if f"{node.module}.{a.name}" in MODULES})
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
                    and node.attr.startswith("_") and not node.attr.startswith("__") and aliases[node.value.id] != m):
                bad.append(f"{where(m, node.lineno)}: {m} uses {aliases[node.value.id]}.{node.attr}")
    assert not bad, "private names used across modules (make them public or move the code):\n" + "\n".join(bad)


@pytest.mark.parametrize("rule, source, message", [
    ("cycle", {"a": "import lmsmith.b", "b": "from lmsmith.a import x"}, "import cycles"),
    ("cli", {"a": "from lmsmith.b.cli import x", "b/cli": ""}, "command-line modules"),
    ("private", {"a": "from lmsmith.b import _x", "b": "_x = 1"}, "private names"),
])
def test_the_checks_catch_violations(tmp_path, monkeypatch, rule, source, message):
    """The walker itself: a planted violation in a scratch tree is reported."""
    root = tmp_path / "lmsmith"
    for name, text in {"__init__": "", **source}.items():
        p = root / f"{name}.py"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text + "\n")
    mods = {module_name_in(root, p): p for p in sorted(root.rglob("*.py"))}
    monkeypatch.setattr(__import__(__name__), "SRC", root, raising=False)
    g = globals()
    monkeypatch.setitem(g, "SRC", root)
    monkeypatch.setitem(g, "MODULES", mods)
    monkeypatch.setitem(g, "GRAPH", {m: imports(m) for m in mods})
    check = {"cycle": test_no_import_cycles, "cli": test_nothing_imports_a_cli_module,
             "private": test_no_private_cross_module_imports}[rule]
    with pytest.raises(AssertionError, match=message):
        check()


def module_name_in(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
