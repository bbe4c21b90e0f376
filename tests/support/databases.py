"""Test databases: one migrated template per session, a fresh copy per test.

CREATE DATABASE ... TEMPLATE copies the migrated schema in milliseconds, so every test starts
from an empty, fully migrated database and no test sees another's rows. `psql` runs SQL the way
an operator does, with the real client.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

from queue_service import migrate
from tests.support.processes import output_of

ADMIN_URL = os.environ.get(
    "TEST_ADMIN_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


def url_for(database: str) -> str:
    parts = urlsplit(ADMIN_URL)
    return urlunsplit(parts._replace(path=f"/{database}"))


def create_database(template: str | None = None, prefix: str = "jq_test") -> str:
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        if template:
            conn.execute(
                sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                    sql.Identifier(name), sql.Identifier(template)
                )
            )
        else:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return name


def drop_database(name: str) -> None:
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def create_template() -> str:
    name = create_database(prefix="jq_template")
    asyncio.run(migrate.apply_async(url_for(name)))
    return name


def psql(database_url: str, script: str, *options: str, cwd: Path | None = None) -> str:
    """Run SQL with the real psql, as an operator pastes it (stdin) or names a file (`-f`),
    stopping on any error; returns what it printed."""
    return output_of(
        ["psql", database_url, "-X", "-v", "ON_ERROR_STOP=1", *options],
        what=f"psql {' '.join(options)}\n{script}",
        timeout=120,
        input=script,
        cwd=cwd,
    )
