r"""Applies migrations/*.sql in order, under an advisory lock, and records what it applied.

The files are plain SQL, each its own transaction and safe to re-apply, so they also work with
bare `psql -f`. A file may include others with psql's `\ir <file>` (relative to the including
file; 004 includes the state machine from migrations/job_queue/ that way). This module expands
those includes itself, as psql would, and refuses any other meta-command, which only psql could
run. A file is applied when it was never applied or its expanded text changed since (its sha256
differs), so a fixed migration, or a fixed file that it includes, lands on existing databases.
Two queue services starting at once serialise on the advisory lock: the second finds everything
applied.

    python -m queue_service.migrate          # apply and exit (what a deploy step runs)
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg

log = logging.getLogger(__name__)

# Any constant works; it only has to be the same for every queue service of one database.
MIGRATION_LOCK_KEY = 7_310_402_611

DEFAULT_MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


class MigrationError(Exception):
    """A migration that cannot be applied as written; the message names the file and line."""


@dataclass(frozen=True)
class Migration:
    version: str
    path: Path
    # The file with its includes expanded: what the database runs, and what the checksum covers.
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def discover(directory: Path | None = None) -> list[Migration]:
    """Every migration of `directory`, in order, its includes expanded (MigrationError if one
    cannot be, before anything is applied)."""
    directory = directory or Path(os.environ.get("MIGRATIONS_DIR", DEFAULT_MIGRATIONS_DIR))
    files = sorted(directory.glob("[0-9][0-9][0-9]_*.sql"))
    if not files:
        raise FileNotFoundError(f"no migrations found in {directory}")
    return [
        Migration(version=path.name.split("_", 1)[0], path=path, sql=expand(path)) for path in files
    ]


# What psql passes over when it looks for a backslash command: quoted text and comments.
_LEXEME = re.compile(
    r"""
      (?P<dollar> (?<![\w$]) \$ (?:[^\W\d]\w*)? \$ )   # $$ or $tag$ opens a dollar quote
    | (?P<escaped> (?<![\w$]) [Ee]' )                  # E'...': backslashes escape
    | (?P<quote> ['"] )                                # '...' or "identifier"
    | (?P<line_comment> --[^\n]* )
    | (?P<block_comment> /\* )                         # /* ... */, which nest
    | (?P<meta> \\ )                                   # a meta-command, to the end of its line
    """,
    re.VERBOSE,
)
_QUOTED_REST = {
    "'": re.compile(r"(?:[^']|'')*'"),
    '"': re.compile(r'(?:[^"]|"")*"'),
    "E'": re.compile(r"(?:[^'\\]|''|\\.)*'", re.DOTALL),
}
_COMMENT_MARK = re.compile(r"/\*|\*/")
_INCLUDE = re.compile(r"\\(?:ir|include_relative)[ \t]+(?:'(?P<quoted>[^']+)'|(?P<bare>[^\s']+))")


def _meta_commands(text: str) -> Iterator[tuple[int, int]]:
    """(start, end) of each psql meta-command: a backslash outside quotes and comments, to the
    end of its line."""
    pos = 0
    while match := _LEXEME.search(text, pos):
        pos = match.end()
        if match["meta"]:
            end = text.find("\n", match.start())
            pos = len(text) if end < 0 else end
            yield match.start(), pos
        elif match["dollar"]:
            close = text.find(match["dollar"], pos)
            pos = len(text) if close < 0 else close + len(match["dollar"])
        elif match["escaped"] or match["quote"]:
            rest = _QUOTED_REST["E'" if match["escaped"] else match["quote"]].match(text, pos)
            pos = rest.end() if rest else len(text)
        elif match["block_comment"]:
            depth = 1
            while depth and (mark := _COMMENT_MARK.search(text, pos)):
                depth += 1 if mark.group() == "/*" else -1
                pos = mark.end()
            if depth:
                pos = len(text)


def expand(path: Path, including: tuple[Path, ...] = ()) -> str:
    r"""The text of `path` with each `\ir <file>` line replaced by that file, expanded in turn.

    Like psql, the file is found relative to the directory of the file that includes it.
    """
    if path.resolve() in including:
        chain = " -> ".join(str(p) for p in (*including, path.resolve()))
        raise MigrationError(f"{path}: includes itself ({chain})")
    text = path.read_bytes().decode("utf-8")
    parts: list[str] = []
    done = 0
    for start, end in _meta_commands(text):
        line_start = text.rfind("\n", 0, start) + 1
        where = f"{path}:{text.count(chr(10), 0, start) + 1}"
        command = text[start:end].strip()
        include = _INCLUDE.fullmatch(command)
        if include is None or text[line_start:start].strip():
            raise MigrationError(
                f"{where}: '{command}' is a psql meta-command that migrations may not use; "
                "the only one allowed is '\\ir <file>' on a line of its own, which includes "
                "a file relative to this one"
            )
        target = path.parent / (include["quoted"] or include["bare"])
        if not target.is_file():
            raise MigrationError(f"{where}: included file {target} does not exist")
        included = expand(target, (*including, path.resolve()))
        parts += [text[done:line_start], included if included.endswith("\n") else included + "\n"]
        done = min(end + 1, len(text))
    parts.append(text[done:])
    return "".join(parts)


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
    except MigrationError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except psycopg.Error as error:
        print(f"error: cannot migrate {mask_url(config.database_url)}: {error}", file=sys.stderr)
        return 1
    print(f"Applied {len(applied)} migrations to {mask_url(config.database_url)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
