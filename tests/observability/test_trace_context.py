"""Migration 011's enqueue_jobs_traced: each new job keeps the trace context of its call; a job
that already existed keeps its own; an empty context writes nothing (NULL, as with tracing off)."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

pytestmark = pytest.mark.integration

FIRST = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
SECOND = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def enqueue(db: psycopg.Connection[Any], keys: list[str], contexts: list[str]) -> list[Any]:
    return db.execute(
        """
        SELECT job_id, already_existed
        FROM enqueue_jobs_traced(%(inputs)s::jsonb[], %(queues)s, %(priorities)s,
                                 %(tries)s, %(keys)s, %(due)s::timestamptz[], %(contexts)s)
        """,
        {
            "inputs": [f'{{"n": {i}}}' for i in range(len(keys))],
            "queues": ["default"] * len(keys),
            "priorities": [0] * len(keys),
            "tries": [0] * len(keys),
            "keys": keys,
            "due": [None] * len(keys),
            "contexts": contexts,
        },
    ).fetchall()


def stored(db: psycopg.Connection[Any], job_id: Any) -> str | None:
    row = db.execute("SELECT trace_context FROM ingestion_jobs WHERE id = %s", (job_id,)).fetchone()
    assert row is not None
    return row[0]


def test_each_new_job_keeps_its_own_context(db: psycopg.Connection[Any]) -> None:
    (a, a_known), (b, b_known), (c, _) = enqueue(db, ["a", "b", "c"], [FIRST, SECOND, ""])
    assert not a_known and not b_known
    assert (stored(db, a), stored(db, b), stored(db, c)) == (FIRST, SECOND, None)


def test_a_known_key_keeps_the_context_of_the_call_that_made_it(
    db: psycopg.Connection[Any],
) -> None:
    ((made, _),) = enqueue(db, ["same"], [FIRST])
    ((again, known),) = enqueue(db, ["same"], [SECOND])
    assert known and again == made
    assert stored(db, made) == FIRST


def test_the_answer_is_enqueue_jobs_answer(db: psycopg.Connection[Any]) -> None:
    """Same rows, same order, as the untraced function's (the queue service reads them alike)."""
    traced = db.execute(
        """SELECT already_existed, status, max_attempts, idempotency_key
           FROM enqueue_jobs_traced(ARRAY['{"x": 1}', '{"x": 2}']::jsonb[],
                                    ARRAY['default', 'default'], ARRAY[0, 0], ARRAY[3, 0],
                                    ARRAY['k1', 'k2'], ARRAY[NULL, NULL]::timestamptz[],
                                    ARRAY['', ''])"""
    ).fetchall()
    assert traced == [(False, "QUEUED", 3, "k1"), (False, "QUEUED", 5, "k2")]
