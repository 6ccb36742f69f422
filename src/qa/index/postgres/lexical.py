"""BM25 in PostgreSQL over the project's own French terms, ranked as SQLite FTS5 ranks them.

PostgreSQL's ``ts_rank`` is not BM25 and its ``french`` configuration keeps accents, so neither is used: the chunks
are analysed in Python (:func:`qa.analysis.analyze`, as for FTS5), split into tokens as FTS5's ``unicode61``
tokenizer splits them, and stored as postings with the statistics BM25 needs, all updated in the writer's one
commit transaction:

- ``lexical_chunks``: one row per chunk (``chunk_id`` unique, ``doc_id``, ``source``, ``date_num`` for filters,
  ``length`` = its tokens, ``char_start``/``char_end`` = its place in the article's text);
- ``lexical_postings``: ``(term, chunk, tf, length, date_num)``, the term's count in the chunk (title + text: the
  title weighs 1.0, as in :data:`qa.index.lexical.TITLE_WEIGHT`), read from the primary key alone;
- ``lexical_terms``: each term's document frequency; ``lexical_stats``: the chunk and token counts.

A query is scored in one SQL statement with FTS5's formula (``k1`` 1.2, ``b`` 0.75, ``idf`` = ln((N - n + 0.5) /
(n + 0.5)), at least 1e-6), after the same term pruning (:func:`qa.index.lexical.prune_terms`), so the top 10 equals
FTS5's top 10 (``benchmarks/lexical_parity.py``).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from typing import Any

from qa.analysis import analyze
from qa.filters import NO_FILTERS, Filters
from qa.index.lexical import LexicalRow, prune_terms, query_terms
from qa.index.postgres.database import PgDatabase

K1 = 1.2
B = 0.75
MIN_IDF = 1e-6
_TOKEN = re.compile(r"[^\W_]+")
"""FTS5's ``unicode61`` token characters (letters and digits); the analysed terms hold nothing else but ``_``."""

SCHEMA = [
    """CREATE TABLE IF NOT EXISTS lexical_chunks (
        id bigserial PRIMARY KEY,
        chunk_id text NOT NULL UNIQUE,
        doc_id text NOT NULL,
        source text NOT NULL DEFAULT '',
        date_num integer NOT NULL DEFAULT 0,
        length integer NOT NULL,
        char_start integer,
        char_end integer
    )""",
    "CREATE INDEX IF NOT EXISTS lexical_chunks_doc ON lexical_chunks(doc_id)",
    "CREATE INDEX IF NOT EXISTS lexical_chunks_source ON lexical_chunks(source)",
    # a query reads its terms' postings from the primary key alone (INCLUDE: an index-only scan, ~50 pages at 100k
    # chunks instead of ~4,300 heap pages); the date is there too, so a date range filters during that scan. No
    # foreign key (its row-by-row check slowed the COPY): deletes remove the postings of their chunks explicitly.
    """CREATE TABLE IF NOT EXISTS lexical_postings (
        term text NOT NULL,
        chunk bigint NOT NULL,
        tf integer NOT NULL,
        length integer NOT NULL,
        date_num integer NOT NULL DEFAULT 0,
        PRIMARY KEY (term, chunk) INCLUDE (tf, length, date_num)
    )""",
    "CREATE INDEX IF NOT EXISTS lexical_postings_chunk ON lexical_postings(chunk)",
    "CREATE TABLE IF NOT EXISTS lexical_terms (term text PRIMARY KEY, df integer NOT NULL)",
    """CREATE TABLE IF NOT EXISTS lexical_stats (
        one boolean PRIMARY KEY DEFAULT true CHECK (one),
        chunks bigint NOT NULL,
        tokens bigint NOT NULL
    )""",
    "INSERT INTO lexical_stats VALUES (true, 0, 0) ON CONFLICT DO NOTHING",
]


def tokens(text: str) -> list[str]:
    """The tokens FTS5 indexes for ``text``: its analysed terms, split as ``unicode61`` splits them."""
    return [t for term in analyze(text) for t in _TOKEN.findall(term)] if text else []


def search_tokens(query: str) -> list[str]:
    """The distinct tokens of the query's terms (:func:`qa.index.lexical.query_terms`), in order."""
    return list(dict.fromkeys(t for term in query_terms(query) for t in _TOKEN.findall(term)))


