"""The package's layout rules: no module of lossbench imports, even inside a function, a module that imports
it back (directly or through others)."""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def import_graph() -> dict[str, set[str]]:
    modules = {}
    for path in SRC.rglob("*.py"):
        name = ".".join(path.relative_to(SRC).with_suffix("").parts).removesuffix(".__init__")
        modules[name] = path
    graph = {}
    for name, path in modules.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                deps.add(node.module)
                deps.update(f"{node.module}.{a.name}" for a in node.names)
            elif isinstance(node, ast.Import):
                deps.update(a.name for a in node.names)
        graph[name] = {d for d in deps if d in modules and d != name}
    return graph


def test_no_import_cycles():
    graph = import_graph()
    assert "lossbench.members" in graph and "lossbench.build" in graph["lossbench.members"]
    graphlib.TopologicalSorter(graph).prepare()  # raises CycleError naming the cycle


def test_the_check_sees_a_cycle():
    graph = import_graph()
    graph["lossbench.build"].add("lossbench.members")  # build <-> members
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as err:
        assert {"lossbench.build", "lossbench.members"} <= set(err.args[1])
    else:
        raise AssertionError("a cycle went unnoticed")
