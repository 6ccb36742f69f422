"""The index's two locks as PostgreSQL advisory locks: held by a database session, so they are shared by every
process on every machine, and released by the server when the session dies (a SIGKILLed writer never leaves a
stale lock behind). Same semantics as the file locks of :mod:`qa.index.locking`:

- the **writer lock**: one writer (ingest, delete, prune, repair, rebuild) at a time; re-entrant within a process;
  the session's ``application_name`` names the holder (host and pid) for the message a second writer sees;
- the **commit lock**: exclusive while a writer moves the committed state, shared by a reader that pins one state.

Each hold runs on a session of its own (kept in a small pool between holds), so threads of one process exclude
each other as other processes do.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from qa.errors import IndexBusyError
from qa.index.locking import ReentrantWriterLock
from qa.index.postgres.database import connect, did_not_answer, redact

logger = logging.getLogger(__name__)

WRITER_KEY = 0x7161_0000_0002
COMMIT_KEY = 0x7161_0000_0003
BATCH_KEY = 0x7161_0000_0004
"""Shared by each queue worker's batch from its journal to its commit, exclusive for recovery."""
POLL_SECONDS = 0.2


class _Sessions:
    """Idle connections for lock holds (a hold takes one; a broken one is dropped)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._idle: list[Any] = []
        self._lock = threading.Lock()

    def take(self) -> Any:
        with self._lock:
            while self._idle:
                conn = self._idle.pop()
                if not (conn.closed or conn.broken):
                    return conn
        conn = connect(self.url)
        conn.execute("SELECT set_config('application_name', %s, false)", (f"qa pid {os.getpid()} on {socket.gethostname()}",))
        return conn

    def lock(self, sql: str, key: int) -> tuple[Any, Any]:
        """Run a lock statement on a session; ``(session, its result)``. An idle session that died with the server
        (a restart) is replaced once; a server that does not answer is a :class:`~qa.errors.StoreError`."""
        import psycopg

        for attempt in (1, 2):
            conn = self.take()
            try:
                return conn, conn.execute(sql, (key,)).fetchone()[0]
            except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
                conn.close()
                if attempt == 2:
                    raise did_not_answer(self.url, exc) from None
            except BaseException:
                conn.close()
                raise
        raise AssertionError("unreachable")

    def give(self, conn: Any) -> None:
        if conn.closed or conn.broken:
            return
        with self._lock:
            self._idle.append(conn)

    def close(self) -> None:
        with self._lock:
            for conn in self._idle:
                conn.close()
            self._idle.clear()


class PgWriterLock(ReentrantWriterLock):
    """:class:`qa.index.parts.WriterLockPart` as a session advisory lock."""

    def __init__(self, url: str, on_wait: Callable[[str], None] | None = None) -> None:
        super().__init__()
        self.url = url
        self.on_wait = on_wait
        self._sessions = _Sessions(url)
        self._conn: Any = None

    def holder(self) -> str:
        """Who holds the lock (``qa pid N on HOST``), as the server knows the session."""
        sql = (
            "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.locktype = 'advisory' AND l.granted AND ((l.classid::bigint << 32) | l.objid::bigint) = %s LIMIT 1"
        )
        try:
            with connect(self.url) as conn:
                row = conn.execute(sql, (WRITER_KEY,)).fetchone()
        except Exception:  # noqa: BLE001 - only for a message
            return "unknown"
        return str(row[0]) if row and row[0] else "unknown"

    def _acquire(self, wait: bool, timeout: float | None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        said = False
        while True:
            conn, got = self._sessions.lock("SELECT pg_try_advisory_lock(%s)", WRITER_KEY)
            if got:
                break
            where = f"another ingest is running on {redact(self.url)} ({self.holder()})"
            if not wait:
                self._sessions.give(conn)
                raise IndexBusyError(f"{where}: wait for it to finish, or run again without --no-wait to queue behind it")
            if deadline is not None and time.monotonic() > deadline:
                self._sessions.give(conn)
                raise IndexBusyError(f"another ingest ({self.holder()}) still holds the writer lock after {timeout:.0f}s")
            self._sessions.give(conn)
            if not said:
                said = True
                message = f"{where}; waiting…"
                if self.on_wait:
                    self.on_wait(message)
                else:
                    logger.warning(message)
            time.sleep(POLL_SECONDS)
        self._conn = conn

    def _release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            conn.execute("SELECT pg_advisory_unlock(%s)", (WRITER_KEY,))
            self._sessions.give(conn)
        except Exception:  # noqa: BLE001 - a dead session has released the lock already
            logger.debug("releasing the writer lock failed", exc_info=True)
            conn.close()

    def close(self) -> None:
        self._sessions.close()


class PgCommitLock:
    """:class:`qa.index.parts.CommitLockPart` as a session advisory lock (exclusive or shared)."""

    def __init__(self, url: str, key: int = COMMIT_KEY) -> None:
        self._sessions = _Sessions(url)
        self.key = key

    @contextlib.contextmanager
    def _hold(self, shared: bool) -> Iterator[None]:
        suffix = "_shared" if shared else ""
        conn, _ = self._sessions.lock(f"SELECT pg_advisory_lock{suffix}(%s)", self.key)
        try:
            yield
        finally:
            try:
                conn.execute(f"SELECT pg_advisory_unlock{suffix}(%s)", (self.key,))
                self._sessions.give(conn)
            except Exception:  # noqa: BLE001 - a dead session has released the lock already
                conn.close()

    def exclusive(self) -> contextlib.AbstractContextManager[None]:
        return self._hold(shared=False)

    def shared(self) -> contextlib.AbstractContextManager[None]:
        return self._hold(shared=True)

    def close(self) -> None:
        self._sessions.close()