class PgLexicalIndex:
    """Writes and reads on a connection the caller owns (inside the caller's transaction for writes)."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn

    # -- writes ------------------------------------------------------------------------
    def add(self, rows: Sequence[LexicalRow]) -> None:
        """Index ``rows``; a chunk id already indexed is replaced (the last of duplicates wins)."""
        latest = {row.chunk_id: row for row in rows}
        if not latest:
            return
        counts = [Counter(tokens(row.title) + tokens(row.text)) for row in latest.values()]
        self.delete_chunks(list(latest))
        conn = self._conn
        ordered = list(latest.values())
        ids = conn.execute(
            "INSERT INTO lexical_chunks (chunk_id, doc_id, source, date_num, length, char_start, char_end) "
            "SELECT c, d, s, n, l, a, b FROM unnest(%s::text[], %s::text[], %s::text[], %s::int[], %s::int[], "
            "%s::int[], %s::int[]) WITH ORDINALITY AS u(c, d, s, n, l, a, b, o) ORDER BY o RETURNING id, chunk_id",
            (
                [r.chunk_id for r in ordered],
                [r.doc_id for r in ordered],
                [r.source for r in ordered],
                [int(r.date_num) for r in ordered],
                [sum(c.values()) for c in counts],
                [r.start for r in ordered],
                [r.end for r in ordered],
            ),
        ).fetchall()
        number = {chunk_id: i for i, chunk_id in ids}
        with conn.cursor() as cur, cur.copy("COPY lexical_postings (term, chunk, tf, length, date_num) FROM STDIN") as copy:
            for row, count in zip(ordered, counts, strict=True):
                length = sum(count.values())
                for term, tf in count.items():
                    copy.write_row((term, number[row.chunk_id], tf, length, int(row.date_num)))
        df = Counter(term for count in counts for term in count)
        if df:
            terms = sorted(df)
            conn.execute(
                "INSERT INTO lexical_terms SELECT * FROM unnest(%s::text[], %s::int[]) "
                "ON CONFLICT (term) DO UPDATE SET df = lexical_terms.df + EXCLUDED.df",
                (terms, [df[t] for t in terms]),
            )
        conn.execute(
            "UPDATE lexical_stats SET chunks = chunks + %s, tokens = tokens + %s",
            (len(ordered), sum(sum(c.values()) for c in counts)),
        )

    def _delete_ids(self, where: str, param: object) -> None:
        """Remove the chunks ``where`` selects, their postings, and their share of the statistics."""
        conn = self._conn
        doomed = conn.execute(f"SELECT id, length FROM lexical_chunks WHERE {where}", (param,)).fetchall()
        if not doomed:
            return
        ids = [i for i, _ in doomed]
        touched = conn.execute(
            "UPDATE lexical_terms t SET df = t.df - d.n FROM (SELECT term, count(*) AS n FROM lexical_postings "
            "WHERE chunk = ANY(%s) GROUP BY term) d WHERE t.term = d.term RETURNING t.term",
            (ids,),
        ).fetchall()
        conn.execute("DELETE FROM lexical_terms WHERE term = ANY(%s) AND df <= 0", (sorted(t for (t,) in touched),))
        conn.execute("DELETE FROM lexical_postings WHERE chunk = ANY(%s)", (ids,))
        conn.execute("DELETE FROM lexical_chunks WHERE id = ANY(%s)", (ids,))
        conn.execute("UPDATE lexical_stats SET chunks = chunks - %s, tokens = tokens - %s", (len(ids), sum(n for _, n in doomed)))

    def delete_chunks(self, chunk_ids: Sequence[str]) -> None:
        """Remove these chunks (unknown ids are ignored)."""
        if chunk_ids:
            self._delete_ids("chunk_id = ANY(%s)", list(chunk_ids))

    def delete_doc(self, doc_id: str) -> None:
        """Remove every chunk of an article."""
        self._delete_ids("doc_id = %s", doc_id)

    def clear(self) -> None:
        """Remove every chunk."""
        self._conn.execute("TRUNCATE lexical_postings, lexical_terms, lexical_chunks")
        self._conn.execute("UPDATE lexical_stats SET chunks = 0, tokens = 0")

    def recount(self) -> None:
        """Drop postings without a chunk row; recompute the document frequencies and the corpus statistics."""
        conn = self._conn
        conn.execute("DELETE FROM lexical_postings p WHERE NOT EXISTS (SELECT 1 FROM lexical_chunks c WHERE c.id = p.chunk)")
        conn.execute("TRUNCATE lexical_terms")
        conn.execute("INSERT INTO lexical_terms SELECT term, count(*) FROM lexical_postings GROUP BY term")
        conn.execute(
            "UPDATE lexical_stats SET chunks = (SELECT count(*) FROM lexical_chunks), "
            "tokens = (SELECT COALESCE(sum(length), 0) FROM lexical_chunks)"
        )

    # -- reads ---------------------------------------------------------------------------
    def count(self) -> int:
        return int(self._conn.execute("SELECT count(*) FROM lexical_chunks").fetchone()[0])

    def search(self, query: str, k: int, filters: Filters = NO_FILTERS) -> list[tuple[str, float]]:
        """The ``k`` best ``(chunk_id, score)`` by BM25, best first."""
        terms = search_tokens(query)
        if not terms or k <= 0:
            return []
        # the corpus statistics and the terms' document frequencies in one round trip (one snapshot)
        rows = self._conn.execute(
            "SELECT s.chunks, s.tokens, t.term, t.df FROM lexical_stats s LEFT JOIN lexical_terms t ON t.term = ANY(%s)",
            (terms,),
        ).fetchall()
        chunks, total = rows[0][0], rows[0][1]
        df = {term: n for _, _, term, n in rows if term is not None}
        terms = [t for t in prune_terms(terms, df) if df.get(t)]
        if not terms or not chunks:
            return []
        idf = [max(math.log((chunks - df[t] + 0.5) / (df[t] + 0.5)), MIN_IDF) for t in terms]
        # FTS5's order of operations (idf * ((tf * (k1 + 1)) / (tf + k1 * ((1 - b) + b * D / avgdl)))), in float8
        # throughout, summed in the query's term order as FTS5 does (a term the chunk lacks adds 0.0, which changes
        # no float): the same scores to the last bit, so ties break the same way (by chunk number). One column per
        # term, added left to right, rather than SUM(... ORDER BY n): no sort inside each group (-36 % of the
        # server's time per search at 100k chunks, the same results)
        contribution = (
            f"q.idf * ((p.tf * {K1 + 1!r}::float8) / (p.tf + {K1!r}::float8 * "
            f"({1 - B!r}::float8 + {B!r}::float8 * p.length / %(avgdl)s::float8)))"
        )
        score = " + ".join(f"COALESCE(SUM(x.c) FILTER (WHERE x.n = {n}), 0::float8)" for n in range(1, len(terms) + 1))
        params: dict[str, object] = {"terms": terms, "idf": idf, "avgdl": total / chunks, "k": int(k)}
        # the filters apply while the postings are read: dates from the postings themselves, sources and left-out
        # articles through their chunk numbers (a hashed subplan)
        clauses = ["TRUE"]
        if filters.date_from_num is not None:
            clauses.append("p.date_num >= %(date_from)s")
            params["date_from"] = filters.date_from_num
        if filters.date_to_num is not None:
            clauses.append("p.date_num BETWEEN 1 AND %(date_to)s")
            params["date_to"] = filters.date_to_num
        if filters.source:
            clauses.append("p.chunk IN (SELECT id FROM lexical_chunks WHERE source = ANY(%(source)s))")
            params["source"] = list(filters.source)
        if filters.exclude:
            clauses.append("p.chunk <> ALL(ARRAY(SELECT id FROM lexical_chunks WHERE doc_id = ANY(%(exclude)s)))")
            params["exclude"] = list(filters.exclude)
        matches = (
            "unnest(%(terms)s::text[], %(idf)s::float8[]) WITH ORDINALITY AS q(term, idf, n) "
            "JOIN lexical_postings p ON p.term = q.term"
        )
        inner = (
            f"SELECT x.chunk, {score} AS s FROM (SELECT p.chunk, q.n, {contribution} AS c FROM {matches} "
            f"WHERE {' AND '.join(clauses)}) x GROUP BY x.chunk ORDER BY s DESC, x.chunk LIMIT %(k)s"
        )
        sql = f"SELECT c.chunk_id, t.s FROM ({inner}) t JOIN lexical_chunks c ON c.id = t.chunk ORDER BY t.s DESC, t.chunk"
        return [(chunk_id, float(s)) for chunk_id, s in self._conn.execute(sql, params)]

    def rows(self) -> dict[str, str]:
        return dict(self._conn.execute("SELECT chunk_id, doc_id FROM lexical_chunks").fetchall())

    def unindexed_chunks(self) -> list[str]:
        """Chunks with tokens but no postings."""
        sql = (
            "SELECT chunk_id FROM lexical_chunks c WHERE length > 0 "
            "AND NOT EXISTS (SELECT 1 FROM lexical_postings p WHERE p.chunk = c.id) ORDER BY chunk_id"
        )
        return [r[0] for r in self._conn.execute(sql)]

    def problems(self) -> list[str]:
        """Statistics that disagree with the postings (what :meth:`recount` repairs)."""
        conn = self._conn
        problems = []
        chunks, total = conn.execute("SELECT chunks, tokens FROM lexical_stats").fetchone()
        real_chunks, real_total = conn.execute("SELECT count(*), COALESCE(sum(length), 0) FROM lexical_chunks").fetchone()
        if (chunks, total) != (real_chunks, real_total):
            problems.append(f"lexical statistics say {chunks} chunks, {total} tokens; the rows hold {real_chunks}, {real_total}")
        wrong = conn.execute(
            "SELECT count(*) FROM (SELECT term, count(*) AS n FROM lexical_postings GROUP BY term) p "
            "FULL JOIN lexical_terms t USING (term) WHERE p.n IS DISTINCT FROM t.df"
        ).fetchone()[0]
        if wrong:
            problems.append(f"{wrong} terms with a wrong document frequency")
        stray = conn.execute(
            "SELECT count(*) FROM lexical_postings p WHERE NOT EXISTS (SELECT 1 FROM lexical_chunks c WHERE c.id = p.chunk)"
        ).fetchone()[0]
        if stray:
            problems.append(f"{stray} postings without a chunk row")
        return problems


class PgLexical:
    """:class:`qa.index.parts.LexicalStore` on the PostgreSQL database; the manifest writes through
    :class:`PgLexicalIndex` inside its own transactions."""

    def __init__(self, db: PgDatabase) -> None:
        self.db = db

    def search(self, query: str, k: int, filters: Filters = NO_FILTERS) -> list[tuple[str, float]]:
        """BM25 hits ``(chunk_id, score)``, best first: two round trips (the statistics, then the scores; a commit in
        between moves a score by a hair, and the retriever shows only what is committed at one instant)."""
        with self.db.read() as conn:
            return PgLexicalIndex(conn).search(query, k, filters)

    def count(self) -> int:
        with self.db.read() as conn:
            return PgLexicalIndex(conn).count()

    def rows(self) -> dict[str, str]:
        with self.db.read() as conn:
            return PgLexicalIndex(conn).rows()

    def unindexed_chunks(self) -> list[str]:
        with self.db.read() as conn:
            return PgLexicalIndex(conn).unindexed_chunks()

    def problems(self) -> list[str]:
        with self.db.snapshot() as conn:
            return PgLexicalIndex(conn).problems()

    def rebuild(self) -> None:
        """Recompute the statistics from the postings."""
        with self.db.transaction() as conn:
            PgLexicalIndex(conn).recount()

    def drop_rows(self, chunk_ids: Sequence[str]) -> None:
        if chunk_ids:
            with self.db.transaction() as conn:
                PgLexicalIndex(conn).delete_chunks(chunk_ids)

    def unplaced(self, limit: int | None = None) -> list[str]:
        """Chunks written before schema 2 (no ``char_start``): search reads their text from Chroma."""
        with self.db.read() as conn:
            sql = "SELECT chunk_id FROM lexical_chunks WHERE char_start IS NULL ORDER BY id"
            return [r[0] for r in conn.execute(sql + (" LIMIT %s" if limit else ""), (limit,) if limit else ())]

    def place(self, places: dict[str, tuple[int, int]]) -> None:
        if places:
            ids = list(places)
            with self.db.transaction() as conn:
                conn.execute(
                    "UPDATE lexical_chunks c SET char_start = v.s, char_end = v.e "
                    "FROM unnest(%s::text[], %s::int[], %s::int[]) AS v(c, s, e) WHERE c.chunk_id = v.c",
                    (ids, [places[i][0] for i in ids], [places[i][1] for i in ids]),
                )
