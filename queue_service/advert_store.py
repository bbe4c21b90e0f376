"""Where the pipeline's adverts are written and read: the tables of migrations/005.

`store_advert` is one transaction: the lease check of the job it names, the upsert keyed by
source_key, and the replacement of the advert's chunks. A worker whose lease is gone gets
LeaseLost and changes nothing, so a zombie cannot overwrite the work of the job's current
owner; an advert held by another job that still runs is AdvertHeld (FAILED_PRECONDITION), so one
job cannot wipe another's. Queries live in sql/adverts.sql.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import cache
from pathlib import Path
from typing import Any
from uuid import UUID

import psycopg
import psycopg_pool
from google.protobuf import json_format
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from jobqueue.v1 import advert_service_pb2
from queue_service.errors import AdvertHeld, InvalidArgument, LeaseLost, NotFound
from queue_service.pools import Pool

log = logging.getLogger(__name__)

QUERIES_PATH = Path(__file__).parent / "sql" / "adverts.sql"

Row = dict[str, Any]


@cache
def queries() -> dict[str, str]:
    """The named queries of sql/adverts.sql (`-- name: X` opens each), loaded once."""
    text = QUERIES_PATH.read_text(encoding="utf-8")
    parts = re.split(r"^-- name: (\w+)\s*$", text, flags=re.MULTILINE)
    return {name: body.strip() for name, body in zip(parts[1::2], parts[2::2], strict=True)}


def parse_uuid(value: str, field: str) -> UUID:
    try:
        return UUID(value)
    except ValueError:
        raise InvalidArgument(f"{field} must be a UUID, got {value!r}", field=field) from None


def _struct(message: Any) -> dict[str, Any]:
    return json_format.MessageToDict(message)


def advert_from_row(row: Row) -> advert_service_pb2.Advert:
    advert = advert_service_pb2.Advert(
        id=str(row["id"]),
        source_key=row["source_key"],
        job_id=str(row["job_id"]) if row["job_id"] else "",
        transcript=row["transcript"],
    )
    advert.media.update(row["media"])
    advert.analysis.update(row["analysis"])
    advert.provenance.update(row["provenance"])
    for frame in row["keyframes"]:
        advert.keyframes.add(
            timestamp_seconds=float(frame.get("timestamp_seconds", 0.0)),
            uri=str(frame.get("uri", "")),
            width=int(frame.get("width", 0)),
            height=int(frame.get("height", 0)),
        )
    for chunk in row["chunks"]:
        advert.chunks.add(
            index=int(chunk["index"]),
            kind=chunk["kind"],
            text=chunk["text"],
            embedding=[float(x) for x in chunk["embedding"]],
            embedding_model=chunk["embedding_model"],
        )
    advert.created_at.FromDatetime(row["created_at"])
    advert.updated_at.FromDatetime(row["updated_at"])
    return advert


def _chunks_json(advert: advert_service_pb2.Advert) -> str:
    """The chunks as the JSON array insert_chunks reads. One json.dumps call per chunk, so that
    the thread running this gives the event loop the GIL between them (a single call over all
    chunks would hold it for seconds)."""
    return (
        "["
        + ",".join(
            json.dumps(
                {
                    "chunk_index": chunk.index,
                    "kind": chunk.kind,
                    "text": chunk.text,
                    "embedding": list(chunk.embedding),
                    "embedding_model": chunk.embedding_model,
                }
            )
            for chunk in advert.chunks
        )
        + "]"
    )


class AdvertStore:
    def __init__(self, pool: Pool | psycopg_pool.AsyncConnectionPool) -> None:
        # The service gives its adverts pool (pools.py), whose connections time their statements
        # out: a huge advert cannot hold the job tables' connections, nor a lock for ever.
        self.pool = pool if isinstance(pool, Pool) else Pool(pool)

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[psycopg.AsyncCursor[Row]]:
        # A lost connection, a timeout or no free connection leaves as StoreUnavailable (pools.py):
        # the transaction did not commit, nothing changed, the caller may retry.
        try:
            async with (
                self.pool.connection() as conn,
                conn.transaction(),
                conn.cursor(row_factory=dict_row) as cur,
            ):
                yield cur
        except psycopg.errors.DataError as error:
            raise InvalidArgument(f"invalid value: {error.diag.message_primary}") from error
        except psycopg.errors.IntegrityError as error:
            message = error.diag.message_primary
            raise InvalidArgument(f"rejected by the schema: {message}") from error

    async def store_advert(
        self, advert: advert_service_pb2.Advert, job_id: str, lease: int
    ) -> tuple[str, bool]:
        """Upsert the advert by source_key; return (ad_id, created).

        The write happens only while `job_id` is RUNNING under `lease` (LeaseLost otherwise),
        and replaces an existing advert only when that lease may (AdvertHeld otherwise);
        nothing is written when it is refused.
        """
        if not advert.source_key:
            raise InvalidArgument("advert.source_key is required", field="advert.source_key")
        job = parse_uuid(job_id, "job_id")
        if lease < 1:
            raise InvalidArgument("lease is required: the job's current lease", field="lease")
        # Encoded in a thread, before the job's row is locked: 4,000 chunks of 1,536 floats are
        # 6 million floats, ~10 s of JSON encoding that once ran on the event loop, stalling
        # every call of the service, with the row held.
        chunks_json = await asyncio.to_thread(_chunks_json, advert)
        keyframes = [
            {
                "timestamp_seconds": frame.timestamp_seconds,
                "uri": frame.uri,
                "width": frame.width,
                "height": frame.height,
            }
            for frame in advert.keyframes
        ]
        async with self._transaction() as cur:
            await cur.execute(queries()["lease_check"], {"job_id": job})
            current = await cur.fetchone()
            if current is None or current["status"] != "RUNNING" or current["lease"] != lease:
                raise LeaseLost(
                    f"job {job} is not running under lease {lease}",
                    job_id=str(job),
                    status=current["status"] if current else "NOT_FOUND",
                )
            await cur.execute(
                queries()["upsert_advert"],
                {
                    "source_key": advert.source_key,
                    "job_id": job,
                    "lease": lease,
                    "media": Jsonb(_struct(advert.media)),
                    "transcript": advert.transcript,
                    "analysis": Jsonb(_struct(advert.analysis)),
                    "keyframes": Jsonb(keyframes),
                    "provenance": Jsonb(_struct(advert.provenance)),
                },
            )
            row = await cur.fetchone()
            if row is None:
                await cur.execute(queries()["advert_holder"], {"source_key": advert.source_key})
                holder = await cur.fetchone()
                raise AdvertHeld(
                    f"the advert of {advert.source_key} is held by job "
                    f"{holder['job_id'] if holder else '?'}, which still runs",
                    job_id=str(holder["job_id"]) if holder else "",
                    status=str(holder["status"]) if holder else "",
                )
            ad_id, created = row["id"], bool(row["created"])
            await cur.execute(queries()["delete_chunks"], {"advert_id": ad_id})
            if advert.chunks:
                await cur.execute(
                    queries()["insert_chunks"], {"advert_id": ad_id, "chunks": chunks_json}
                )
        log.info(
            "stored advert %s for %s (created=%s, job=%s, %d chunks)",
            ad_id,
            advert.source_key,
            created,
            job,
            len(advert.chunks),
        )
        return str(ad_id), created

    async def get_advert(self, ad_id: str) -> advert_service_pb2.Advert:
        advert_id = parse_uuid(ad_id, "ad_id")
        async with self._transaction() as cur:
            await cur.execute(queries()["get_advert"], {"advert_id": advert_id})
            row = await cur.fetchone()
        if row is None:
            raise NotFound(f"advert {advert_id} not found", ad_id=str(advert_id))
        return advert_from_row(row)
