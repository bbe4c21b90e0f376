"""A settle answers every entry of its batch in the order the entries came.

When every entry settled, settle_outcomes answers from the settled rows alone, without reading
the table (job_queue/settle.sql): the rows come back from the UPDATE in whatever order it met
them, so the answer must put them back in the entries' order. The queue service pairs answers
with requests by position.
"""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from tests.support.jobs import insert_job

pytestmark = pytest.mark.integration

Conn = psycopg.Connection[Any]

SETTLES = {
    "complete": "SELECT job_id, outcome FROM complete_job(%s::uuid[], %s::bigint[], %s::jsonb[])",
    "fail": "SELECT job_id, outcome FROM fail_job(%s::uuid[], %s::bigint[], %s::text[],"
    " %s::text[], %s::boolean[], %s::double precision[])",
    "release": "SELECT job_id, outcome FROM release_job(%s::uuid[], %s::bigint[], %s::text[])",
}


def settle(db: Conn, how: str, jobs: list[tuple[Any, int]]) -> list[tuple[Any, str]]:
    ids = [job_id for job_id, _ in jobs]
    leases = [lease for _, lease in jobs]
    n = len(jobs)
    params: dict[str, tuple[Any, ...]] = {
        "complete": (ids, leases, ["{}"] * n),
        "fail": (ids, leases, ["E"] * n, ["boom"] * n, [True] * n, [None] * n),
        "release": (ids, leases, ["bye"] * n),
    }
    return db.execute(SETTLES[how], params[how]).fetchall()


@pytest.mark.parametrize("how", sorted(SETTLES))
def test_an_all_settled_batch_is_answered_in_the_entries_order(db: Conn, how: str) -> None:
    jobs = [
        (job["id"], job["lease"]) for job in (insert_job(db, status="RUNNING") for _ in range(40))
    ]
    # Neither the ids' order nor the rows' order on disk.
    entries = sorted(jobs, key=lambda job: str(job[0])[::-1])

    answers = settle(db, how, entries)

    assert answers == [(job_id, "ok") for job_id, _ in entries]


@pytest.mark.parametrize("how", sorted(SETTLES))
def test_a_batch_with_an_unsettled_entry_is_answered_in_the_entries_order(
    db: Conn, how: str
) -> None:
    jobs = [
        (job["id"], job["lease"]) for job in (insert_job(db, status="RUNNING") for _ in range(10))
    ]
    lost = insert_job(db, status="RUNNING", lease=3)
    entries = [*jobs[:5], (lost["id"], 2), *jobs[5:]]

    answers = settle(db, how, entries)

    expected = [(job_id, "ok") for job_id, _ in entries]
    expected[5] = (lost["id"], "lease_lost")
    assert answers == expected


@pytest.mark.parametrize("how", sorted(SETTLES))
def test_a_job_twice_in_a_batch_settles_once_and_each_entry_is_answered(db: Conn, how: str) -> None:
    # Duplicates never take the all-settled answer (fewer rows settle than there are entries):
    # the same lease twice is ok twice; an old lease beside the current one is lease_lost.
    twice = insert_job(db, status="RUNNING", lease=3)
    reclaimed = insert_job(db, status="RUNNING", lease=5)
    entries = [(twice["id"], 3), (reclaimed["id"], 4), (twice["id"], 3), (reclaimed["id"], 5)]

    answers = settle(db, how, entries)

    assert answers == [
        (twice["id"], "ok"),
        (reclaimed["id"], "lease_lost"),
        (twice["id"], "ok"),
        (reclaimed["id"], "ok"),
    ]
    if how == "fail":  # one failed attempt each, however many entries named it
        histories = db.execute(
            "SELECT jsonb_array_length(errors) FROM ingestion_jobs WHERE id = ANY(%s)",
            ([twice["id"], reclaimed["id"]],),
        ).fetchall()
        assert histories == [(1,), (1,)]
