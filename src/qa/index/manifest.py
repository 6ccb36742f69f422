"""The index manifest: one SQLite row per article, beside the Chroma data.

It answers "is this article already indexed, and unchanged?" without touching
the vector store, keeps each article's full text (to show the context of a
citation) and its chunk ids (to replace or delete them exactly). The lexical
index (:class:`qa.index.lexical.SqliteLexical`) is a part of its own on the same database
(:class:`qa.index.sqlite.SqliteDatabase`); the manifest writes its rows in the same
transactions, so articles and their lexical rows never disagree.

The manifest is also what makes an index crash-safe and what readers trust:

- a chunk is *visible* (searchable) only once its article's manifest transaction has
  committed; chunks written to Chroma before that commit, or left there after a replace
  or delete, are filtered out of search results (:meth:`Manifest.committed`);
- the ``pending`` table journals every Chroma id whose fate is not settled: new chunks
  before their article commits, replaced or deleted chunks until Chroma has dropped them.
  After a crash, :meth:`qa.index.writer.IndexWriter.recover` deletes from Chroma the pending ids
  the manifest does not hold, so neither orphans nor duplicates survive;
- ``meta.generation`` grows with every committed change, so a reader in another process
  knows when to reload its view of the embedded Chroma store.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime

from qa.documents import Article
from qa.index.lexical import LexicalRow, SqliteLexical
from qa.index.sqlite import SqliteDatabase
from qa.schema import ArticleMeta

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
CREATE TABLE IF NOT EXISTS pending (chunk_id TEXT PRIMARY KEY);
"""

