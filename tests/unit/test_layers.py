"""The layers import one way: schemas <- repositories <- controllers <- triggers, lightsout.

azstorage, the queue plumbing the app and the local host share, sits below them all.
controllers/ talks to storage only through its ports (controllers/ports.py), so it imports
nothing from repositories/ either.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
OURS = {
    "azstorage",
    "schemas",
    "repositories",
    "controllers",
    "triggers",
    "lightsout",
    "function_app",
}
ALLOWED = {
    "azstorage": {"azstorage"},
    "schemas": {"schemas"},
    "repositories": {"azstorage", "schemas", "repositories"},
    "controllers": {"azstorage", "schemas", "controllers"},
    "triggers": {"azstorage", "schemas", "repositories", "controllers", "triggers"},
}


def imported_packages(path: Path) -> set[str]:
    """Return the top-level packages of ours that a module imports."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found & OURS


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_layer_imports_only_the_layers_below(layer: str) -> None:
    offences = {
        str(path.relative_to(ROOT)): sorted(imported_packages(path) - ALLOWED[layer])
        for path in sorted((ROOT / layer).rglob("*.py"))
    }
    assert {k: v for k, v in offences.items() if v} == {}


def test_the_host_knows_nothing_of_the_engine() -> None:
    offences = {
        str(path.relative_to(ROOT)): sorted(imported_packages(path) - {"lightsout", "azstorage"})
        for path in sorted((ROOT / "lightsout" / "host").rglob("*.py"))
    }
    assert {k: v for k, v in offences.items() if v} == {}


def test_function_app_is_registration_only() -> None:
    tree = ast.parse((ROOT / "function_app.py").read_text())
    kinds = {type(node).__name__ for node in tree.body}
    assert kinds <= {"Expr", "Import", "ImportFrom", "Assign"}, kinds
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call)]
    names = sorted(ast.unparse(c.func) for c in calls)
    assert set(names) <= {"func.FunctionApp", "app.register_functions"}, names
