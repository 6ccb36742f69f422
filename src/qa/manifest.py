"""The index manifest: one SQLite row per article, beside the Chroma data.

It answers "is this article already indexed, and unchanged?" without touching
the vector store, keeps each article's full text (to show the context of a
citation) and its chunk ids (to replace or delete them exactly). The lexical
index (:mod:`qa.lexical`) lives in the same database and is written in the same
transactions, so articles and their lexical rows never disagree.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from qa.lexical import LexicalIndex, LexicalRow

_SCHEMA = """
CREATE TABLE IF NOT EXISTS articles (
    doc_id TEXT PRIMARY KEY,
    content_hash TEXT NOT NULL,
    title TEXT NOT NULL DEFAULT '',
    date TEXT NOT NULL DEFAULT '',
    url TEXT NOT NULL DEFAULT '',
    source TEXT NOT NULL DEFAULT '',
    path TEXT NOT NULL DEFAULT '',
    text TEXT NOT NULL,
    chunk_ids TEXT NOT NULL,
    ingested_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS articles_path ON articles(path);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


@dataclass
class ArticleRecord:
    doc_id: str
    content_hash: str
    text: str
    title: str = ""
    date: str = ""
    url: str = ""
    source: str = ""
    path: str = ""
    chunk_ids: list[str] = field(default_factory=list)
    ingested_at: str = ""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class Manifest:
    """A small SQLite database; safe to share between threads of one process."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), timeout=30, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA busy_timeout=30000")
        self._db.executescript(_SCHEMA)
        self.lexical = LexicalIndex(self._db)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _row(self, row: tuple) -> ArticleRecord:
        doc_id, chash, title, date, url, source, path, text, chunk_ids, ingested_at = row
        return ArticleRecord(doc_id, chash, text, title, date, url, source, path, json.loads(chunk_ids), ingested_at)

    _COLUMNS = "doc_id, content_hash, title, date, url, source, path, text, chunk_ids, ingested_at"

    def get(self, doc_id: str) -> ArticleRecord | None:
        with self._lock:
            row = self._db.execute(f"SELECT {self._COLUMNS} FROM articles WHERE doc_id = ?", (doc_id,)).fetchone()
        return self._row(row) if row else None

    def hashes(self, doc_ids: list[str]) -> dict[str, str]:
        """``doc_id → content_hash`` for those of ``doc_ids`` that are indexed."""
        out: dict[str, str] = {}
        with self._lock:
            for i in range(0, len(doc_ids), 500):
                part = doc_ids[i : i + 500]
                marks = ",".join("?" * len(part))
                out.update(
                    self._db.execute(f"SELECT doc_id, content_hash FROM articles WHERE doc_id IN ({marks})", part).fetchall()
                )
        return out

    def ids_for_path(self, path: str) -> list[str]:
        with self._lock:
            return [r[0] for r in self._db.execute("SELECT doc_id FROM articles WHERE path = ?", (path,))]

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def put_many(
        self,
        records: list[ArticleRecord],
        lexical_rows: Sequence[LexicalRow] = (),
        drop_chunks: Sequence[str] = (),
        drop_docs: Sequence[str] = (),
    ) -> None:
        """In one transaction: forget ``drop_docs`` and ``drop_chunks``, then store the
        records and index their chunks lexically."""
        now = _now()
        rows = [
            (r.doc_id, r.content_hash, r.title, r.date, r.url, r.source, r.path, r.text, json.dumps(r.chunk_ids), now)
            for r in records
        ]
        with self._transaction():
            for doc_id in drop_docs:
                self._db.execute("DELETE FROM articles WHERE doc_id = ?", (doc_id,))
                self.lexical.delete_doc(doc_id)
            self.lexical.delete_chunks(list(drop_chunks))
            self.lexical.add(list(lexical_rows))
            self._db.executemany(f"INSERT OR REPLACE INTO articles ({self._COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?)", rows)
            self._db.execute("INSERT OR REPLACE INTO meta VALUES ('last_ingest', ?)", (now,))

    def delete(self, doc_id: str) -> bool:
        """Forget an article and its lexical rows."""
        with self._transaction():
            found = self._db.execute("DELETE FROM articles WHERE doc_id = ?", (doc_id,)).rowcount > 0
            self.lexical.delete_doc(doc_id)
        return found

    def clear(self) -> None:
        with self._transaction():
            self._db.execute("DELETE FROM articles")
            self._db.execute("DELETE FROM meta")
            self.lexical.clear()

    def lexical_search(self, query: str, k: int, **filters: Any) -> list[tuple[str, float]]:
        """BM25 hits ``(chunk_id, score)``; filters as :meth:`LexicalIndex.search`."""
        with self._lock:
            return self.lexical.search(query, k, **filters)

    def count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM articles").fetchone()[0])

    def sources(self) -> list[str]:
        with self._lock:
            return [r[0] for r in self._db.execute("SELECT DISTINCT source FROM articles WHERE source != '' ORDER BY source")]

    def meta(self, key: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def page(self, offset: int, limit: int) -> list[ArticleRecord]:
        """Articles ordered by id, without their text (``text`` is empty): one page of a listing."""
        columns = self._COLUMNS.replace(", text,", ", '' AS text,")
        with self._lock:
            rows = self._db.execute(
                f"SELECT {columns} FROM articles ORDER BY doc_id LIMIT ? OFFSET ?", (limit, offset)
            ).fetchall()
        return [self._row(row) for row in rows]
