"""The migrations, applied both ways the project documents: bare `psql -f`, as the checklist
does, and queue_service.migrate, as the queue service does at start-up.

Both must build the same schema from the same files (004 includes the state machine from
migrations/job_queue/ with psql's `\\ir`, which the migrator expands itself), re-applying must
change nothing, and the migrator must re-apply 004 when a file that it includes changes.
"""

from __future__ import annotations

import re
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from queue_service import migrate
from tests.support.databases import create_database, drop_database, psql, url_for
from tests.support.processes import ROOT

pytestmark = pytest.mark.integration

MIGRATIONS = ROOT / "migrations"
FILES = [path.name for path in sorted(MIGRATIONS.glob("[0-9][0-9][0-9]_*.sql"))]

# Everything the migrations create, as the catalog states it; the migrator's own bookkeeping
# table is the one difference the two ways are allowed.
CATALOG = """
SELECT 'column', table_name || '.' || column_name,
       concat_ws(' ', ordinal_position, data_type, is_nullable, column_default)
FROM information_schema.columns
WHERE table_schema = 'public' AND table_name <> 'schema_migrations'
UNION ALL
SELECT 'constraint', conrelid::regclass || '.' || conname, pg_get_constraintdef(oid)
FROM pg_constraint
WHERE connamespace = 'public'::regnamespace AND conrelid::regclass::text <> 'schema_migrations'
UNION ALL
SELECT 'index', indexname, indexdef
FROM pg_indexes
WHERE schemaname = 'public' AND tablename <> 'schema_migrations'
UNION ALL
SELECT 'function', oid::regprocedure::text, pg_get_functiondef(oid)
FROM pg_proc
WHERE pronamespace = 'public'::regnamespace
UNION ALL
SELECT 'view', viewname, definition
FROM pg_views
WHERE schemaname = 'public'
ORDER BY 1, 2
"""


@pytest.fixture
def empty_databases() -> Iterator[tuple[str, str]]:
    """Two empty databases: one for psql, one for the migrator."""
    names = [create_database(prefix="jq_migrations") for _ in range(2)]
    try:
        yield url_for(names[0]), url_for(names[1])
    finally:
        for name in names:
            drop_database(name)


def psql_apply(url: str, *files: str, cwd: Path) -> None:
    """What the checklist runs, from a working directory other than the repository's, so that
    an include is found relative to the file that includes it."""
    for name in files or FILES:
        psql(url, "", "-q", "-f", str(MIGRATIONS / name), cwd=cwd)


