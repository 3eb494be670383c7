"""Package dependencies point one way: no import cycle between packages, and the layers hold.

Read from the source (every ``import``, function-local ones included, except those under
``if TYPE_CHECKING:``): a package is ``levibot.<name>`` (a subpackage or a top-level module)
or ``sidecars.<name>``. Layers, bottom up: messages, config, errors, metrics and the other
leaf modules; the bus; the runtime; actors, feeds and the domain packages; sidecars; commands.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).parents[2]
#: What each low layer may import from the project (anything else from it is a layering bug).
ALLOWED: dict[str, set[str]] = {
    "levibot.errors": set(),
    "levibot.messages": {"levibot.errors"},
    "levibot.config": {"levibot.errors"},
    "levibot.metrics": set(),
    "levibot.partition": set(),
    "levibot.registry": set(),
    "levibot.backoff": set(),
    "levibot.valuation": set(),
    "levibot.testenv": set(),
    "levibot.tracing": set(),  # OpenTelemetry is imported only when tracing is on
    "levibot.clock": {"levibot.messages", "levibot.errors"},
    "levibot.settings": {
        "levibot.config",
        "levibot.errors",
        "levibot.registry",
        "levibot.messages",
    },
    "levibot.bus": {
        "levibot.messages",
        "levibot.config",
        "levibot.errors",
        "levibot.metrics",
        "levibot.partition",
        "levibot.settings",
        "levibot.clock",
        "levibot.backoff",
        "levibot.tracing",
    },
}
NEVER_BELOW_ACTORS = {"levibot.actors", "levibot.commands", "levibot.cli"}


def package(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] not in ("levibot", "sidecars") or len(parts) < 2:
        return None
    return ".".join(parts[:2])


def imports() -> dict[str, set[str]]:
    """Return package → the project packages it imports."""
    edges: dict[str, set[str]] = defaultdict(set)
    for top in ("levibot", "sidecars"):
        for path in (ROOT / top).rglob("*.py"):
            module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            src = package(module.removesuffix(".__init__")) or module
            tree = ast.parse(path.read_text(encoding="utf-8"))
            skip = {
                id(n)
                for node in ast.walk(tree)
                if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
                for n in ast.walk(node)
            }
            for node in ast.walk(tree):
                if id(node) in skip:
                    continue
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    dst = package(name)
                    if dst is not None and dst != src:
                        edges[src].add(dst)
    return edges


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Return the strongly connected components of more than one package (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in list(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycle_between_packages() -> None:
    found = cycles(imports())
    assert found == [], f"import cycles between packages: {found}"


def test_the_low_layers_import_only_what_is_below_them() -> None:
    graph = imports()
    wrong = {
        pkg: sorted(graph.get(pkg, set()) - allowed)
        for pkg, allowed in ALLOWED.items()
        if graph.get(pkg, set()) - allowed
    }
    assert wrong == {}


def test_nothing_below_the_actors_imports_them_and_only_commands_import_sidecars() -> None:
    graph = imports()
    for pkg in ("levibot.bus", "levibot.runtime", "levibot.settings", "levibot.storage"):
        assert not graph.get(pkg, set()) & NEVER_BELOW_ACTORS, pkg
    for pkg, deps in graph.items():
        if pkg.startswith("levibot.") and pkg not in ("levibot.commands", "levibot.cli"):
            assert not {d for d in deps if d.startswith("sidecars.")}, pkg  # only the top
        if pkg not in ("levibot.cli", "levibot.commands"):
            assert "levibot.commands" not in deps, pkg  # the commands are the top layer


def test_the_checker_sees_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
