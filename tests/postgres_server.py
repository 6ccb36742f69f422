"""A real PostgreSQL server for tests: Debian's ``postgresql`` package (``make postgres`` installs it), a cluster made
by ``initdb`` in a temporary folder and started by ``pg_ctl`` on a free 127.0.0.1 port (about 3 s).

>>> with PostgresServer(tmp_dir) as server:
...     url = server.new_database()   # postgresql://postgres@127.0.0.1:PORT/qa_1

The session fixture ``postgres_server`` (conftest.py; its tests are marked ``server``) starts one server for the
run; each test takes a fresh database (``pg_url``). When the tests run as root, the cluster runs as the
``postgres`` user (PostgreSQL refuses root), through ``runuser``.
"""

from __future__ import annotations

import glob
import itertools
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from chroma_server import free_port

_numbers = itertools.count(1)


def pg_bin() -> Path:
    """The newest installed PostgreSQL's ``bin`` folder."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parent.parent.name))
    if not found:
        raise RuntimeError("PostgreSQL is not installed: run `make postgres` (apt-get install postgresql)")
    return Path(found[-1]).parent


class PostgresServer:
    """``initdb`` + ``pg_ctl start`` on 127.0.0.1 (trust authentication, no fsync: a test cluster)."""

    def __init__(self, path: Path | None = None, port: int | None = None) -> None:
        # a folder of its own under /tmp: the ``postgres`` user cannot reach into pytest's root-only tmp folders
        self._own = path is None
        self.path = Path(tempfile.mkdtemp(prefix="qa-postgres-")) if path is None else Path(path)
        self.port = port or free_port()
        self.data = self.path / "data"
        self.log = self.path / "postgres.log"
        self.bin = pg_bin()
        self._as_postgres = os.geteuid() == 0

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        argv = [str(self.bin / command[0]), *command[1:]]
        if self._as_postgres:
            argv = ["runuser", "-u", "postgres", "--", *argv]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
        if check and result.returncode != 0:
            raise RuntimeError(f"{command[0]} failed ({result.returncode}): {(result.stderr or result.stdout).strip()[-2000:]}")
        return result

    def start(self) -> PostgresServer:
        self.path.mkdir(parents=True, exist_ok=True)
        if self._as_postgres:
            shutil.chown(self.path, "postgres", "postgres")
        if not (self.data / "PG_VERSION").exists():
            self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C")
        options = f"-h 127.0.0.1 -p {self.port} -k {self.path} -F -c max_connections=300 -c fsync=off"
        result = self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "-t", "60", "start", check=False
        )
        if result.returncode != 0:
            log = self.log.read_text()[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"pg_ctl start failed ({result.returncode}): {result.stderr.strip()} {log}")
        return self

    def stop(self, mode: str = "fast") -> None:
        if (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop", check=False)

    def restart(self, down_seconds: float = 0.0) -> None:
        """Stop the server (``immediate``: as a crash would), stay down ``down_seconds``, start it again."""
        self.stop("immediate")
        time.sleep(down_seconds)
        self.start()

    def new_database(self) -> str:
        """A fresh, empty database; its URL."""
        import psycopg

        name = f"qa_{os.getpid()}_{next(_numbers)}"
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url.rsplit("/", 1)[0] + f"/{name}"

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        if self._own:
            shutil.rmtree(self.path, ignore_errors=True)