def catalog(url: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(CATALOG).fetchall()


def names_of(kind: str, rows: list[tuple[Any, ...]]) -> set[str]:
    return {name.split("(")[0] for row_kind, name, _ in rows if row_kind == kind}


async def test_psql_and_the_migrator_build_the_same_schema(
    empty_databases: tuple[str, str], tmp_path: Path
) -> None:
    by_psql, by_migrator = empty_databases
    psql_apply(by_psql, cwd=tmp_path)
    assert await migrate.apply_async(by_migrator) == FILES

    built = catalog(by_psql)
    assert built == catalog(by_migrator)
    # Not two empty catalogs: the state machine and its views are there (the checklist's own
    # list is checked by tests/e2e/test_checklist.py).
    functions = names_of("function", built)
    assert {"claim_jobs", "complete_job", "notify_queue", "settle_outcomes"} <= functions
    assert len(names_of("view", built)) == 5


async def test_re_applying_either_way_changes_nothing(
    empty_databases: tuple[str, str], tmp_path: Path
) -> None:
    url, _ = empty_databases
    psql_apply(url, cwd=tmp_path)
    built = catalog(url)

    psql_apply(url, cwd=tmp_path)
    assert catalog(url) == built
    # The migrator has no record of psql's work: it applies every file, over what is there.
    assert await migrate.apply_async(url) == FILES
    assert catalog(url) == built
    # Now it has: nothing to do.
    assert await migrate.apply_async(url) == []
    psql_apply(url, cwd=tmp_path)
    assert catalog(url) == built


def test_004_re_applies_while_the_queue_is_busy(database_url: str, tmp_path: Path) -> None:
    # A deploy re-runs the migrations against a live queue: enqueue, claim and complete keep
    # working throughout, and the re-apply does not time out on their locks.
    stop = threading.Event()
    settled: list[int] = []
    errors: list[BaseException] = []

    def busy_queue() -> None:
        try:
            with psycopg.connect(database_url, autocommit=True) as conn:
                while not stop.is_set():
                    conn.execute("SELECT enqueue_job(jsonb_build_object('n', gen_random_uuid()))")
                    conn.execute(
                        """
                        SELECT count(*) FROM claim_jobs('busy', 5) c,
                             LATERAL complete_job(c.id, c.lease) d
                        WHERE d.outcome = 'ok'
                        """
                    )
                    conn.execute("SELECT count(*) FROM job_queue_stats")
                    settled.append(1)
        except BaseException as error:  # reported below, in the test's own thread
            errors.append(error)

    worker = threading.Thread(target=busy_queue)
    worker.start()
    try:
        for _ in range(3):
            psql_apply(database_url, "004_job_queue_heartbeat.sql", cwd=tmp_path)
    finally:
        stop.set()
        worker.join(timeout=30)
    assert not errors, errors
    assert settled


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("SELECT 1;\n\\set ON_ERROR_STOP 1\n", r"001_x\.sql:2: '\\set ON_ERROR_STOP 1' is a psql"),
        ("\\i job_queue/claim.sql\n", r"001_x\.sql:1: '\\i job_queue/claim\.sql' is a psql"),
        ("SELECT 1; \\ir other.sql\n", r"001_x\.sql:1: '\\ir other\.sql' is a psql"),
        ("\\ir missing.sql\n", r"001_x\.sql:1: included file .*missing\.sql does not exist"),
        ("\\ir 001_x.sql\n", r"001_x\.sql: includes itself"),
    ],
)
def test_the_migrator_refuses_what_only_psql_could_run(
    tmp_path: Path, text: str, complaint: str
) -> None:
    (tmp_path / "001_x.sql").write_text(text, encoding="utf-8")
    with pytest.raises(migrate.MigrationError, match=complaint):
        migrate.discover(tmp_path)


def test_backslashes_in_strings_comments_and_function_bodies_are_sql(tmp_path: Path) -> None:
    text = (
        "SELECT E'\\n', E'it\\'s', 'C:\\', \"a\\b\";\n"
        "-- \\set in a comment\n"
        "/* \\set /* nested */ still a comment */\n"
        "CREATE FUNCTION f() RETURNS text LANGUAGE sql AS $body$\n"
        "\\set x 1\n"
        "$body$;\n"
    )
    (tmp_path / "001_x.sql").write_text(text, encoding="utf-8")
    assert migrate.discover(tmp_path)[0].sql == text


async def test_a_change_to_an_included_file_re_applies_the_migration_that_includes_it(
    database_url: str, tmp_path: Path
) -> None:
    copy = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS, copy)
    before = {m.version: m for m in migrate.discover(copy)}
    assert not re.search(r"^\s*\\", before["004"].sql, re.MULTILINE)  # no meta-command left
    assert "FUNCTION claim_jobs(" in before["004"].sql
    # The template database was migrated from the same files: nothing is pending.
    assert await migrate.apply_async(database_url, copy) == []

    with (copy / "job_queue" / "claim.sql").open("a", encoding="utf-8") as claim:
        claim.write("-- a fix to the claim\n")
    after = {m.version: m.checksum for m in migrate.discover(copy)}
    assert after["004"] != before["004"].checksum
    assert (after["003"], after["005"]) == (before["003"].checksum, before["005"].checksum)
    assert await migrate.apply_async(database_url, copy) == ["004_job_queue_heartbeat.sql"]
