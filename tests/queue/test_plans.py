"""The hot path costs the same however many rows the job table holds, whatever its statistics say.

plpgsql keeps the plan it made for a statement after five calls until the table is next analyzed,
so a plan made while the table was small (a sequential scan, a hash join over one) would stay in
use as the table grows, and every call would read more of it: a single enqueue once took 2.4 ms
at 20 rows and 21 ms at 20,000. These tests make that happen on purpose: the table is analyzed
while empty, every hot function runs ten times, then 50,000 rows arrive with autovacuum off (no
ANALYZE will come). Each call must then still touch only a handful of buffers, which a plan that
scans the table cannot: a structural bound, not a timing.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.types.json import Jsonb

from tests.support.jobs import insert_job
from tests.support.plans import nested_plans, nodes

pytestmark = pytest.mark.integration

Conn = psycopg.Connection[Any]

DEPTH = 50_000
# One call's index descents, heap pages and the pages its writes touch: tens. A scan of the table
# at DEPTH rows reads more than a thousand.
MAX_BUFFERS = 60


@pytest.fixture
def stale(database_url: str) -> Iterator[Conn]:
    """A connection whose plans were all made while the table was empty and analyzed; the
    table then grows to DEPTH rows, which no ANALYZE will see."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("ALTER TABLE ingestion_jobs SET (autovacuum_enabled = false)")
        conn.execute("VACUUM ANALYZE ingestion_jobs")
        enqueue(conn, "warm")
        for i in range(10):
            enqueue(conn, "warm")  # a known key
            # Each settle, and each once more under the lease it ended.
            for settle in (
                "SELECT complete_job(%s, %s)",
                "SELECT fail_job(%s, %s, 'E', 'boom', p_retryable => false)",
                "SELECT release_job(ARRAY[%s]::uuid[], ARRAY[%s]::bigint[], '{bye}')",
            ):
                enqueue(conn, f"warm-{i}-{settle[7:15]}")
                [(job_id, lease)] = conn.execute(
                    "SELECT id, lease FROM claim_jobs('warm', 1, 'default')"
                ).fetchall()
                conn.execute(
                    "SELECT update_job_heartbeat(ARRAY[%s]::uuid[], ARRAY[%s]::bigint[], "
                    "'{x}', '{0.5}')",
                    (job_id, lease),
                )
                conn.execute(settle, (job_id, lease))
                conn.execute(settle, (job_id, lease))
            conn.execute(  # the one released, and then none
                "SELECT complete_job(c.id, c.lease) FROM claim_jobs('warm', 2, 'default') c"
            )
        fill(conn, DEPTH)
        yield conn


def fill(conn: Conn, rows: int) -> None:
    """Finished jobs, and a tenth waiting for tomorrow at a lower priority (the claim scan's
    worst case: runnable entries that are not due)."""
    conn.execute(
        """
        INSERT INTO ingestion_jobs (status, priority, run_after, input, idempotency_key,
                                    completed_at, locked_at, locked_by, lease, attempts)
        SELECT CASE WHEN g %% 10 = 0 THEN 'QUEUED' ELSE 'SUCCEEDED' END,
               CASE WHEN g %% 10 = 0 THEN -1 ELSE 0 END,
               now() + CASE WHEN g %% 10 = 0 THEN interval '1 day' ELSE interval '0' END,
               jsonb_build_object('fill', g), 'fill-' || g,
               CASE WHEN g %% 10 = 0 THEN NULL ELSE now() END,
               CASE WHEN g %% 10 = 0 THEN NULL ELSE now() END, 'filler', 1, 1
        FROM generate_series(1, %s) g
        """,
        (rows,),
    )


def enqueue(conn: Conn, name: str) -> None:
    conn.execute(
        "SELECT enqueue_job(%s)", (Jsonb({"source_type": "local", "path": f"/media/{name}"}),)
    )


def buffers(conn: Conn, call: str, params: tuple[Any, ...] = ()) -> int:
    """Shared buffers one call of a state-machine function touches, its own statements
    included (they run inside the Function Scan that EXPLAIN measures)."""
    explain = sql.SQL("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {}").format(sql.SQL(call))
    [(plan,)] = conn.execute(explain, params).fetchall()
    root = (plan if isinstance(plan, list) else json.loads(plan))[0]["Plan"]
    return int(root["Shared Hit Blocks"]) + int(root["Shared Read Blocks"])


def test_the_table_is_deep_and_its_statistics_stale(stale: Conn) -> None:
    [(analyzed_rows,)] = stale.execute(
        "SELECT reltuples FROM pg_class WHERE oid = 'ingestion_jobs'::regclass"
    ).fetchall()
    assert analyzed_rows < 100
    [(rows,)] = stale.execute("SELECT count(*) FROM ingestion_jobs").fetchall()
    assert rows > DEPTH


def test_an_enqueue_touches_a_handful_of_buffers_at_depth(stale: Conn) -> None:
    new = buffers(stale, "SELECT * FROM enqueue_job(%s)", (Jsonb({"path": "/media/new.mp4"}),))
    # A known key is looked up: one probe of the key index.
    known = buffers(stale, "SELECT * FROM enqueue_job('{}', p_key => 'fill-7')")
    assert new < MAX_BUFFERS
    assert known < MAX_BUFFERS


def test_a_claim_touches_a_handful_of_buffers_at_depth_found_or_not(stale: Conn) -> None:
    empty = buffers(stale, "SELECT * FROM claim_jobs('w', 1, 'default')")
    enqueue(stale, "due")
    found = buffers(stale, "SELECT * FROM claim_jobs('w', 1, 'default')")
    assert empty < MAX_BUFFERS
    assert found < MAX_BUFFERS


