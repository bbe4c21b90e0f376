"""A private PostgreSQL in a data folder, for running the stack with no DATABASE_URL.

It uses the machine's PostgreSQL server binaries (Debian's `postgresql` package, which
scripts/setup.sh installs when missing), listens only on a unix socket inside the data folder,
and keeps its data between runs. As root it runs the server as the `postgres` system user,
because PostgreSQL refuses to run as root.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

PORT = 5499


def _bindir() -> Path:
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if Path(candidate, "initdb").exists():
            return Path(candidate)
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    raise FileNotFoundError("no PostgreSQL server binaries (install Debian's postgresql package)")


@dataclass
class EmbeddedPostgres:
    folder: Path

    @property
    def data(self) -> Path:
        return self.folder / "data"

    @property
    def socket_dir(self) -> Path:
        return self.folder / "socket"

    @property
    def url(self) -> str:
        return f"postgresql://postgres@/postgres?host={self.socket_dir}&port={PORT}"

    def _run(self, *args: str) -> None:
        command = [str(_bindir() / args[0]), *args[1:]]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        result = subprocess.run(command, check=False, capture_output=True, text=True)
        if result.returncode != 0:
            detail = (result.stderr or result.stdout).strip().splitlines()[-3:]
            hint = ""
            if os.geteuid() == 0:
                hint = f" (as root it runs as 'postgres', which must reach {self.folder})"
            raise RuntimeError(f"{args[0]} failed{hint}: " + " | ".join(detail))

    def start(self) -> str:
        """Initialise (first time only) and start; return the connection URL."""
        self.socket_dir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            for path in (
                self.folder,
                self.socket_dir,
                *([self.data] if self.data.exists() else []),
            ):
                os.chown(path, user.pw_uid, user.pw_gid)
        if not (self.data / "PG_VERSION").exists():
            self._run(
                "initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8"
            )
        if not self.running():
            options = f"-k {self.socket_dir} -c listen_addresses='' -p {PORT}"
            self._run(
                "pg_ctl",
                "-D",
                str(self.data),
                "-o",
                options,
                "-l",
                str(self.folder / "server.log"),
                "-w",
                "start",
            )
        return self.url

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists() and subprocess.run(
            [str(_bindir() / "pg_isready"), "-q", "-h", str(self.socket_dir), "-p", str(PORT)],
            check=False,
        ).returncode == 0

    def stop(self) -> None:
        if self.running():
            self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")
