"""A real, throw-away PostgreSQL server for the tests (Debian's ``postgresql`` package).

``initdb`` + ``pg_ctl`` in a temporary folder, listening on 127.0.0.1 at a free port, trust
authentication for loopback only. PostgreSQL refuses to run as root (CI runs as root), so the
server then runs as the ``postgres`` user (created by the Debian package) or ``nobody``, through
``runuser``. Why not pytest-postgresql: these tests stop and restart the server mid-test
(outage tests) and must drop root privileges; a small fixture does both plainly.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def find_bindir() -> Path:
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                        key=lambda p: int(Path(p).parent.parent.name) if Path(p).parent.parent.name.isdigit() else 0)
    if candidates:
        return Path(candidates[-1]).parent
    found = shutil.which("initdb") or shutil.which("pg_ctl")
    if found:
        return Path(found).parent
    raise RuntimeError("PostgreSQL server binaries not found (initdb, pg_ctl): `.ci/run` installs Debian's "
                       "postgresql package; or apt-get install postgresql")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PgServer:
    def __init__(self) -> None:
        self.bindir = find_bindir()
        self.port = free_port()
        self.base = Path(tempfile.mkdtemp(prefix="ptsd-cds-pg-"))
        self.data = self.base / "data"
        self.logfile = self.base / "server.log"
        self.user = None
        if os.geteuid() == 0:
            for name in ("postgres", "nobody"):
                try:
                    self.user = pwd.getpwnam(name)
                    break
                except KeyError:
                    continue
            if self.user is None:
                raise RuntimeError("running as root and no 'postgres' or 'nobody' user to run PostgreSQL as")
            os.chown(self.base, self.user.pw_uid, self.user.pw_gid)
        os.chmod(self.base, 0o700)

    def _run(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        if self.user is not None:
            cmd = ["runuser", "-u", self.user.pw_name, "--", *cmd]
        return subprocess.run(cmd, check=check, capture_output=True, text=True, timeout=timeout, cwd=self.base)

    def init(self) -> "PgServer":
        self._run("initdb", "-D", str(self.data), "-U", "ptsd", "--auth=trust", "-E", "UTF8", "--no-sync",
                  "--locale=C")
        return self.start()

    def start(self) -> "PgServer":
        opts = (f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1 -c fsync=off "
                f"-c full_page_writes=off -c max_connections=100 -c shared_buffers=16MB")
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.logfile), "-o", opts, "-w", "-t", "30", "start")
        return self

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "30", "stop", check=False)

    def running(self) -> bool:
        return self._run("pg_ctl", "-D", str(self.data), "status", check=False).returncode == 0

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://ptsd@127.0.0.1:{self.port}/{dbname}"

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def destroy(self) -> None:
        self.stop("immediate")
        for _ in range(20):
            if not self.running():
                break
            time.sleep(0.1)
        shutil.rmtree(self.base, ignore_errors=True)
