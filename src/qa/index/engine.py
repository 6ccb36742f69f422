"""An embedded index read through Chroma's engine alone: a cold question without the ``chromadb`` client package.

``chromadb.PersistentClient`` is a Python shell around ``chromadb_rust_bindings``, the Rust engine that owns the
files. The shell is what costs a cold start: ``import chromadb`` took 0.49 s and ~45 MB here (its embedding
functions pull httpx and jsonschema, its telemetry OpenTelemetry and gRPC, plus the async client, auth and
pydantic models), the engine's module 0.05 s. A question needs four of the engine's calls — the collection's record,
a nearest-neighbour query, a get by ids, a count — so :func:`open_engine_client` opens the embedded store with exactly
the settings ``PersistentClient`` gives the engine and makes the same calls ``chromadb.api.rust.RustBindingsAPI``
makes (``chromadb`` is pinned: a test compares both clients' answers). Writes need the full client:
:class:`qa.index.store.ChunkStore` swaps it in before its first write, and closes the engine first, so one process
holds one engine per index folder.
"""

from __future__ import annotations

import json
import logging
import resource
from collections.abc import Sequence
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

TENANT, DATABASE = "default_tenant", "default_database"
"""Chroma's default tenant and database (``chromadb.config.DEFAULT_TENANT``/``DEFAULT_DATABASE``)."""


class EngineCollection:
    """One collection, read through the engine: ``metadata``, :meth:`query`, :meth:`get`, :meth:`count` answer as
    ``chromadb``'s ``Collection`` does (lists of ids, documents, metadatas, distances per query)."""

    def __init__(self, client: EngineClient, record: Any) -> None:
        self._client = client
        self.id = str(record.id)
        self.name = str(record.name)
        self.metadata: dict[str, Any] = dict(record.metadata or {})

    def query(
        self,
        query_embeddings: Sequence[Any],
        n_results: int = 10,
        where: dict[str, Any] | None = None,
        include: Sequence[str] = ("metadatas", "documents", "distances"),
    ) -> dict[str, Any]:
        found = self._client.bindings.query(
            self.id,
            None,
            list(query_embeddings),
            n_results,
            json.dumps(where) if where else None,
            None,
            list(include),
            TENANT,
            DATABASE,
        )
        return {
            "ids": found.ids,
            "documents": found.documents,
            "metadatas": found.metadatas,
            "distances": found.distances,
        }

    def get(
        self,
        ids: Sequence[str] | None = None,
        where: dict[str, Any] | None = None,
        limit: int | None = None,
        offset: int | None = None,
        include: Sequence[str] = ("metadatas", "documents"),
    ) -> dict[str, Any]:
        found = self._client.bindings.get(
            self.id,
            list(ids) if ids is not None else None,
            json.dumps(where) if where else None,
            limit,
            offset or 0,
            None,
            list(include),
            TENANT,
            DATABASE,
        )
        got = {"ids": found.ids, "documents": found.documents, "metadatas": found.metadatas}
        if "embeddings" in include:
            got["embeddings"] = found.embeddings
        return got

    def count(self) -> int:
        return int(self._client.bindings.count(self.id, TENANT, DATABASE))


class EngineClient:
    """The embedded store of one folder, opened on Chroma's engine for reading (see the module's docstring)."""

    read_only = True
    """:class:`qa.index.store.ChunkStore` swaps in the full client before a write."""

    def __init__(self, bindings: Any, path: Path) -> None:
        self._bindings = bindings
        self.path = path

    @property
    def bindings(self) -> Any:
        if self._bindings is None:
            raise RuntimeError(f"the Chroma engine on {self.path} was closed")
        return self._bindings

    def get_collection(self, name: str, embedding_function: Any = None) -> EngineCollection:
        """The collection ``name``; raises (as ``chromadb`` does) when it does not exist."""
        return EngineCollection(self, self.bindings.get_collection(name, TENANT, DATABASE))

    def get_max_batch_size(self) -> int:
        return int(self.bindings.get_max_batch_size())

    def close(self) -> None:
        """Let the engine go (its files are closed when the last collection of it is gone)."""
        self._bindings = None


def open_engine_client(path: Path) -> EngineClient | None:
    """The engine on the embedded store in ``path`` (created if missing, as ``PersistentClient`` does), or None if this
    ``chromadb`` has no engine that answers as expected (the caller then uses the full client)."""
    try:
        import chromadb_rust_bindings as rust

        config = rust.SqliteDBConfig(
            hash_type=rust.MigrationHash.MD5,  # PersistentClient's defaults: migrations "apply", hash "md5"
            migration_mode=rust.MigrationMode.Apply,
            url=str(Path(path) / "chroma.sqlite3"),
        )
        bindings = rust.Bindings(
            allow_reset=False,
            sqlite_db_config=config,
            persist_path=str(path),
            # as RustBindingsAPI: each HNSW index holds 4 data files and 1 metadata file
            hnsw_cache_size=resource.getrlimit(resource.RLIMIT_NOFILE)[0] // 5,
        )
        bindings.get_database(DATABASE, TENANT)  # the engine answers, and the default database exists
    except Exception as exc:  # an engine of another shape, or one that fails: the full client opens it (or says why)
        logger.info("reading %s through the full Chroma client (engine: %s)", path, exc)
        return None
    return EngineClient(bindings, Path(path))
