"""A job factory: insert a job in any status, so each state-machine rule has a short test."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

Row = dict[str, Any]


def insert_job(conn: psycopg.Connection[Any], **fields: Any) -> Row:
    """Insert one job; any column may be given. Sensible values fill the rest.

    `seconds_ago={"locked_at": 600}` sets a column to the database clock minus that much.
    """
    seconds_ago: dict[str, float] = fields.pop("seconds_ago", {})
    status = fields.setdefault("status", "QUEUED")
    fields.setdefault("input", {"source_type": "s3", "s3_key": f"videos/{uuid.uuid4().hex}.mp4"})
    fields.setdefault("idempotency_key", uuid.uuid4().hex)
    if status == "RUNNING":
        fields.setdefault("locked_by", "test-worker")
        fields.setdefault("attempts", 1)
        fields.setdefault("lease", 1)
        if "locked_at" not in seconds_ago:
            seconds_ago.setdefault("locked_at", 0)
    if status in ("SUCCEEDED", "FAILED", "CANCELLED") and "completed_at" not in seconds_ago:
        seconds_ago.setdefault("completed_at", 0)
    values: dict[str, Any] = {
        key: Jsonb(value) if key in ("input", "output", "errors") else value
        for key, value in fields.items()
    }
    columns = [*values, *seconds_ago]
    placeholders = [sql.Placeholder(key) for key in values] + [
        sql.SQL("clock_timestamp() - make_interval(secs => {})").format(
            sql.Placeholder(f"ago_{key}")
        )
        for key in seconds_ago
    ]
    params = {**values, **{f"ago_{key}": float(ago) for key, ago in seconds_ago.items()}}
    query = sql.SQL("INSERT INTO ingestion_jobs ({}) VALUES ({}) RETURNING *").format(
        sql.SQL(", ").join(map(sql.Identifier, columns)), sql.SQL(", ").join(placeholders)
    )
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(query, params)
        row = cur.fetchone()
    assert row is not None
    return row


def fetch_job(conn: psycopg.Connection[Any], job_id: Any) -> Row:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute("SELECT * FROM ingestion_jobs WHERE id = %s", (job_id,))
        row = cur.fetchone()
    assert row is not None, f"job {job_id} not found"
    return row
