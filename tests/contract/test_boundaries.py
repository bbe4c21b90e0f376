"""The architecture's import rules, checked over the tree: clients depend on the contract only.

The queue service is the only database client and its package is the server's own; the gateway
and the worker reach it through the wire contract (`jobqueue`), never by importing it. A client
that imports `queue_service` would drag the server's dependencies (and its idea of the schema)
into every worker host: this test fails the day one comes back.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.support.processes import ROOT

# package -> the top-level packages it must never import.
FORBIDDEN = {
    "gateway": {"queue_service", "worker_service", "psycopg", "psycopg_pool"},
    "worker_service": {"queue_service", "gateway", "psycopg", "psycopg_pool"},
    "jobqueue": {"queue_service", "worker_service", "gateway"},
    "queue_service": {"worker_service", "gateway"},
}


def imported_modules(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


def violations(package: str) -> list[str]:
    banned = FORBIDDEN[package]
    return [
        f"{path.relative_to(ROOT)}:{line} imports {module}"
        for path in sorted((ROOT / package).rglob("*.py"))
        for line, module in imported_modules(path)
        if module.split(".")[0] in banned
    ]


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_only_what_its_layer_allows(package: str) -> None:
    assert violations(package) == []


def test_the_check_sees_an_import(tmp_path: Path) -> None:
    # The rule must be able to fail: a planted import is found, in both spellings.
    planted = tmp_path / "client.py"
    planted.write_text("import queue_service.auth\nfrom queue_service import store\n")
    assert [module for _, module in imported_modules(planted)] == [
        "queue_service.auth",
        "queue_service",
    ]
