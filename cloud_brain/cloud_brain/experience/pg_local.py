"""A throw-away local PostgreSQL server: initdb into a directory, listen on 127.0.0.1 at a free port.

For the demo on replicas (`nestor demo --store postgres`), `make bench-load` and the tests; a real
deployment points `store.dsn` at its own server. The binaries come from the Debian package
`postgresql` (/usr/lib/postgresql/<version>/bin). Run as root, the cluster belongs to the
`postgres` system user and every command runs through `runuser`, since PostgreSQL refuses to run
as root. Authentication is `trust`, which is why the server listens on 127.0.0.1 only.
"""

from __future__ import annotations

import glob
import os
import pathlib
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import uuid


def _bin_dir() -> str | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    return os.path.dirname(found[-1]) if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    """One throw-away PostgreSQL cluster (initdb, pg_ctl) on 127.0.0.1."""

    def __init__(self, directory: str | pathlib.Path | None = None):
        self.bin = _bin_dir()
        if self.bin is None:
            raise FileNotFoundError("no /usr/lib/postgresql/*/bin/initdb (apt-get install -y postgresql)")
        self.as_root = os.geteuid() == 0
        self.user = "postgres" if self.as_root else pwd.getpwuid(os.geteuid()).pw_name
        self.dir = pathlib.Path(directory) if directory else pathlib.Path(tempfile.mkdtemp(prefix="nestor-pg-"))
        self.dir.mkdir(parents=True, exist_ok=True)
        self.data = self.dir / "data"
        self.sock = self.dir / "sock"
        self.sock.mkdir(exist_ok=True)
        self.port = _free_port()
        if self.as_root:
            shutil.chown(self.dir, self.user)
            shutil.chown(self.sock, self.user)
            os.chmod(self.dir, 0o755)

    def _run(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        cmd = [os.path.join(self.bin, args[0]), *args[1:]]
        if self.as_root:
            cmd = ["runuser", "-u", self.user, "--", *cmd]
        # cwd: the postgres user may not be allowed into the caller's directory.
        return subprocess.run(cmd, capture_output=True, text=True, check=check, timeout=timeout, cwd=self.dir)

    def start(self) -> PostgresServer:
        self._run("initdb", "-D", str(self.data), "-U", self.user, "--auth=trust", "-E", "UTF8", "--no-sync")
        self._pg_ctl_start()
        return self

    def _pg_ctl_start(self) -> None:
        options = (
            f"-c listen_addresses=127.0.0.1 -c port={self.port} -c unix_socket_directories={self.sock}"
            " -c max_connections=200 -c fsync=on -c synchronous_commit=on"
        )
        self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.dir / "server.log"), "-o", options, "-w", "-t", "60", "start"
        )

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop", check=False)

    def restart(self, mode: str = "immediate") -> None:
        """Stop (immediate = like a crash: no checkpoint, clients cut) and start again."""
        self.stop(mode)
        self._pg_ctl_start()

    def dsn(self, dbname: str = "postgres") -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{dbname}"

    def create_database(self, name: str | None = None) -> str:
        """A fresh database (a random name unless given); returns its DSN."""
        name = name or "t_" + uuid.uuid4().hex[:12]
        admin(self.dsn(), f"CREATE DATABASE {name}")
        return self.dsn(name)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join((self.dir / "server.log").read_text().splitlines()[-lines:])
        except OSError:
            return ""

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def admin(dsn: str, sql: str, timeout: float = 30.0) -> None:
    """Run one statement outside a transaction (CREATE DATABASE), retrying while the server starts."""
    import psycopg

    deadline = time.monotonic() + timeout
    while True:
        try:
            with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
                conn.execute(sql)
            return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