def test_heartbeat_complete_fail_and_release_touch_a_handful_of_buffers_at_depth(
    stale: Conn,
) -> None:
    first, second, third = (
        (j["id"], j["lease"]) for j in (insert_job(stale, status="RUNNING") for _ in range(3))
    )
    beat = buffers(stale, "SELECT * FROM update_job_heartbeat(%s, %s, 'x', 0.5)", first)
    complete = buffers(stale, "SELECT * FROM complete_job(%s, %s)", first)
    fail = buffers(stale, "SELECT * FROM fail_job(%s, %s, 'E', 'boom')", second)
    release = buffers(
        stale, "SELECT * FROM release_job(ARRAY[%s]::uuid[], ARRAY[%s]::bigint[], '{bye}')", third
    )
    # A lost lease is answered with the job as it is: one more probe.
    lost = buffers(stale, "SELECT * FROM complete_job(%s, %s)", second)
    touched = {"beat": beat, "complete": complete, "fail": fail, "release": release}
    assert max(*touched.values(), lost) < MAX_BUFFERS, (touched, lost)


def test_a_lost_worker_s_release_touches_a_handful_of_buffers_at_depth(stale: Conn) -> None:
    # migrations/010_worker_lost.sql: the jobs of a broken heartbeat stream, by id and lease.
    silent = insert_job(stale, status="RUNNING", seconds_ago={"last_heartbeat_at": 5})
    beaten = insert_job(stale, status="RUNNING")
    call = "SELECT * FROM release_lost_jobs(ARRAY[%s]::uuid[], '{1}', '{2}')"
    stale.execute(call, (uuid.uuid4(),))  # its first call in the session reads the catalogs
    released = buffers(stale, call, (silent["id"],))
    kept = buffers(stale, call, (beaten["id"],))
    assert released < MAX_BUFFERS
    assert kept < MAX_BUFFERS
    # Counted on calls that did their work: the silent job went, the beaten one stayed.
    statuses = dict(
        stale.execute(
            "SELECT id, status FROM ingestion_jobs WHERE id IN (%s, %s)",
            (silent["id"], beaten["id"]),
        ).fetchall()
    )
    assert statuses == {silent["id"]: "RETRY", beaten["id"]: "RUNNING"}


SETTLES = {
    "complete": "SELECT count(*) FROM complete_job(%s::uuid[], %s::bigint[], %s::jsonb[])",
    "fail": "SELECT count(*) FROM fail_job(%s::uuid[], %s::bigint[], %s::text[], %s::text[],"
    " %s::boolean[], %s::double precision[])",
    "release": "SELECT count(*) FROM release_job(%s::uuid[], %s::bigint[], %s::text[])",
}


@pytest.mark.parametrize("settle", sorted(SETTLES))
def test_a_settle_costs_each_entry_once_when_statistics_say_nothing_runs(
    db: Conn, settle: str
) -> None:
    """The planner takes the job table's statistics at their word: analyzed while every job
    was waiting, they say no job runs. A settle's UPDATE once joined its batch to the RUNNING
    jobs as a nested loop, every RUNNING row against every entry: a complete of 500 took 50 ms
    instead of 10. It finds each locked row by id now, once."""
    batch = 400
    db.execute(
        "INSERT INTO ingestion_jobs (input, idempotency_key)"
        " SELECT jsonb_build_object('n', g), 'k' || g FROM generate_series(1, %s) g",
        (batch,),
    )
    db.execute("VACUUM ANALYZE ingestion_jobs")
    claimed = db.execute("SELECT id, lease FROM claim_jobs('w', %s, 'default')", (batch,))
    ids, leases = map(list, zip(*claimed.fetchall(), strict=True))
    params: dict[str, tuple[Any, ...]] = {
        "complete": (ids, leases, ["{}"] * batch),
        "fail": (ids, leases, ["E"] * batch, ["boom"] * batch, [True] * batch, [None] * batch),
        "release": (ids, leases, ["bye"] * batch),
    }

    plans = nested_plans(db, SETTLES[settle], params[settle])

    every_node = [node for plan in plans for node in nodes(plan["Plan"])]
    assert sum(node.get("Rows Removed by Join Filter", 0) for node in every_node) < batch
    rescanned = [
        node["Node Type"]
        for node in every_node
        if node["Node Type"] in ("CTE Scan", "Function Scan", "Materialize")
        and node["Actual Loops"] > 1
    ]
    assert not rescanned
    [(settled,)] = db.execute(
        "SELECT count(*) FROM ingestion_jobs WHERE status <> 'RUNNING' AND id = ANY(%s)", (ids,)
    ).fetchall()
    assert settled == batch


def test_a_claim_runs_its_one_cached_plan(db: Conn) -> None:
    """Left to choose, plpgsql planned every claim afresh (its generic plan, made without the
    limit or the clock, looked dearer than the custom ones): a third of a small claim's time.
    The plan it keeps shows the function's parameters, where a custom one shows their values."""
    for _ in range(3):
        insert_job(db)
        db.execute("SELECT * FROM claim_jobs('w', 1, 'default')")
    insert_job(db)

    plans = nested_plans(db, "SELECT * FROM claim_jobs('w', 1, 'default')")

    [scan] = [
        node
        for plan in plans
        for node in nodes(plan["Plan"])
        if node.get("Index Name") == "ingestion_jobs_runnable_idx"
    ]
    assert scan["Actual Rows"] == 1
    assert "'" not in scan["Index Cond"], scan["Index Cond"]  # no constant: the queue, the clock
