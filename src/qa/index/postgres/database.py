"""One PostgreSQL connection shared by a process's threads, as :class:`qa.index.sqlite.SqliteDatabase` is for SQLite.

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


def connect(url: str, *, autocommit: bool = True) -> Any:
    """A new connection to ``url`` (:class:`~qa.errors.StoreError` naming the fix if the server does not answer)."""
    import psycopg

    try:
        # no JIT: it compiles a BM25 query for longer than the query runs
        return psycopg.connect(check_url(url), autocommit=autocommit, connect_timeout=CONNECT_TIMEOUT, options="-c jit=off")
    except psycopg.OperationalError as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StoreError(
            f"cannot reach PostgreSQL at {redact(url)} ({reason}): start the server or fix QA_DATABASE_URL"
        ) from None


class PgDatabase:
    """A connection (autocommit outside :meth:`transaction`), a lock for the threads that share it, and reconnection."""

    def __init__(self, url: str) -> None:
        self.url = check_url(url)
        self.lock = threading.RLock()
        self._conn: Any = None
        with self.lock:
            self._connection()

    def _connection(self) -> Any:
        if self._conn is None or self._conn.closed or self._conn.broken:
            if self._conn is not None:
                logger.warning("reconnecting to PostgreSQL at %s", redact(self.url))
            self._conn = connect(self.url)
        return self._conn

    @contextmanager
    def _guard(self) -> Iterator[Any]:
        import psycopg

        try:
            yield self._connection()
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:  # the server went away: the next call reconnects
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise StoreError(f"PostgreSQL at {redact(self.url)} did not answer ({reason}): retry later") from None

    @contextmanager
    def transaction(self) -> Iterator[Any]:
        """One transaction (committed at the end of the block, rolled back on an error), holding the lock."""
        with self.lock, self._guard() as conn, conn.transaction():
            yield conn

    @contextmanager
    def snapshot(self) -> Iterator[Any]:
        """A read-only transaction whose statements all see one commit (repeatable read), holding the lock."""
        with self.lock, self._guard() as conn, conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            yield conn

    @contextmanager
    def read(self) -> Iterator[Any]:
        """The connection for reads (autocommit: each statement sees the latest commit), holding the lock."""
        with self.lock, self._guard() as conn:
            yield conn

    def close(self) -> None:
        with self.lock:
            if self._conn is not None:
                self._conn.close()
