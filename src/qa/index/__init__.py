"""The index of one folder: what is stored, how it is written, what readers may see.

- :mod:`qa.index.parts`: the protocols of the parts below (the seams where a backend plugs in);
- :mod:`qa.index.manifest`: SQLite, one row per article (text, metadata, chunk ids), the ``pending``
  journal and the generation; :mod:`qa.index.lexical` (BM25 over FTS5), a part of its own on the same
  database (:mod:`qa.index.sqlite`), written in the manifest's transactions;
- :mod:`qa.index.store`: the Chroma collection of chunks and vectors (embedded or a server);
- :mod:`qa.index.writer`: the write protocol (journal → Chroma → one transaction → cleanup);
- :mod:`qa.index.view`: the committed state readers trust; :mod:`qa.index.locking`: the writer and
  commit locks; :mod:`qa.index.integrity`: ``qa check`` / ``--repair``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qa.errors import ConfigError
from qa.index.lexical import SqliteLexical
from qa.index.locking import CommitLock, WriterLock
from qa.index.manifest import Manifest
from qa.index.parts import CommitLockPart, LexicalStore, ManifestStore, VectorStore, WriterLockPart
from qa.index.sqlite import SqliteDatabase
from qa.index.store import ChunkStore, make_client, reopen_client
from qa.index.view import CommittedView

if TYPE_CHECKING:
    from qa.index.postgres.queue import PgQueue

MANIFEST_NAME = "manifest.sqlite3"


@dataclass
class Index:
    """The parts of one index (:mod:`qa.index.parts`): the manifest, the lexical index, the vector store, the two
    locks, and the committed view over them."""

    manifest: ManifestStore
    lexical: LexicalStore
    store: VectorStore
    writer_lock: WriterLockPart
    commit_lock: CommitLockPart
    view: CommittedView
    queue: PgQueue | None = None
    """The ingest queue (PostgreSQL only): ``qa ingest`` enqueues, ``qa worker`` processes claim batches."""
    batch_lock: CommitLockPart | None = None
    """Shared by each queue worker's batch, exclusive for recovery (PostgreSQL only)."""

    @classmethod
    def open(
        cls,
        index_dir: Path,
        collection: str,
        *,
        chroma_url: str | None = None,
        client: Any = None,
        database_url: str | None = None,
    ) -> Index:
        """The index in ``index_dir`` (created if missing); vectors in an embedded Chroma there, in the
        server at ``chroma_url``, or in the given ``client``. With ``database_url``, the manifest, the lexical
        index and the locks live in that PostgreSQL database instead (:mod:`qa.index.postgres`), and the
        vectors must be on a server (``chroma_url``) that every machine reaches."""
        if database_url:
            if not (chroma_url or client is not None):
                raise ConfigError(
                    "QA_DATABASE_URL keeps the index in PostgreSQL, but the vectors would stay on this machine: "
                    "set QA_CHROMA_URL=http://host:port too (a `chroma run` server every machine reaches)"
                )
            from qa.index.postgres import open_parts

            parts = open_parts(database_url)
            store = ChunkStore(
                client or make_client(Path(index_dir), chroma_url),
                collection,
                visible=parts.manifest.committed,
                texts=parts.manifest.passages,
            )
            view = CommittedView(parts.manifest, store, parts.writer_lock, parts.commit_lock)
            return cls(
                parts.manifest, parts.lexical, store, parts.writer_lock, parts.commit_lock, view, parts.queue, parts.batch_lock
            )
        index_dir = Path(index_dir)
        db = SqliteDatabase(index_dir / MANIFEST_NAME)
        lexical = SqliteLexical(db)
        manifest = Manifest(db, lexical)
        # an embedded store we opened ourselves can be reopened when another process changes it; it is read through
        # Chroma's engine alone until the first write (qa.index.engine: no `chromadb` import for a question)
        own = client is None and not chroma_url
        store = ChunkStore(
            client or make_client(index_dir, chroma_url, engine=True),
            collection,
            visible=manifest.committed,
            reopen=(lambda engine: reopen_client(index_dir, engine=engine)) if own else None,
            writer=(lambda: make_client(index_dir)) if own else None,
        )
        writer_lock, commit_lock = WriterLock(index_dir), CommitLock(index_dir)
        view = CommittedView(manifest, store, writer_lock, commit_lock)
        return cls(manifest, lexical, store, writer_lock, commit_lock, view)

    def close(self) -> None:
        self.manifest.close()
        for lock in (self.writer_lock, self.commit_lock, self.batch_lock):
            close = getattr(lock, "close", None)  # PostgreSQL: the sessions kept for lock holds
            if close is not None:
                close()

    def probe(self) -> dict[str, str]:
        """Each backend's answer to a cheap read: ``database`` (the manifest: SQLite or PostgreSQL) and ``vectors``
        (Chroma), ``"ok"`` or the error."""
        out: dict[str, str] = {}
        for name, call in (("database", self.manifest.generation), ("vectors", self.store.count)):
            try:
                call()
                out[name] = "ok"
            except Exception as exc:  # noqa: BLE001 - reported, not raised: /ready says which backend is away
                out[name] = str(exc) or type(exc).__name__
        return out

    def stats(self, model_id: str, chunk_tokens: int, chunk_overlap: int) -> dict[str, Any]:
        """Counts and the build record (the configured model and chunking where the index has none yet)."""
        spec = self.store.spec() or {}
        return {
            "articles": self.manifest.count(),
            "chunks": self.store.count(),
            "model": spec.get("embedding_model", model_id),
            "dimension": spec.get("dimension"),
            "chunk_tokens": spec.get("chunk_tokens", chunk_tokens),
            "chunk_overlap": spec.get("chunk_overlap", chunk_overlap),
            "sources": self.manifest.sources(),
            "last_ingest": self.manifest.meta("last_ingest"),
            **({"queue": self.queue.stats()} if self.queue is not None else {}),
        }
