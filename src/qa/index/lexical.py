"""The lexical half of hybrid retrieval: BM25 over SQLite FTS5 (the single-machine lexical index).

Chunks are indexed as their analysed terms (:func:`qa.analysis.analyze`: elisions split,
stop words dropped, Snowball stems, accents folded), space-joined, in an FTS5 table with
a plain ``unicode61`` tokenizer, so « l'Union européenne » and « Union Europeenne » meet
on the same terms. Two tables live in the caller's database:

- ``lexical_chunks``: one row per chunk (``id`` = the FTS rowid, ``chunk_id`` unique,
  ``doc_id`` indexed, ``source``, ``date_num``) for deletes and filters in SQL;
- ``lexical_fts``: the FTS5 table, columns ``title`` and ``body`` (analysed terms).

The caller owns the connection and its transactions: nothing here runs ``BEGIN``,
``COMMIT`` or ``ROLLBACK``. Each write is wrapped in a ``SAVEPOINT`` when the connection is
in autocommit mode or already inside a transaction (so a failed write leaves nothing half
done and never ends the caller's transaction); under Python's legacy transaction control
outside a transaction, the implicit ``BEGIN`` before the first write opens one the caller
commits. No locking either: share a connection between threads only under the caller's lock.

:class:`SqliteLexical` is the part the rest of the index sees (beside the manifest, on the same
database): thread-safe searches and integrity checks; the manifest writes through its
:attr:`SqliteLexical.index` inside its own transactions. :class:`qa.index.postgres.lexical.PgLexicalIndex`
is the same index in PostgreSQL.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from qa.analysis import analyze
from qa.filters import NO_FILTERS, Filters
from qa.index.sqlite import SqliteDatabase
from qa.schema import ArticleMeta

logger = logging.getLogger(__name__)

CHUNKS_TABLE = "lexical_chunks"
FTS_TABLE = "lexical_fts"
VOCAB_TABLE = "lexical_vocab"
TITLE_WEIGHT = 1.0
"""bm25 weight of the title column against 1.0 for the chunk text. On PIAF (761 paragraphs as chunks
with their article title, 3,835 questions) R@1 is 0.691 without the title, 0.710 at 1.0, flat up to 4.0;
1.0 scores exactly as one column holding title + text would."""
MAX_QUERY_TERMS = 256
"""A query longer than this (a pasted article) keeps its first distinct terms."""
MATCH_BUDGET = 8000
"""BM25 scores every chunk that holds a query term, so a common term makes a query cost in
proportion to the corpus. When a query's terms together occur in more chunks than this, its most
common terms are left out (they weigh least in BM25; the rarest term is always kept). At 100k chunks
(benchmarks/query.py, 200 PIAF questions): lexical p50 45 -> 19 ms, p95 148 -> 42 ms, lexical recall@5
0.790 -> 0.785 (4000: 10 ms, 0.760). Below a few thousand chunks nothing is left out."""

_SCHEMA = (
    f"""CREATE TABLE IF NOT EXISTS {CHUNKS_TABLE} (
        id INTEGER PRIMARY KEY,
        chunk_id TEXT NOT NULL UNIQUE,
        doc_id TEXT NOT NULL,
        source TEXT NOT NULL DEFAULT '',
        date_num INTEGER NOT NULL DEFAULT 0
    )""",
    f"CREATE INDEX IF NOT EXISTS {CHUNKS_TABLE}_doc ON {CHUNKS_TABLE}(doc_id)",
    f"CREATE VIRTUAL TABLE IF NOT EXISTS {FTS_TABLE} USING fts5(title, body, tokenize='unicode61 remove_diacritics 0')",
)


@dataclass(frozen=True)
class LexicalRow:
    """One chunk to index: its id, its text, and its article's metadata (the title is indexed too;
    the source and date filter)."""

    chunk_id: str
    text: str
    meta: ArticleMeta
    start: int | None = None
    end: int | None = None
    """The chunk's place in its article's text, ``text[start:end]`` (None: not given)."""

    @property
    def doc_id(self) -> str:
        return self.meta.doc_id

    @property
    def title(self) -> str:
        return self.meta.title

    @property
    def source(self) -> str:
        return self.meta.source

    @property
    def date_num(self) -> int:
        """``YYYYMMDD``, 0 = undated."""
        return self.meta.date_num


def _terms(text: str) -> str:
    return " ".join(analyze(text)) if text else ""


def query_terms(query: str) -> list[str]:
    """The distinct analysed terms of ``query``, in order (at most ``MAX_QUERY_TERMS``)."""
    terms = list(dict.fromkeys(analyze(query)))
    if len(terms) > MAX_QUERY_TERMS:
        logger.debug("lexical query of %d terms cut to %d", len(terms), MAX_QUERY_TERMS)
        terms = terms[:MAX_QUERY_TERMS]
    return terms


def _expression(terms: Sequence[str]) -> str | None:
    quoted = ['"' + t.replace('"', '""') + '"' for t in terms]
    return " OR ".join(quoted) if quoted else None


def query_expression(query: str) -> str | None:
    """The FTS5 ``MATCH`` expression for ``query``: its distinct analysed terms, each quoted, ORed.

    User text is never read as FTS5 syntax: every term is a quoted string. ``None`` when
    the query has no terms (only stop words, punctuation, emoji…).
    """
    return _expression(query_terms(query))


def prune_terms(terms: Sequence[str], doc_freq: dict[str, int], budget: int | None = None) -> list[str]:
    """``terms`` without the most common ones, so that their document frequencies add up to at
    most ``budget`` (default ``MATCH_BUDGET``; the rarest term is always kept; terms the index lacks cost nothing)."""
    budget = MATCH_BUDGET if budget is None else budget
    if sum(doc_freq.get(t, 0) for t in terms) <= budget:
        return list(terms)
    kept: set[str] = set()
    total = 0
    for term in sorted(terms, key=lambda t: doc_freq.get(t, 0)):
        df = doc_freq.get(term, 0)
        if kept and total + df > budget:
            break
        kept.add(term)
        total += df
    return [t for t in terms if t in kept]


def _autocommit(conn: sqlite3.Connection) -> bool:
    mode = getattr(conn, "autocommit", None)  # Python 3.12+: True, False or LEGACY_TRANSACTION_CONTROL
    if isinstance(mode, bool):
        return mode
    return conn.isolation_level is None


class LexicalIndex:
    """BM25 over SQLite FTS5 on pre-analysed terms (:func:`qa.analysis.analyze`)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        for statement in _SCHEMA:  # not executescript(): it would COMMIT the caller's transaction
            conn.execute(statement)
        # document frequencies of terms, read from the FTS index itself (temp: nothing is written to the file)
        conn.execute(f"CREATE VIRTUAL TABLE IF NOT EXISTS temp.{VOCAB_TABLE} USING fts5vocab(main, {FTS_TABLE}, 'row')")

    @contextmanager
    def _atomic(self) -> Iterator[None]:
        conn = self._conn
        if not (conn.in_transaction or _autocommit(conn)):
            yield  # legacy control: Python's implicit BEGIN opens a transaction the caller commits
            return
        conn.execute("SAVEPOINT qa_lexical")
        try:
            yield
        except BaseException:
            conn.execute("ROLLBACK TO qa_lexical")
            conn.execute("RELEASE qa_lexical")
            raise
        conn.execute("RELEASE qa_lexical")  # commits only if the savepoint opened the transaction (autocommit)

    # -- writes ------------------------------------------------------------------------
    def add(self, rows: Sequence[LexicalRow]) -> None:
        """Index ``rows``; a chunk id already indexed is replaced (the last of duplicates wins)."""
        latest = {row.chunk_id: row for row in rows}
        self._write([(row, _terms(row.title), _terms(row.text)) for row in latest.values()])

    def _write(self, items: Sequence[tuple[LexicalRow, str, str]]) -> None:
        """Insert rows whose terms are already analysed (``add`` analyses before any write)."""
        if not items:
            return
        with self._atomic():
            self._delete_where("chunk_id IN (SELECT value FROM json_each(?))", json.dumps([r.chunk_id for r, _, _ in items]))
            # the delete above took the write lock, so no other connection can take these ids
            (last,) = self._conn.execute(f"SELECT COALESCE(MAX(id), 0) FROM {CHUNKS_TABLE}").fetchone()
            ids = range(last + 1, last + 1 + len(items))
            self._conn.executemany(
                f"INSERT INTO {CHUNKS_TABLE} (id, chunk_id, doc_id, source, date_num) VALUES (?, ?, ?, ?, ?)",
                [(i, r.chunk_id, r.doc_id, r.source, int(r.date_num)) for i, (r, _, _) in zip(ids, items, strict=True)],
            )
            self._conn.executemany(
                f"INSERT INTO {FTS_TABLE} (rowid, title, body) VALUES (?, ?, ?)",
                [(i, title, body) for i, (_, title, body) in zip(ids, items, strict=True)],
            )

    def _delete_where(self, condition: str, *params: object) -> None:
        # FTS rows first (they are found through lexical_chunks), then the chunk rows
        self._conn.execute(f"DELETE FROM {FTS_TABLE} WHERE rowid IN (SELECT id FROM {CHUNKS_TABLE} WHERE {condition})", params)
        self._conn.execute(f"DELETE FROM {CHUNKS_TABLE} WHERE {condition}", params)

    def delete_chunks(self, chunk_ids: Sequence[str]) -> None:
        """Remove these chunks (unknown ids are ignored)."""
        if chunk_ids:
            with self._atomic():
                self._delete_where("chunk_id IN (SELECT value FROM json_each(?))", json.dumps(list(chunk_ids)))

    def delete_doc(self, doc_id: str) -> None:
        """Remove every chunk of an article (through the ``doc_id`` index)."""
        with self._atomic():
            self._delete_where("doc_id = ?", doc_id)

    def clear(self) -> None:
        """Remove every chunk."""
        with self._atomic():
            self._conn.execute(f"DELETE FROM {FTS_TABLE}")
            self._conn.execute(f"DELETE FROM {CHUNKS_TABLE}")

    def rebuild(self) -> None:
        """Rebuild the FTS5 index from the rows it stores (FTS5's ``rebuild`` command)."""
        self._conn.execute(f"INSERT INTO {FTS_TABLE}({FTS_TABLE}) VALUES ('rebuild')")

    # -- integrity -----------------------------------------------------------------------
    def rows(self) -> dict[str, str]:
        """``chunk_id → doc_id`` for every chunk row."""
        return dict(self._conn.execute(f"SELECT chunk_id, doc_id FROM {CHUNKS_TABLE}").fetchall())

    def unindexed_chunks(self) -> list[str]:
        """Chunk ids whose chunk row has no FTS row."""
        rows = self._conn.execute(f"SELECT chunk_id FROM {CHUNKS_TABLE} WHERE id NOT IN (SELECT rowid FROM {FTS_TABLE})")
        return [r[0] for r in rows]

    def fts_orphan_count(self) -> int:
        """FTS rows without a chunk row."""
        sql = f"SELECT COUNT(*) FROM {FTS_TABLE} WHERE rowid NOT IN (SELECT id FROM {CHUNKS_TABLE})"
        return int(self._conn.execute(sql).fetchone()[0])

    def integrity_error(self) -> str | None:
        """FTS5's own ``integrity-check``: None when the index agrees with its content, else the error."""
        try:
            self._conn.execute(f"INSERT INTO {FTS_TABLE}({FTS_TABLE}) VALUES ('integrity-check')")
        except sqlite3.Error as exc:  # sqlite3.DatabaseError: the FTS index disagrees with its content
            return str(exc)
        return None

    # -- reads -------------------------------------------------------------------------
    def count(self) -> int:
        """Number of indexed chunks."""
        return int(self._conn.execute(f"SELECT COUNT(*) FROM {CHUNKS_TABLE}").fetchone()[0])

    def doc_freq(self, terms: Sequence[str]) -> dict[str, int]:
        """How many chunks hold each of ``terms`` (terms the index lacks are left out)."""
        if not terms:
            return {}
        marks = ",".join("?" * len(terms))
        return dict(self._conn.execute(f"SELECT term, doc FROM temp.{VOCAB_TABLE} WHERE term IN ({marks})", list(terms)))

    def doc_ids(self) -> set[str]:
        """The articles that have chunks here (to check against the manifest)."""
        return {r[0] for r in self._conn.execute(f"SELECT DISTINCT doc_id FROM {CHUNKS_TABLE}")}

    def search(self, query: str, k: int, filters: Filters = NO_FILTERS) -> list[tuple[str, float]]:
        """The ``k`` best ``(chunk_id, score)`` for ``query`` by BM25, best first (higher is better).

        Any analysed query term may match (OR). ``filters`` in SQL: the sources, the date range
        (inclusive; a range leaves out undated chunks, ``date_num`` 0, as the dense side does),
        the article ids left out.
        """
        terms = query_terms(query)
        if not terms or k <= 0:
            return []
        expression = _expression(prune_terms(terms, self.doc_freq(terms)))
        if not filters:
            # no filter: the top k from the FTS index alone, then their chunk ids (no join over every match)
            sql = (
                f"SELECT c.chunk_id, t.s FROM (SELECT rowid AS id, bm25({FTS_TABLE}, {TITLE_WEIGHT!r}, 1.0) AS s "
                f"FROM {FTS_TABLE} WHERE {FTS_TABLE} MATCH ? ORDER BY s, rowid LIMIT ?) t "
                f"JOIN {CHUNKS_TABLE} c ON c.id = t.id ORDER BY t.s, t.id"
            )
            return [(chunk_id, -float(score)) for chunk_id, score in self._conn.execute(sql, (expression, int(k)))]
        clauses = [f"{FTS_TABLE} MATCH ?"]
        params: list[object] = [expression]
        if filters.source:
            clauses.append("c.source IN (SELECT value FROM json_each(?))")
            params.append(json.dumps(list(filters.source)))
        if filters.date_from_num is not None:
            clauses.append("c.date_num >= ?")
            params.append(filters.date_from_num)
        if filters.date_to_num is not None:
            clauses.append("c.date_num BETWEEN 1 AND ?")
            params.append(filters.date_to_num)
        if filters.exclude:
            clauses.append("c.doc_id NOT IN (SELECT value FROM json_each(?))")
            params.append(json.dumps(list(filters.exclude)))
        sql = (
            f"SELECT c.chunk_id, bm25({FTS_TABLE}, {TITLE_WEIGHT!r}, 1.0) AS s "
            f"FROM {FTS_TABLE} JOIN {CHUNKS_TABLE} c ON c.id = {FTS_TABLE}.rowid "
            f"WHERE {' AND '.join(clauses)} ORDER BY s, c.id LIMIT ?"
        )
        params.append(int(k))
        return [(chunk_id, -float(score)) for chunk_id, score in self._conn.execute(sql, params)]


