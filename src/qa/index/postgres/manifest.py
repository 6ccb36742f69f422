"""The manifest in PostgreSQL: the articles, the ``pending`` journal, the generation, the schema version.

The same protocol as the SQLite manifest (:class:`qa.index.parts.ManifestStore`), so the writer's crash-safe order
is unchanged: journal → vector-store upsert under deterministic ids → ONE PostgreSQL transaction (articles, their
BM25 rows and statistics, the journal, the generation) → delete the replaced chunks and settle the journal. Any
number of processes on any machines share it; the generation tells each one when another has committed.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

from qa.errors import ClaimLostError, ConfigError
from qa.index.lexical import LexicalRow
from qa.index.manifest import ArticleRecord
from qa.index.postgres.database import PgDatabase, redact
from qa.index.postgres.lexical import SCHEMA as LEXICAL_SCHEMA
from qa.index.postgres.lexical import PgLexicalIndex
from qa.index.postgres.queue import LIVE_OWNERS
from qa.index.postgres.queue import SCHEMA as QUEUE_SCHEMA
from qa.schema import Passage

SCHEMA_VERSION = 2
"""Bumped when the tables change; a database written by a newer ``qa`` is refused with the fix, an older one is
upgraded in place (2: ``lexical_chunks.char_start/char_end``, NULL for the chunks written before)."""

INIT_LOCK = 0x7161_0000_0001
"""Advisory lock key held while creating the schema (two processes starting at once)."""

SCHEMA = [
    "CREATE TABLE IF NOT EXISTS qa_schema (version integer NOT NULL)",
    """CREATE TABLE IF NOT EXISTS articles (
        doc_id text PRIMARY KEY,
        content_hash text NOT NULL,
        title text NOT NULL DEFAULT '',
        date text NOT NULL DEFAULT '',
        url text NOT NULL DEFAULT '',
        source text NOT NULL DEFAULT '',
        path text NOT NULL DEFAULT '',
        text text NOT NULL,
        chunk_ids text[] NOT NULL,
        ingested_at text NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS articles_path ON articles(path)",
    "CREATE TABLE IF NOT EXISTS meta (key text PRIMARY KEY, value text NOT NULL)",
    # the journal: chunk ids whose fate is not settled, under the token of the batch that wrote them ('' for a writer
    # holding the writer lock); recovery leaves alone the ids of batches in flight (qa.index.postgres.queue)
    """CREATE TABLE IF NOT EXISTS pending (
        chunk_id text NOT NULL,
        owner text NOT NULL DEFAULT '',
        PRIMARY KEY (chunk_id, owner)
    )""",
]

UPGRADES = {
    # the chunk's place in its article (the text a search shows is cut from the article, not fetched from Chroma);
    # NULL in the rows written before
    2: ["ALTER TABLE lexical_chunks ADD COLUMN IF NOT EXISTS char_start integer, ADD COLUMN IF NOT EXISTS char_end integer"],
}
"""What brings a database written under the schema before each version to it (run in the init transaction)."""

_BUMP = "INSERT INTO meta VALUES ('generation', '1') ON CONFLICT (key) DO UPDATE SET value = (meta.value::bigint + 1)::text"
_COLUMNS = "doc_id, content_hash, title, date, url, source, path, text, chunk_ids, ingested_at"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def init_schema(db: PgDatabase) -> str:
    """Create the tables if missing (under an advisory lock: several processes may start at once) and check the
    schema version. Returns what it did: ``"created"``, ``"upgraded from schema N"`` or ``"up to date"``."""
    with db.transaction() as conn:
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (INIT_LOCK,))
        exists = conn.execute("SELECT to_regclass('qa_schema') IS NOT NULL").fetchone()[0]
        for statement in (*SCHEMA, *LEXICAL_SCHEMA, *QUEUE_SCHEMA):
            conn.execute(statement)
        row = conn.execute("SELECT version FROM qa_schema").fetchone()
        if row is None:
            conn.execute("INSERT INTO qa_schema VALUES (%s)", (SCHEMA_VERSION,))
            return "created"
        if row[0] > SCHEMA_VERSION:
            raise ConfigError(
                f"the database at {redact(db.url)} has schema version {row[0]}, newer than this qa's "
                f"({SCHEMA_VERSION}): upgrade qa, or point QA_DATABASE_URL at another database"
            )
        if row[0] < SCHEMA_VERSION:
            for version in range(row[0] + 1, SCHEMA_VERSION + 1):
                for statement in UPGRADES.get(version, []):
                    conn.execute(statement)
            conn.execute("UPDATE qa_schema SET version = %s", (SCHEMA_VERSION,))
            return f"upgraded from schema {row[0]}"
        return "up to date" if exists else "created"


def _record(row: tuple) -> ArticleRecord:
    doc_id, chash, title, date, url, source, path, text, chunk_ids, ingested_at = row
    return ArticleRecord(doc_id, chash, text, title, date, url, source, path, list(chunk_ids), ingested_at)


