"""The layers of docs/architecture.md hold: imports point downward only.

A unit is a top-level module (``errors.py``) or a package (``master/``). The core
(config/, http/, static/, errors and the small core modules) is pure — no sockets,
signals, select, TLS or fork — so it can be tested with bytes and temporary
directories alone. The master and the worker never import each other: the master is
handed the worker's entry function (workerspec.WorkerMain). The worker's status page
answers with http/response.py's plans, not with the static site.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "forkserver"
WIRING, PROCESS_CYCLES, OUTER_HELPERS, CORE = 1, 2, 3, 4
LAYER = {
    "cli": WIRING, "__main__": WIRING, "signalcommand": WIRING,
    "master": PROCESS_CYCLES, "worker": PROCESS_CYCLES,
    "listeners": OUTER_HELPERS, "logs": OUTER_HELPERS, "logformats": OUTER_HELPERS,
    "scoreboard": OUTER_HELPERS,
    "signals": OUTER_HELPERS, "service": OUTER_HELPERS, "workerspec": OUTER_HELPERS,
    # Issue 15-17 helpers: TLS transport, shared-memory protection, the offload pool.
    "tls": OUTER_HELPERS, "protect": OUTER_HELPERS, "offload": OUTER_HELPERS,
    "config": CORE, "http": CORE, "static": CORE, "errors": CORE,
    "capacity": CORE, "encoding": CORE, "sites": CORE,
}
FORBIDDEN_IN_CORE = {
    "socket", "signal", "select", "selectors", "subprocess", "multiprocessing", "ssl",
}
MAX_MODULE_LINES = 400
MAX_CLASS_LINES = 300


def sources() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def unit_of(path: Path) -> str:
    return path.relative_to(PACKAGE).parts[0].removesuffix(".py")


def name_of(path: Path) -> str:
    return str(path.relative_to(PACKAGE))


@cache
def imports_of(path: Path) -> tuple[frozenset[str], frozenset[str], frozenset[str]]:
    """(top-level stdlib/third-party modules, forkserver units, forkserver.x.y modules)."""
    tree = ast.parse(path.read_text())
    outside: set[str] = set()
    units: set[str] = set()
    dotted: set[str] = set()
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
            if node.module == "forkserver":
                units.update(alias.name for alias in node.names if alias.name in LAYER)
        for name in names:
            if name.startswith("forkserver."):
                units.add(name.split(".")[1])
                dotted.add(name)
            elif name != "forkserver":
                outside.add(name.split(".")[0])
    return frozenset(outside), frozenset(units), frozenset(dotted)


def unit_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in sources():
        unit = unit_of(path)
        graph.setdefault(unit, set()).update(imports_of(path)[1] - {unit})
    return graph


def test_every_unit_has_a_layer() -> None:
    units = {unit_of(p) for p in sources()} - {"__init__"}
    assert units <= set(LAYER), units - set(LAYER)


@pytest.mark.parametrize("path", [p for p in sources() if LAYER.get(unit_of(p)) == CORE],
                         ids=name_of)
def test_core_is_pure(path: Path) -> None:
    outside, _, _ = imports_of(path)
    assert not outside & FORBIDDEN_IN_CORE, f"{name_of(path)}: {outside & FORBIDDEN_IN_CORE}"
    tree = ast.parse(path.read_text())
    forks = [n for n in ast.walk(tree) if isinstance(n, ast.Attribute) and n.attr == "fork"]
    assert not forks, f"{name_of(path)} calls fork"


@pytest.mark.parametrize("path", [p for p in sources() if unit_of(p) != "__init__"],
                         ids=name_of)
def test_imports_point_downward(path: Path) -> None:
    unit = unit_of(path)
    for target in imports_of(path)[1] - {unit}:
        # Wiring, outer helpers and the core may use their own layer (the graph stays
        # acyclic, below); the two process cycles may not use each other.
        same_layer_ok = LAYER[unit] != PROCESS_CYCLES and LAYER[target] == LAYER[unit]
        assert LAYER[target] > LAYER[unit] or same_layer_ok, (
            f"{name_of(path)} (layer {LAYER[unit]}) imports {target} (layer {LAYER[target]})"
        )


def test_units_never_import_each_other_in_a_cycle() -> None:
    graph = unit_graph()
    done: set[str] = set()

    def visit(unit: str, trail: tuple[str, ...]) -> None:
        assert unit not in trail, " → ".join((*trail, unit))
        if unit in done:
            return
        for target in sorted(graph.get(unit, ())):
            visit(target, (*trail, unit))
        done.add(unit)

    for unit in sorted(graph):
        visit(unit, ())


def test_master_and_worker_do_not_import_each_other() -> None:
    graph = unit_graph()
    assert "worker" not in graph["master"]
    assert "master" not in graph["worker"]


def test_the_status_page_answers_with_http_plans_not_the_static_site() -> None:
    _, units, _ = imports_of(PACKAGE / "worker" / "status.py")
    assert "static" not in units


@pytest.mark.parametrize("path", sources(), ids=name_of)
def test_every_module_says_what_it_owns(path: Path) -> None:
    assert ast.get_docstring(ast.parse(path.read_text())), f"{name_of(path)} has no docstring"


@pytest.mark.parametrize("path", sources(), ids=name_of)
def test_no_module_over_400_lines_and_no_class_over_300(path: Path) -> None:
    text = path.read_text()
    assert text.count("\n") <= MAX_MODULE_LINES, f"{name_of(path)}: {text.count(chr(10))} lines"
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.ClassDef) and node.end_lineno is not None:
            length = node.end_lineno - node.lineno + 1
            assert length <= MAX_CLASS_LINES, f"{name_of(path)}: class {node.name} {length}"
