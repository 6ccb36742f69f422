"""The connections of a process to PostgreSQL (a small pool: its threads query at once), as
:class:`qa.index.sqlite.SqliteDatabase` is the one connection to SQLite.

The manifest and the lexical index run their statements here, inside :meth:`PgDatabase.transaction`
(one transaction per commit of the write protocol) or :meth:`PgDatabase.read`. A connection that
broke (the server restarted, the network dropped) is replaced on the next call: the call that saw it
break raises :class:`~qa.errors.StoreError` (a 503 from ``qa serve``), never a wrong answer, and the
process recovers by itself once the server is back.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlparse

from qa.errors import ConfigError, StoreError

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT = 5
"""Seconds to wait for the server when connecting."""
MAX_IDLE = 8
"""Idle connections a process keeps (one per thread that queries at once; more are opened and closed as needed)."""


def redact(url: str) -> str:
    """``url`` without its password (for messages and logs)."""
    parsed = urlparse(url)
    if parsed.password:
        return url.replace(f":{parsed.password}@", ":***@", 1)
    return url


def check_url(url: str) -> str:
    """``url`` if it names a PostgreSQL server, else a :class:`~qa.errors.ConfigError` naming the setting."""
    parsed = urlparse(url)
    if parsed.scheme not in ("postgresql", "postgres") or not (parsed.hostname or parsed.path):
        raise ConfigError(f"QA_DATABASE_URL={redact(url)!r} is not a PostgreSQL URL: write postgresql://user@host:port/db")
    return url


def reason(exc: BaseException) -> str:
    """The first line of a driver error, for a one-line message."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def did_not_answer(url: str, exc: BaseException) -> StoreError:
    """The error a call raises when the server went away (a 503 from ``qa serve``; the next call reconnects)."""
    return StoreError(f"PostgreSQL at {redact(url)} did not answer ({reason(exc)}): retry later")


def connect(url: str, *, autocommit: bool = True) -> Any:
    """A new connection to ``url`` (:class:`~qa.errors.StoreError` naming the fix if the server does not answer)."""
    import psycopg

    try:
        # no JIT: it compiles a BM25 query for longer than the query runs
        return psycopg.connect(check_url(url), autocommit=autocommit, connect_timeout=CONNECT_TIMEOUT, options="-c jit=off")
    except psycopg.OperationalError as exc:
        raise StoreError(
            f"cannot reach PostgreSQL at {redact(url)} ({reason(exc)}): start the server or fix QA_DATABASE_URL"
        ) from None


class PgDatabase:
    """Connections to one database for a process's threads: each call takes an idle connection (or opens one) and
    gives it back, so reader threads query at once; autocommit outside :meth:`transaction`."""

    def __init__(self, url: str, max_idle: int = MAX_IDLE) -> None:
        self.url = check_url(url)
        self.max_idle = max_idle
        self._idle: list[Any] = [connect(self.url)]  # fails at open, naming the fix, if the server does not answer
        self._lock = threading.Lock()
        self._reconnect = False

    def _take(self) -> Any:
        with self._lock:
            while self._idle:
                conn = self._idle.pop()
                if not (conn.closed or conn.broken):
                    return conn
        if self._reconnect:
            logger.warning("reconnecting to PostgreSQL at %s", redact(self.url))
            self._reconnect = False
        return connect(self.url)

    def _give(self, conn: Any) -> None:
        from psycopg.pq import TransactionStatus

        if conn.closed or conn.broken or conn.info.transaction_status != TransactionStatus.IDLE:
            conn.close()
            return
        with self._lock:
            if len(self._idle) < self.max_idle:
                self._idle.append(conn)
                return
        conn.close()

    @contextmanager
    def _guard(self) -> Iterator[Any]:
        import psycopg

        conn = self._take()
        try:
            yield conn
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:  # the server went away: the next call reconnects
            conn.close()
            with self._lock:  # the idle ones are as dead: drop them
                idle, self._idle = self._idle, []
            for other in idle:
                other.close()
            self._reconnect = True
            raise did_not_answer(self.url, exc) from None
        except BaseException:
            self._give(conn)
            raise
        self._give(conn)

    @contextmanager
    def transaction(self) -> Iterator[Any]:
        """One transaction on a connection of its own (committed at the end of the block, rolled back on an error)."""
        with self._guard() as conn, conn.transaction():
            yield conn

    @contextmanager
    def snapshot(self) -> Iterator[Any]:
        """A read-only transaction whose statements all see one commit (repeatable read)."""
        with self._guard() as conn, conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            yield conn

    @contextmanager
    def read(self) -> Iterator[Any]:
        """A connection for reads (autocommit: each statement sees the latest commit)."""
        with self._guard() as conn:
            yield conn

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()
