"""Applies migrations/*.sql in order, under an advisory lock, and records what it applied.

The files are plain SQL, each its own transaction and safe to re-apply, so they also work with
bare `psql -f`. Here a file is applied when it was never applied or its content changed since
(its sha256 differs), which makes a fixed migration land on existing databases. Two queue
services starting at once serialise on the advisory lock: the second finds everything applied.

    python -m queue_service.migrate          # apply and exit (what a deploy step runs)
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import psycopg

log = logging.getLogger(__name__)

# Any constant works; it only has to be the same for every queue service of one database.
MIGRATION_LOCK_KEY = 7_310_402_611

DEFAULT_MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


@dataclass(frozen=True)
class Migration:
    version: str
    path: Path

    @property
    def sql(self) -> str:
        return self.path.read_text(encoding="utf-8")

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()


def discover(directory: Path | None = None) -> list[Migration]:
    directory = directory or Path(os.environ.get("MIGRATIONS_DIR", DEFAULT_MIGRATIONS_DIR))
    files = sorted(directory.glob("[0-9][0-9][0-9]_*.sql"))
    if not files:
        raise FileNotFoundError(f"no migrations found in {directory}")
    return [Migration(version=path.name.split("_", 1)[0], path=path) for path in files]


async def apply_async(conninfo: str, directory: Path | None = None) -> list[str]:
    """Apply pending migrations; return the file names applied."""
    migrations = discover(directory)
    applied: list[str] = []
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
        await conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))
        try:
            await conn.execute(
                """
                CREATE TABLE IF NOT EXISTS schema_migrations (
                    version    text PRIMARY KEY,
                    filename   text NOT NULL,
                    checksum   text NOT NULL,
                    applied_at timestamptz NOT NULL DEFAULT now()
                )
                """
            )
            cur = await conn.execute("SELECT version, checksum FROM schema_migrations")
            done: dict[str, str] = dict(await cur.fetchall())
            for migration in migrations:
                if done.get(migration.version) == migration.checksum:
                    continue
                log.info("applying migration %s", migration.path.name)
                # No parameters: psycopg sends the file as one simple query, so its own
                # BEGIN/COMMIT make it atomic, exactly as under psql.
                await conn.execute(migration.sql.encode())
                await conn.execute(
                    """
                    INSERT INTO schema_migrations (version, filename, checksum)
                    VALUES (%(version)s, %(filename)s, %(checksum)s)
                    ON CONFLICT (version) DO UPDATE
                    SET filename = EXCLUDED.filename, checksum = EXCLUDED.checksum,
                        applied_at = now()
                    """,
                    {
                        "version": migration.version,
                        "filename": migration.path.name,
                        "checksum": migration.checksum,
                    },
                )
                applied.append(migration.path.name)
        finally:
            await conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_KEY,))
    return applied


def main() -> int:
    import asyncio

    from queue_service.config import Config, ConfigError, mask_url

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        config = Config.from_env()
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        applied = asyncio.run(apply_async(config.database_url))
    except psycopg.Error as error:
        print(f"error: cannot migrate {mask_url(config.database_url)}: {error}", file=sys.stderr)
        return 1
    print(f"Applied {len(applied)} migrations to {mask_url(config.database_url)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
