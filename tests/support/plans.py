"""The plans PostgreSQL really ran, read with auto_explain, for tests that hold a statement to
its plan's shape."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import psycopg
from psycopg import sql


def nested_plans(
    conn: psycopg.Connection[Any], call: str, params: tuple[Any, ...] = ()
) -> list[dict[str, Any]]:
    """The executed plan of every statement that one call runs, its functions' own included
    (auto_explain's JSON: "Query Text", "Plan", ...)."""
    plans: list[dict[str, Any]] = []

    def keep(notice: psycopg.errors.Diagnostic) -> None:
        text = notice.message_primary or ""
        if "plan:" in text:
            plans.append(json.loads(text.split("plan:", 1)[1]))

    for setting in (
        "LOAD 'auto_explain'",
        "SET auto_explain.log_min_duration = 0",
        "SET auto_explain.log_analyze = on",
        "SET auto_explain.log_nested_statements = on",
        "SET auto_explain.log_format = json",
        "SET auto_explain.log_level = notice",
    ):
        conn.execute(setting)
    conn.add_notice_handler(keep)
    try:
        conn.execute(sql.SQL(call), params)  # type: ignore[arg-type]
    finally:
        conn.remove_notice_handler(keep)
        conn.execute("SET auto_explain.log_min_duration = -1")
    return plans


def nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """A plan node and every node under it."""
    yield plan
    for child in plan.get("Plans", []):
        yield from nodes(child)
