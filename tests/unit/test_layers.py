"""The layers of docs/architecture.md hold: imports point downward only.

The core (http, static, config, errors) is pure — no sockets, signals, select or
fork — so it can be tested with bytes and temporary directories alone. The master
and the worker never import each other: the master is handed the worker's entry.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "forkserver"
CORE = (
    "http", "static", "config", "errors",
    "conditional", "ranges", "negotiate", "mime", "caching", "autoindex", "proxy",
)
FORBIDDEN_IN_CORE = {"socket", "signal", "select", "selectors", "subprocess", "multiprocessing"}
LAYER = {
    "cli": 1, "__main__": 1,
    "master": 2, "worker": 2,
    "listeners": 3, "service": 3, "logs": 3, "scoreboard": 3, "signals": 3,
    # Between the worker that calls it and the scoreboard and static site it reads.
    "status": 2.5,
    "http": 4, "static": 4, "config": 4, "errors": 4,
    "conditional": 4, "ranges": 4, "negotiate": 4, "mime": 4, "caching": 4, "autoindex": 4,
    "proxy": 4,
}


def imports_of(module: str) -> tuple[set[str], set[str]]:
    """(top-level stdlib/third-party modules, forkserver submodules) imported."""
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    outside: set[str] = set()
    inside: set[str] = set()
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
            if node.module == "forkserver":
                inside.update(alias.name for alias in node.names if alias.name in LAYER)
        for name in names:
            if name.startswith("forkserver."):
                inside.add(name.split(".")[1])
            elif name != "forkserver":
                outside.add(name.split(".")[0])
    return outside, inside


def test_every_module_has_a_layer() -> None:
    modules = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__"}
    assert modules <= set(LAYER), modules - set(LAYER)


@pytest.mark.parametrize("module", CORE)
def test_core_is_pure(module: str) -> None:
    outside, _ = imports_of(module)
    assert not outside & FORBIDDEN_IN_CORE
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    forks = [n for n in ast.walk(tree) if isinstance(n, ast.Attribute) and n.attr == "fork"]
    assert not forks, f"{module} calls fork"


@pytest.mark.parametrize("module", sorted(LAYER))
def test_imports_point_downward(module: str) -> None:
    _, inside = imports_of(module)
    for target in inside:
        # Wiring (layer 1) and the core (layer 4) may use their own layer's modules.
        same_layer_ok = LAYER[module] in (1, 4) and LAYER[target] == LAYER[module]
        assert LAYER[target] > LAYER[module] or same_layer_ok, (
            f"{module} (layer {LAYER[module]}) imports {target} (layer {LAYER[target]})"
        )


def test_master_and_worker_do_not_import_each_other() -> None:
    assert "worker" not in imports_of("master")[1]
    assert "master" not in imports_of("worker")[1]


def test_every_module_says_what_it_owns() -> None:
    for path in PACKAGE.glob("*.py"):
        doc = ast.get_docstring(ast.parse(path.read_text()))
        assert doc, f"{path.name} has no module docstring"
