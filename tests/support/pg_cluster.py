"""A throwaway PostgreSQL cluster of a test's own, to restart and stop at will.

The shared cluster on 5432 serves every other test and is never touched: a test that restarts
PostgreSQL (fast or immediate shutdown, an outage) makes its own with Debian's binaries, on a
free port, with its data directory under the system's temporary folder, and removes it after.
Run as root, the server runs as the `postgres` user (PostgreSQL refuses to run as root).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

from tests.support.processes import free_port

BIN = Path(os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin"))
INITDB_OPTIONS = ("-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
ShutdownMode = Literal["smart", "fast", "immediate"]


class Cluster:
    def __init__(self, folder: Path, port: int) -> None:
        self.folder = folder
        self.data = folder / "data"
        self.log = folder / "server.log"
        self.port = port

    @property
    def _pg_ctl(self) -> list[str]:
        return [str(BIN / "pg_ctl"), "-D", str(self.data)]

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, args: Sequence[str], timeout: float = 60) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        result = subprocess.run(
            [*prefix, *args], capture_output=True, text=True, timeout=timeout, cwd=self.folder
        )
        assert result.returncode == 0, (
            f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}\n"
            f"server log:\n{self.log.read_text() if self.log.exists() else ''}"
        )

    def init(self) -> None:
        if os.geteuid() == 0:
            shutil.chown(self.folder, "postgres", "postgres")
        self._run(
            [str(BIN / "initdb"), "-D", str(self.data), *INITDB_OPTIONS],
            timeout=120,
        )

    def start(self) -> None:
        # fsync off: a committed transaction is in the operating system's hands, which
        # survives any shutdown of PostgreSQL's (immediate included), only not a crash of the
        # host. synchronous_commit stays on: with it off, an immediate shutdown forgets the last
        # commits that clients were told about, and a test would see that, not the queue.
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.folder} "
            "-c fsync=off -c full_page_writes=off"
        )
        self._run([*self._pg_ctl, "-l", str(self.log), "-o", options, "-w", "start"])

    def stop(self, mode: ShutdownMode = "fast") -> None:
        self._run([*self._pg_ctl, "-m", mode, "-w", "stop"])

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()


@contextmanager
def throwaway_cluster() -> Iterator[Cluster]:
    folder = Path(tempfile.mkdtemp(prefix="jq-faults-pg-"))
    cluster = Cluster(folder, free_port())
    try:
        cluster.init()
        cluster.start()
        yield cluster
    finally:
        if cluster.running():
            cluster.stop("immediate")
        shutil.rmtree(folder, ignore_errors=True)
