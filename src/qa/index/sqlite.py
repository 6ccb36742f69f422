"""The single-machine database: one SQLite file (WAL) that the manifest and the lexical index share.

The manifest (:mod:`qa.index.manifest`) and the lexical index (:mod:`qa.index.lexical`) are two
parts over this one connection, so that an article and its lexical rows commit in one transaction.
The connection is shared by the threads of a process under :attr:`SqliteDatabase.lock`.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class SqliteDatabase:
    """One SQLite connection in WAL mode, a lock for its threads and an immediate transaction."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.lock = threading.Lock()
        self.conn = sqlite3.connect(str(path), timeout=30, check_same_thread=False, isolation_level=None)
        self.conn.execute("PRAGMA busy_timeout=30000")
        # switching to WAL needs an exclusive lock and fails at once ("database is locked") while
        # another process writes; reading the mode takes no lock, and a WAL database stays WAL
        for attempt in range(100):  # a new database: another process may be switching it too
            try:
                if self.conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                    self.conn.execute("PRAGMA journal_mode=WAL")
                break
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or attempt == 99:
                    raise
                time.sleep(0.1)

    def close(self) -> None:
        with self.lock:
            self.conn.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` … ``COMMIT`` (``ROLLBACK`` on any error), holding the lock."""
        with self.lock:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield self.conn
                self.conn.execute("COMMIT")
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise

    def quick_check(self) -> list[str]:
        """SQLite's ``PRAGMA quick_check`` lines (``["ok"]`` when the file is sound)."""
        with self.lock:
            return [r[0] for r in self.conn.execute("PRAGMA quick_check").fetchall()]