class PgManifest:
    """:class:`qa.index.parts.ManifestStore` over PostgreSQL; the BM25 rows are written in the same transactions."""

    def __init__(self, db: PgDatabase) -> None:
        self.db = db
        init_schema(db)

    def close(self) -> None:
        self.db.close()

    def get(self, doc_id: str) -> ArticleRecord | None:
        with self.db.read() as conn:
            row = conn.execute(f"SELECT {_COLUMNS} FROM articles WHERE doc_id = %s", (doc_id,)).fetchone()
        return _record(row) if row else None

    def hashes(self, doc_ids: list[str]) -> dict[str, str]:
        if not doc_ids:
            return {}
        with self.db.read() as conn:
            rows = conn.execute("SELECT doc_id, content_hash FROM articles WHERE doc_id = ANY(%s)", (list(doc_ids),))
            return dict(rows.fetchall())

    def ids_for_path(self, path: str) -> list[str]:
        with self.db.read() as conn:
            return [r[0] for r in conn.execute("SELECT doc_id FROM articles WHERE path = %s", (path,))]

    def put_many(
        self,
        records: list[ArticleRecord],
        lexical_rows: Sequence[LexicalRow] = (),
        drop_chunks: Sequence[str] = (),
        drop_docs: Sequence[str] = (),
        owner: str = "",
    ) -> list[str]:
        """As :meth:`qa.index.manifest.Manifest.put_many`, in one PostgreSQL transaction. The chunks a record replaces
        are read in the transaction too (two workers may commit versions of one article one after the other)."""
        now = _now()
        rows = [
            (r.doc_id, r.content_hash, r.title, r.date, r.url, r.source, r.path, r.text, list(r.chunk_ids), now) for r in records
        ]
        keep = {c for r in records for c in r.chunk_ids}
        with self.db.transaction() as conn:
            if owner:  # a queue claim: each article still ours (locked until this commits), or taken over
                held = conn.execute(
                    "SELECT doc_id FROM ingest_queue WHERE token = %s AND state = 'claimed' FOR UPDATE", (owner,)
                ).fetchall()
                lost = {r.doc_id for r in records} - {d for (d,) in held}
                if lost:
                    raise ClaimLostError(
                        f"this batch's lease ran out and another worker took over {len(lost)} of its articles "
                        f"(e.g. {sorted(lost)[0]!r}): their commit is left to that worker"
                    )
            lexical = PgLexicalIndex(conn)
            doomed = set(drop_chunks)
            for old in conn.execute("SELECT chunk_ids FROM articles WHERE doc_id = ANY(%s)", ([r.doc_id for r in records],)):
                doomed.update(old[0])
            for doc_id in drop_docs:
                doomed.update(self._chunk_ids_of(conn, doc_id))
                conn.execute("DELETE FROM articles WHERE doc_id = %s", (doc_id,))
                lexical.delete_doc(doc_id)
            doomed -= keep
            lexical.delete_chunks(sorted(doomed))
            lexical.add(list(lexical_rows))
            with conn.cursor() as cur:
                cur.executemany(
                    f"INSERT INTO articles ({_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
                    "ON CONFLICT (doc_id) DO UPDATE SET " + ", ".join(f"{c} = EXCLUDED.{c}" for c in _COLUMNS.split(", ")[1:]),
                    rows,
                )
            if keep:
                conn.execute("DELETE FROM pending WHERE chunk_id = ANY(%s)", (sorted(keep),))
            self._journal(conn, sorted(doomed))
            conn.execute(
                "INSERT INTO meta VALUES ('last_ingest', %s) ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value", (now,)
            )
            conn.execute(_BUMP)
        return sorted(doomed)

    @staticmethod
    def _chunk_ids_of(conn: Any, doc_id: str) -> list[str]:
        row = conn.execute("SELECT chunk_ids FROM articles WHERE doc_id = %s", (doc_id,)).fetchone()
        return list(row[0]) if row else []

    @staticmethod
    def _journal(conn: Any, chunk_ids: Sequence[str], owner: str = "") -> None:
        if chunk_ids:
            conn.execute(
                "INSERT INTO pending SELECT unnest(%s::text[]), %s ON CONFLICT DO NOTHING",
                (list(chunk_ids), owner),
            )

    def delete(self, doc_id: str) -> list[str] | None:
        with self.db.transaction() as conn:
            row = conn.execute("DELETE FROM articles WHERE doc_id = %s RETURNING chunk_ids", (doc_id,)).fetchone()
            if row is None:
                return None
            chunk_ids = list(row[0])
            PgLexicalIndex(conn).delete_doc(doc_id)
            self._journal(conn, chunk_ids)
            conn.execute(_BUMP)
        return chunk_ids

    def clear(self) -> None:
        with self.db.transaction() as conn:
            conn.execute("DELETE FROM articles")
            conn.execute("DELETE FROM meta WHERE key != 'generation'")
            conn.execute("DELETE FROM pending")
            PgLexicalIndex(conn).clear()
            conn.execute(_BUMP)

    # -- crash safety: the pending journal, the committed set, the generation ---------
    def journal(self, chunk_ids: Sequence[str], owner: str = "") -> None:
        """Record chunk ids about to be written to the vector store, under the batch ``owner`` (a queue token)."""
        if chunk_ids:
            with self.db.transaction() as conn:
                self._journal(conn, chunk_ids, owner)

    def pending(self) -> list[str]:
        """The journaled ids recovery may settle: those no batch in flight (a live lease) has journaled."""
        sql = (
            "SELECT DISTINCT chunk_id FROM pending p WHERE NOT EXISTS (SELECT 1 FROM pending q "
            f"WHERE q.chunk_id = p.chunk_id AND q.owner != '' AND q.owner IN ({LIVE_OWNERS})) ORDER BY chunk_id"
        )
        with self.db.read() as conn:
            return [r[0] for r in conn.execute(sql)]

    def settle(self, chunk_ids: Sequence[str]) -> None:
        if chunk_ids:
            with self.db.transaction() as conn:
                conn.execute("DELETE FROM pending WHERE chunk_id = ANY(%s)", (list(chunk_ids),))
                conn.execute(_BUMP)

    def committed(self, chunk_ids: Sequence[str]) -> set[str]:
        if not chunk_ids:
            return set()
        with self.db.read() as conn:
            rows = conn.execute("SELECT chunk_id FROM lexical_chunks WHERE chunk_id = ANY(%s)", (list(chunk_ids),))
            return {r[0] for r in rows}

    def passages(self, chunk_ids: Sequence[str]) -> tuple[dict[str, Passage], list[str]]:
        """The committed chunks among ``chunk_ids`` as passages, their text cut from their article's (one read: one
        instant), and the committed ones written before schema 2 (their place unknown: the caller asks Chroma)."""
        if not chunk_ids:
            return {}, []
        sql = (
            "SELECT c.chunk_id, c.char_start, c.char_end, a.doc_id, a.title, a.source, a.url, a.date, "
            "CASE WHEN c.char_start IS NULL THEN NULL ELSE substr(a.text, c.char_start + 1, c.char_end - c.char_start) END "
            "FROM lexical_chunks c JOIN articles a ON a.doc_id = c.doc_id WHERE c.chunk_id = ANY(%s)"
        )
        found: dict[str, Passage] = {}
        unplaced: list[str] = []
        with self.db.read() as conn:
            for chunk_id, start, end, doc_id, title, source, url, date, text in conn.execute(sql, (list(chunk_ids),)):
                if text is None:
                    unplaced.append(chunk_id)
                    continue
                found[chunk_id] = Passage(
                    doc_id=doc_id, chunk_id=chunk_id, text=text, title=title, source=source, url=url, date=date,
                    start=start, end=end,
                )  # fmt: skip
        return found, unplaced

    def generation(self) -> int:
        with self.db.read() as conn:
            row = conn.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()
        return int(row[0]) if row else 0

    def doc_ids(self) -> list[str]:
        with self.db.read() as conn:
            return [r[0] for r in conn.execute("SELECT doc_id FROM articles ORDER BY doc_id")]

    def paths(self) -> list[tuple[str, str]]:
        with self.db.read() as conn:
            return [tuple(r) for r in conn.execute("SELECT doc_id, path FROM articles WHERE path != '' ORDER BY path, doc_id")]

    def chunk_map(self) -> dict[str, str]:
        with self.db.read() as conn:
            return {c: doc_id for doc_id, chunk_ids in conn.execute("SELECT doc_id, chunk_ids FROM articles") for c in chunk_ids}

    def iter_records(self, doc_ids: Sequence[str]) -> Iterator[ArticleRecord]:
        for doc_id in doc_ids:
            record = self.get(doc_id)
            if record is not None:
                yield record

    def count(self) -> int:
        with self.db.read() as conn:
            return int(conn.execute("SELECT COUNT(*) FROM articles").fetchone()[0])

    def is_empty(self) -> bool:
        with self.db.read() as conn:
            return conn.execute("SELECT 1 FROM articles LIMIT 1").fetchone() is None

    def sources(self) -> list[str]:
        with self.db.read() as conn:
            return [r[0] for r in conn.execute("SELECT DISTINCT source FROM articles WHERE source != '' ORDER BY source")]

    def meta(self, key: str) -> str | None:
        with self.db.read() as conn:
            row = conn.execute("SELECT value FROM meta WHERE key = %s", (key,)).fetchone()
        return row[0] if row else None

    def page(self, offset: int, limit: int) -> list[ArticleRecord]:
        columns = _COLUMNS.replace(", text,", ", '' AS text,")
        with self.db.read() as conn:
            rows = conn.execute(f"SELECT {columns} FROM articles ORDER BY doc_id LIMIT %s OFFSET %s", (limit, offset))
            return [_record(row) for row in rows.fetchall()]

    def problems(self) -> list[str]:
        """Nothing beyond what ``qa check`` compares: PostgreSQL checks its own pages (there is no ``quick_check``)."""
        return []