_BUMP = "INSERT INTO meta VALUES ('generation', '1') ON CONFLICT(key) DO UPDATE SET value = CAST(value AS INTEGER) + 1"


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

    @property
    def meta(self) -> ArticleMeta:
        return ArticleMeta(self.doc_id, self.title, self.source, self.url, self.date)

    @classmethod
    def from_article(cls, article: Article, chunk_ids: Sequence[str] = ()) -> ArticleRecord:
        """The manifest row of ``article`` (not yet stored: ``ingested_at`` is set when it is)."""
        return cls(
            article.id,
            article.content_hash,
            article.text,
            article.title,
            article.date,
            article.url,
            article.source,
            article.path,
            list(chunk_ids),
        )

    def to_article(self) -> Article:
        """The article as it was indexed, from the stored text and metadata (to re-index it)."""
        return Article(
            id=self.doc_id,
            text=self.text,
            title=self.title,
            date=self.date,
            url=self.url,
            source=self.source,
            path=self.path,
        )


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class Manifest:
    """The articles, the journal and the generation in the index's SQLite database; safe to share between threads
    of one process. ``lexical`` is the lexical index on the same database, kept in step in every transaction."""

    def __init__(self, db: SqliteDatabase, lexical: SqliteLexical) -> None:
        self.db = db
        self.path = db.path
        self._lock = db.lock
        self._db = db.conn
        self._db.executescript(_SCHEMA)
        self.lexical = lexical.index

    def close(self) -> None:
        self.db.close()

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
        with self.db.transaction():
            yield

    def put_many(
        self,
        records: list[ArticleRecord],
        lexical_rows: Sequence[LexicalRow] = (),
        drop_chunks: Sequence[str] = (),
        drop_docs: Sequence[str] = (),
        owner: str = "",
    ) -> list[str]:
        """In one transaction (``owner``: PostgreSQL's queue claims; one machine has none): forget ``drop_docs`` and
        ``drop_chunks``, then store the
        records and index their chunks lexically. The chunks of the records leave the
        ``pending`` journal (they are now committed); ``drop_chunks`` and the chunks of
        ``drop_docs`` enter it until Chroma has deleted them. Returns the chunk ids that the
        caller must now delete from Chroma (then :meth:`settle` them)."""
        now = _now()
        rows = [
            (r.doc_id, r.content_hash, r.title, r.date, r.url, r.source, r.path, r.text, json.dumps(r.chunk_ids), now)
            for r in records
        ]
        keep = {c for r in records for c in r.chunk_ids}
        with self._transaction():
            doomed = set(drop_chunks)
            for doc_id in drop_docs:
                doomed.update(self._chunk_ids_of(doc_id))
                self._db.execute("DELETE FROM articles WHERE doc_id = ?", (doc_id,))
                self.lexical.delete_doc(doc_id)
            doomed -= keep
            self.lexical.delete_chunks(sorted(doomed))
            self.lexical.add(list(lexical_rows))
            self._db.executemany(f"INSERT OR REPLACE INTO articles ({self._COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?)", rows)
            self._unjournal(keep)
            self._db.executemany("INSERT OR IGNORE INTO pending VALUES (?)", [(c,) for c in doomed])
            self._db.execute("INSERT OR REPLACE INTO meta VALUES ('last_ingest', ?)", (now,))
            self._db.execute(_BUMP)
        return sorted(doomed)

    def _chunk_ids_of(self, doc_id: str) -> list[str]:
        row = self._db.execute("SELECT chunk_ids FROM articles WHERE doc_id = ?", (doc_id,)).fetchone()
        return json.loads(row[0]) if row else []

    def _unjournal(self, chunk_ids: Sequence[str] | set[str]) -> None:
        if chunk_ids:
            ids = json.dumps(list(chunk_ids))
            self._db.execute("DELETE FROM pending WHERE chunk_id IN (SELECT value FROM json_each(?))", (ids,))

    def delete(self, doc_id: str) -> list[str] | None:
        """Forget an article and its lexical rows; its chunk ids enter the ``pending`` journal
        and are returned (the caller deletes them from Chroma, then :meth:`settle` s them).
        ``None`` if the article is not indexed."""
        with self._transaction():
            if self._db.execute("SELECT 1 FROM articles WHERE doc_id = ?", (doc_id,)).fetchone() is None:
                return None
            chunk_ids = self._chunk_ids_of(doc_id)
            self._db.execute("DELETE FROM articles WHERE doc_id = ?", (doc_id,))
            self.lexical.delete_doc(doc_id)
            self._db.executemany("INSERT OR IGNORE INTO pending VALUES (?)", [(c,) for c in chunk_ids])
            self._db.execute(_BUMP)
        return chunk_ids

    def clear(self) -> None:
        with self._transaction():
            self._db.execute("DELETE FROM articles")
            self._db.execute("DELETE FROM meta WHERE key != 'generation'")
            self._db.execute("DELETE FROM pending")
            self.lexical.clear()
            self._db.execute(_BUMP)

    # -- crash safety: the pending journal, the committed set, the generation ---------
    def journal(self, chunk_ids: Sequence[str], owner: str = "") -> None:
        """Record chunk ids about to be written to Chroma (committed before the write). ``owner`` names the batch
        (PostgreSQL's queue workers); one machine has one writer at a time, so SQLite needs none."""
        if chunk_ids:
            with self._transaction():
                self._db.executemany("INSERT OR IGNORE INTO pending VALUES (?)", [(c,) for c in chunk_ids])

    def pending(self) -> list[str]:
        with self._lock:
            return [r[0] for r in self._db.execute("SELECT chunk_id FROM pending ORDER BY chunk_id")]

    def settle(self, chunk_ids: Sequence[str]) -> None:
        """Chroma has done what the journal said for these ids: forget them."""
        if chunk_ids:
            with self._transaction():
                self._unjournal(chunk_ids)
                self._db.execute(_BUMP)

    def committed(self, chunk_ids: Sequence[str]) -> set[str]:
        """Those of ``chunk_ids`` whose article is committed: the only chunks search may show."""
        if not chunk_ids:
            return set()
        with self._lock:
            rows = self._db.execute(
                "SELECT chunk_id FROM lexical_chunks WHERE chunk_id IN (SELECT value FROM json_each(?))",
                (json.dumps(list(chunk_ids)),),
            )
            return {r[0] for r in rows}

    def generation(self) -> int:
        """Grows with every committed change (readers in other processes reload when it moves)."""
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()
        return int(row[0]) if row else 0

    def doc_ids(self) -> list[str]:
        with self._lock:
            return [r[0] for r in self._db.execute("SELECT doc_id FROM articles ORDER BY doc_id")]

    def paths(self) -> list[tuple[str, str]]:
        """``(doc_id, path)`` of every article loaded from a file."""
        with self._lock:
            return list(self._db.execute("SELECT doc_id, path FROM articles WHERE path != '' ORDER BY path, doc_id"))

    def chunk_map(self) -> dict[str, str]:
        """``chunk_id → doc_id`` for every committed chunk, as the articles table lists them."""
        out: dict[str, str] = {}
        with self._lock:
            for doc_id, chunk_ids in self._db.execute("SELECT doc_id, chunk_ids FROM articles"):
                for c in json.loads(chunk_ids):
                    out[c] = doc_id
        return out

    def iter_records(self, doc_ids: Sequence[str]) -> Iterator[ArticleRecord]:
        for doc_id in doc_ids:
            record = self.get(doc_id)
            if record is not None:
                yield record

    def problems(self, sample: int = 5) -> list[str]:
        """What SQLite itself reports (``quick_check``, its first ``sample`` lines); empty when the file is sound."""
        quick = self.db.quick_check()
        return [] if quick == ["ok"] else [f"quick_check: {q}" for q in quick[:sample]]

    def count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM articles").fetchone()[0])

    def is_empty(self) -> bool:
        """No article indexed (constant time, unlike counting)."""
        with self._lock:
            return self._db.execute("SELECT 1 FROM articles LIMIT 1").fetchone() is None

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
