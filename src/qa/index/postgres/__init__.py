"""The PostgreSQL backend (``QA_DATABASE_URL``): what is SQLite on one machine, shared by any number of machines.

- :mod:`qa.index.postgres.database`: one connection per process, its transactions, reconnection;
- :mod:`qa.index.postgres.manifest`: the articles, the journal, the generation, the schema and its version;
- :mod:`qa.index.postgres.lexical`: BM25 scored in SQL over the project's own terms (ranks as FTS5 does);
- :mod:`qa.index.postgres.locking`: the writer and commit locks as advisory locks;
- :mod:`qa.index.postgres.queue`: the ingest queue ``qa worker`` processes claim batches from.

The vectors stay in Chroma, as a ``chroma run`` server (:class:`qa.index.store.ChunkStore`). ``psycopg`` is
imported only when ``QA_DATABASE_URL`` is set.
"""

from __future__ import annotations

from dataclasses import dataclass

from qa.index.postgres.database import PgDatabase
from qa.index.postgres.lexical import PgLexical
from qa.index.postgres.locking import BATCH_KEY, PgCommitLock, PgWriterLock
from qa.index.postgres.manifest import PgManifest, init_schema
from qa.index.postgres.queue import PgQueue


@dataclass
class PgParts:
    """The parts of an index kept in PostgreSQL."""

    manifest: PgManifest
    lexical: PgLexical
    writer_lock: PgWriterLock
    commit_lock: PgCommitLock
    batch_lock: PgCommitLock
    queue: PgQueue


def open_parts(url: str) -> PgParts:
    """The manifest, the lexical index, the locks and the ingest queue of the index in the database at ``url``
    (its tables are created on first use; a newer schema is refused)."""
    db = PgDatabase(url)
    return PgParts(PgManifest(db), PgLexical(db), PgWriterLock(url), PgCommitLock(url), PgCommitLock(url, BATCH_KEY), PgQueue(db))


def init_db(url: str) -> str:
    """Create the schema at ``url`` if missing, check its version: what ``qa init-db`` runs."""
    db = PgDatabase(url)
    try:
        return init_schema(db)
    finally:
        db.close()
