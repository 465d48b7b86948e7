"""The import graph of zctrace/: no cycle, and nothing imports the command line (`zctrace.cli`);
and no module longer than MAX_LINES.

Read from the source with `ast` (top-level and function-level imports, relative and absolute),
so it runs in well under a second, without root or BPF.
"""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "zctrace"
CLI = "zctrace.cli"
ENTRY_POINTS = {"zctrace.__main__"}  # may import the command line (none today)
MAX_LINES = 420  # a module longer than this holds more than one concern: split it
# Modules still over MAX_LINES, with the most lines they may have until they are split (a
# module here that shrinks below MAX_LINES must leave the list).
OVERSIZED: dict[str, int] = {}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imported(name: str, source: str, known: set[str], is_package: bool = False) -> set[str]:
    """The modules of `known` that module `name` imports anywhere in `source` (its text)."""
    package = name if is_package else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(source, name)):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
            # `from X import y`: module X.y if there is one, else a name defined in X
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:  # `import zctrace.a.b` with a.b a name: module a
                target = target.rpartition(".")[0]
            if target and target != name:
                out.add(target)
    return out


def import_graph() -> dict[str, set[str]]:
    found = modules()
    return {name: imported(name, path.read_text(), set(found), path.name == "__init__.py")
            for name, path in found.items()}


def components(graph: dict[str, set[str]]) -> list[set[str]]:
    """Strongly connected components (Tarjan): a cycle is one with more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                comp.add(w)
                if w == v:
                    break
            out.append(comp)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def layers(graph: dict[str, set[str]]) -> list[list[str]]:
    """Layer 0 imports no zctrace module; layer n imports from layers below n only. A cycle
    sits in one layer as `{a b c}` (its modules import each other)."""
    comps = components(graph)
    of = {m: i for i, comp in enumerate(comps) for m in comp}
    depth: dict[int, int] = {}
    for i, comp in enumerate(comps):  # Tarjan emits a component after all it depends on
        below = {of[d] for m in comp for d in graph[m]} - {i}
        depth[i] = 1 + max((depth[j] for j in below), default=-1)
    out: list[list[str]] = [[] for _ in range(1 + max(depth.values(), default=-1))]
    for i, comp in enumerate(comps):
        out[depth[i]].append(" ".join(sorted(comp)) if len(comp) == 1 else "{" + " ".join(sorted(comp)) + "}")
    return [sorted(layer) for layer in out]


def describe(graph: dict[str, set[str]]) -> str:
    return "import layers (bottom first):\n" + "\n".join(
        f"  {n}: {', '.join(layer)}" for n, layer in enumerate(layers(graph)))


def test_every_kind_of_import_is_an_edge():
    known = {"zctrace", "zctrace.cli", "zctrace.probes", "zctrace.tiers", "zctrace.exporter",
             "zctrace.exporter.server", "zctrace.exporter.daemon"}
    source = ("import os\nimport zctrace.cli\nfrom zctrace import tiers\nfrom ..probes import TIERS\n"
              "def f():\n    from .server import main\n    import zctrace.probes.sub\n")
    assert imported("zctrace.exporter.daemon", source, known) == {
        "zctrace.cli", "zctrace.tiers", "zctrace.probes", "zctrace.exporter.server"}
    assert imported("zctrace.exporter", "from . import daemon\nfrom .. import cli", known, is_package=True) == {
        "zctrace.exporter.daemon", "zctrace.cli"}


def test_the_graph_holds_this_tree():
    graph = import_graph()
    assert "zctrace.probes" in graph["zctrace.cli"]  # from .probes import ...
    assert "zctrace.argtypes" in graph["zctrace.exporter.daemon"]  # from .. import argtypes
    assert "zctrace.workload.senders" in graph["zctrace.workload.__main__"]
    assert "zctrace.exporter.daemon" in graph["zctrace.cli"]  # inside a function


def test_no_import_cycle():
    graph = import_graph()
    cycles = [sorted(c) for c in components(graph) if len(c) > 1]
    assert not cycles, f"import cycles: {cycles}\n{describe(graph)}"


def test_nothing_imports_the_command_line():
    graph = import_graph()
    upward = sorted(m for m, deps in graph.items() if CLI in deps and m not in ENTRY_POINTS)
    assert not upward, f"modules importing {CLI}: {upward}\n{describe(graph)}"


def test_no_module_is_too_long():
    lines = {name: len(path.read_text().splitlines()) for name, path in modules().items()}
    too_long = {m: n for m, n in lines.items() if n > OVERSIZED.get(m, MAX_LINES)}
    assert not too_long, f"modules over {MAX_LINES} lines (split them by concern): {too_long}"
    stale = sorted(m for m in OVERSIZED if lines.get(m, 0) <= MAX_LINES)
    assert not stale, f"no longer over {MAX_LINES} lines: remove them from OVERSIZED: {stale}"
