"""The PostgreSQL backend (``QA_DATABASE_URL``): what is SQLite on one machine, shared by any number of machines.

- :mod:`qa.index.postgres.database`: one connection per process, its transactions, reconnection;
- :mod:`qa.index.postgres.manifest`: the articles, the journal, the generation, the schema and its version;
- :mod:`qa.index.postgres.lexical`: BM25 scored in SQL over the project's own terms (ranks as FTS5 does);
- :mod:`qa.index.postgres.locking`: the writer and commit locks as advisory locks.

The vectors stay in Chroma, as a ``chroma run`` server (:class:`qa.index.store.ChunkStore`). ``psycopg`` is
imported only when ``QA_DATABASE_URL`` is set.
"""

from __future__ import annotations

from qa.index.postgres.database import PgDatabase
from qa.index.postgres.lexical import PgLexical
from qa.index.postgres.locking import PgCommitLock, PgWriterLock
from qa.index.postgres.manifest import PgManifest, init_schema


def open_parts(url: str) -> tuple[PgManifest, PgLexical, PgWriterLock, PgCommitLock]:
    """The manifest, the lexical index and the two locks of the index in the database at ``url`` (its tables are
    created on first use)."""
    db = PgDatabase(url)
    return PgManifest(db), PgLexical(db), PgWriterLock(url), PgCommitLock(url)


def init_db(url: str) -> str:
    """Create the schema at ``url`` if missing, check its version: what ``qa init-db`` runs."""
    db = PgDatabase(url)
    try:
        return init_schema(db)
    finally:
        db.close()