class SqliteLexical:
    """The lexical index as a part of the single-machine index, on the manifest's database: searches and
    integrity checks take the database's lock; writes go through :attr:`index` inside the manifest's transactions
    (an article and its lexical rows commit together)."""

    def __init__(self, db: SqliteDatabase) -> None:
        self.db = db
        with db.lock:
            self.index = LexicalIndex(db.conn)

    def search(self, query: str, k: int, filters: Filters = NO_FILTERS) -> list[tuple[str, float]]:
        """BM25 hits ``(chunk_id, score)``, best first (:meth:`LexicalIndex.search`)."""
        with self.db.lock:
            return self.index.search(query, k, filters)

    def count(self) -> int:
        with self.db.lock:
            return self.index.count()

    def rows(self) -> dict[str, str]:
        """``chunk_id → doc_id`` for every chunk row."""
        with self.db.lock:
            return self.index.rows()

    def unindexed_chunks(self) -> list[str]:
        """Chunk ids whose chunk row has no FTS row (BM25 cannot find them)."""
        with self.db.lock:
            return self.index.unindexed_chunks()

    def problems(self) -> list[str]:
        """What the index itself reports: FTS5's integrity-check, FTS rows without a chunk row. Empty when sound."""
        with self.db.lock:
            fts_error = self.index.integrity_error()
            orphans = self.index.fts_orphan_count()
        problems = [f"FTS5 integrity-check: {fts_error}"] if fts_error else []
        if orphans:
            problems.append(f"{orphans} FTS rows without a chunk row")
        return problems

    def rebuild(self) -> None:
        """Rebuild the FTS5 index from its stored rows (what repairs an FTS5 integrity problem)."""
        with self.db.transaction():
            self.index.rebuild()

    def drop_rows(self, chunk_ids: Sequence[str]) -> None:
        """Delete these chunks' rows, in one transaction (rows no committed article lists)."""
        if chunk_ids:
            with self.db.transaction():
                self.index.delete_chunks(chunk_ids)

    def unplaced(self, limit: int | None = None) -> list[str]:
        """Always ``[]``: the text of a chunk is read from the (embedded) store, its place is not kept here."""
        return []

    def place(self, places: dict[str, tuple[int, int]]) -> None:
        """Nothing to record (see :meth:`unplaced`)."""
