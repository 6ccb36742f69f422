"""The vector store: one Chroma collection of chunks (embedded or a server).

Chroma never embeds here: the collection is created without an embedding
function and always receives vectors. The collection's metadata records how
the index was built (model id, dimension, chunking); :meth:`ChunkStore.check_compatible`
refuses to mix models.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np

from qa.errors import IndexMismatchError, StoreError
from qa.files import file_lock
from qa.filters import NO_FILTERS, Filters
from qa.index.parts import ChunkPlace, Fetched, IndexSpec, Texts, Visible

__all__ = ["ChunkStore", "Fetched", "IndexSpec", "chroma_where", "chunk_metadata", "make_client", "reopen_client"]
from qa.schema import ArticleMeta, Passage

logger = logging.getLogger(__name__)


def make_client(index_dir: Path, chroma_url: str | None = None, *, engine: bool = False) -> Any:
    """An embedded ``PersistentClient`` in ``index_dir/chroma``, or an ``HttpClient``. ``engine``: for an embedded
    store, Chroma's engine alone where it answers (:mod:`qa.index.engine`: reads only, no ``chromadb`` import)."""
    if not chroma_url and engine:
        from qa.index.engine import open_engine_client

        path = Path(index_dir) / "chroma"
        path.mkdir(parents=True, exist_ok=True)
        with file_lock(path / ".open.lock"):
            reader = open_engine_client(path)
        if reader is not None:
            return reader
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    settings = ChromaSettings(anonymized_telemetry=False)
    if chroma_url:
        url = urlparse(chroma_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise StoreError(f"QA_CHROMA_URL={chroma_url!r} is not a URL: use http://host:port")
        try:
            return chromadb.HttpClient(host=url.hostname, port=url.port or 8000, ssl=url.scheme == "https", settings=settings)
        except Exception as exc:  # chromadb raises plain ValueError/ConnectionError here
            raise StoreError(
                f"cannot reach the Chroma server at {chroma_url} ({exc}): start it with `chroma run` or unset QA_CHROMA_URL"
            ) from None
    path = Path(index_dir) / "chroma"
    path.mkdir(parents=True, exist_ok=True)
    # Chroma creates its tables when a client first opens a folder; two processes doing that at
    # once fail ("table collections already exists"), so opening is serialised between processes
    with file_lock(path / ".open.lock"):
        return chromadb.PersistentClient(path=str(path), settings=settings)


def reopen_client(index_dir: Path, *, engine: bool = False) -> Any:
    """A fresh embedded client on ``index_dir``: its own view of the data, not the cached one.

    Chroma's embedded client keeps the vector index in memory and does not see what another
    process writes (deleted chunks keep coming back from queries). A reader reopens it when the
    manifest says the index changed. ``engine``: Chroma's engine alone (reads only), as :func:`make_client`.
    """
    if engine:
        return make_client(index_dir, engine=True)
    from chromadb.api.shared_system_client import SharedSystemClient

    identifier = str(Path(index_dir) / "chroma")
    with SharedSystemClient._refcount_lock:  # forget the cached system for this path only
        old = SharedSystemClient._identifier_to_system.pop(identifier, None)
        SharedSystemClient._identifier_to_refcount.pop(identifier, None)
    client = make_client(index_dir)
    if old is not None:
        try:
            old.stop()  # frees the old in-memory index (else each reopen keeps ~2 MB)
        except Exception:  # already stopped
            logger.debug("stopping the previous Chroma system failed", exc_info=True)
    return client


def _setting_for(built_with: str, model_id: str) -> str:
    """What to set to query an index built with ``built_with`` (the model, or only the backend)."""
    model, _, backend = built_with.partition("@")
    if model == model_id.partition("@")[0]:  # same model, another backend (int8 vectors differ)
        return f"set QA_EMBEDDING_BACKEND={backend or 'torch'}"
    return f"set QA_EMBEDDING_MODEL={model}" + (f" and QA_EMBEDDING_BACKEND={backend}" if backend else "")


class ChunkStore:
    """Chunks with their vectors and metadata in a Chroma collection.

    ``visible`` (from the manifest) hides chunks whose article is not committed: written
    before a crash, or on their way in or out during an ingest in progress. ``reopen(engine)``
    builds a fresh client (embedded store only; Chroma's engine alone while ``engine``): :meth:`refresh`
    uses it. ``writer`` builds the full client when ``client`` only reads (:mod:`qa.index.engine`):
    the first write swaps it in (:meth:`_writable`). ``texts`` reads shown chunks from the manifest instead of
    Chroma (PostgreSQL keeps the articles' text: a round trip to the Chroma server saved per search).
    """

    def __init__(
        self,
        client: Any,
        collection: str,
        *,
        visible: Visible | None = None,
        reopen: Callable[[bool], Any] | None = None,
        writer: Callable[[], Any] | None = None,
        texts: Texts | None = None,
    ) -> None:
        self.client = client
        self.texts = texts
        self.name = collection
        self._collection: Any = None
        self.visible = visible
        self.reopen = reopen
        self.writer = writer if getattr(client, "read_only", False) else None
        self._users = 0  # threads inside a Chroma call; refresh() waits for none
        self._cond = threading.Condition()
        try:
            self._max_batch = int(client.get_max_batch_size())
        except Exception:  # older servers lack it
            self._max_batch = 5000

    @contextmanager
    def _using(self) -> Iterator[None]:
        with self._cond:
            self._users += 1
        try:
            yield
        finally:
            with self._cond:
                self._users -= 1
                self._cond.notify_all()

    # -- the collection and its build record ------------------------------------
    def _existing(self) -> Any:
        if self._collection is None:
            try:
                self._collection = self.client.get_collection(self.name, embedding_function=None)
            except Exception:  # NotFoundError in 1.x, ValueError in older releases
                return None
        return self._collection

    def spec(self) -> dict[str, Any] | None:
        """The build record of the index, or None if it holds nothing yet."""
        with self._using():  # not while the client is swapped (a refresh, the first write)
            col = self._existing()
            return dict(col.metadata or {}) if col is not None else None

    def check_compatible(self, model_id: str, chunk_tokens: int | None = None, chunk_overlap: int | None = None) -> None:
        """Raise :class:`IndexMismatchError` if the index was built another way."""
        recorded = self.spec()
        if not recorded:
            return
        built_with = recorded.get("embedding_model")
        if built_with and built_with != model_id:
            raise IndexMismatchError(
                f"this index was built with embedding model {built_with!r}, but the configured one is "
                f"{model_id!r}: {_setting_for(built_with, model_id)}, or use another QA_INDEX_DIR "
                "(or `qa ingest --rebuild`) to index with the new model"
            )
        for key, value in (("chunk_tokens", chunk_tokens), ("chunk_overlap", chunk_overlap)):
            if value is not None and recorded.get(key) not in (None, value):
                raise IndexMismatchError(
                    f"this index was built with {key}={recorded[key]}, but the setting is {value}: "
                    f"set QA_{key.upper()}={recorded[key]}, or rebuild with `qa ingest --rebuild`"
                )

    def ensure(self, spec: IndexSpec) -> Any:
        """The collection, created with ``spec`` if missing, checked against it if not."""
        self._writable()
        self.check_compatible(spec.model_id, spec.chunk_tokens, spec.chunk_overlap)
        col = self._existing()
        if col is None:
            col = self.client.get_or_create_collection(
                self.name,
                embedding_function=None,
                configuration={"hnsw": {"space": "cosine"}},
                metadata=spec.as_metadata(),
            )
            self._collection = col
        elif col.metadata.get("dimension") not in (None, spec.dimension):
            raise IndexMismatchError(
                f"index vectors have dimension {col.metadata['dimension']}, the model gives {spec.dimension}: rebuild the index"
            )
        return col

    def refresh(self) -> bool:
        """Reopen the embedded client (another process changed the data); False if it cannot."""
        if self.reopen is None:
            return False
        with self._cond:
            reopen, engine = self.reopen, self.writer is not None
            self._swap(lambda: reopen(engine))
        return True

    def _swap(self, make: Callable[[], Any]) -> None:
        """Replace the client by ``make()`` once no other thread of this process is inside a call to the old one
        (the caller holds ``_cond``); a read-only engine is closed first, so that the process never holds two engines
        on one folder."""
        self._cond.wait_for(lambda: self._users == 0)
        self._collection = None
        if getattr(self.client, "read_only", False):
            self.client.close()
        self.client = make()

    def _writable(self) -> None:
        """Before a write: the full client in place of a read-only engine (once per store)."""
        if self.writer is None:
            return
        with self._cond:
            if self.writer is None:
                return
            writer, self.writer = self.writer, None
            self._swap(writer)

    def drop(self) -> None:
        """Delete every chunk and the build record (``qa ingest --rebuild``)."""
        self._writable()
        if self._existing() is not None:
            self.client.delete_collection(self.name)
        self._collection = None

    # -- writes ----------------------------------------------------------------------
    def upsert(self, ids: list[str], vectors: np.ndarray, texts: list[str], places: Sequence[ChunkPlace]) -> None:
        metadatas = [chunk_metadata(*place) for place in places]
        self._writable()
        with self._using():
            col = self._existing()
            if col is None:
                raise StoreError("the collection does not exist yet: call ensure() first")
            for i in range(0, len(ids), self._max_batch):
                j = i + self._max_batch
                col.upsert(ids=ids[i:j], embeddings=vectors[i:j], documents=texts[i:j], metadatas=metadatas[i:j])

    def delete(self, ids: Sequence[str]) -> None:
        self._writable()
        with self._using():
            col = self._existing()
            if col is not None and ids:
                for i in range(0, len(ids), self._max_batch):
                    col.delete(ids=list(ids[i : i + self._max_batch]))

    def delete_article(self, doc_id: str) -> None:
        """Remove every chunk of an article, including any a crash left behind."""
        self._writable()
        col = self._existing()
        if col is not None:
            col.delete(where={"doc_id": doc_id})

    # -- reads -----------------------------------------------------------------------
    def count(self) -> int:
        with self._using():
            col = self._existing()
            return int(col.count()) if col is not None else 0

    def query(self, vector: np.ndarray, k: int, filters: Filters = NO_FILTERS) -> list[Passage]:
        """The ``k`` nearest visible chunks that pass ``filters``. Invisible ones (uncommitted, stale) are skipped:
        the query asks for more until ``k`` visible ones are found or the store is exhausted."""
        where = chroma_where(filters)
        with self._using():
            col = self._existing()
            if col is None or k <= 0:
                return []
            n = k if self.visible is None else k + 16
            while True:
                result = col.query(
                    query_embeddings=[np.asarray(vector, dtype=np.float32)],
                    n_results=n,
                    where=where,
                    include=["documents", "metadatas", "distances"],
                )
                ids = result["ids"][0]
                shown = set(ids) if self.visible is None else self.visible(ids)
                rows = zip(ids, result["documents"][0], result["metadatas"][0], result["distances"][0], strict=True)
                passages = [
                    passage_from_record(cid, text, meta, score=1.0 - float(dist))
                    for cid, text, meta, dist in rows
                    if cid in shown and text is not None
                ]
                if len(passages) >= k or len(ids) < n or n >= 8 * (k + 16):
                    return passages[:k]
                n *= 2

    def nearest(self, vector: np.ndarray, n: int, filters: Filters = NO_FILTERS) -> list[tuple[str, float]]:
        """The ids of the ``n`` nearest chunks that pass ``filters``, committed or not, with their cosine similarity,
        nearest first: no text and no metadata cross the wire (the caller checks the ids against the manifest, and
        fetches the few it shows with :meth:`get`)."""
        where = chroma_where(filters)
        with self._using():
            col = self._existing()
            if col is None or n <= 0:
                return []
            result = col.query(
                query_embeddings=[np.asarray(vector, dtype=np.float32)], n_results=n, where=where, include=["distances"]
            )
            return [(cid, 1.0 - float(d)) for cid, d in zip(result["ids"][0], result["distances"][0], strict=True)]

    def get(self, ids: Sequence[str], *, checked: bool = False) -> Fetched:
        """The visible chunks among ``ids``, in that order, and how many of ``ids`` could not be shown
        (replaced or deleted meanwhile by a writer: the caller searches again). ``checked``: the caller has
        checked ``ids`` against the manifest already (the store does not ask again)."""
        requested = list(ids)
        if not requested:
            return Fetched([], 0)
        if self.texts is not None:  # committed chunks only, read from the manifest: the visibility check too
            by_id, unplaced = self.texts(requested)
            if unplaced:
                by_id |= self._fetch(unplaced)
        else:
            if self.visible is None or checked:
                shown = requested
            else:
                visible = self.visible(requested)  # one manifest read, not one per id
                shown = [i for i in requested if i in visible]
            by_id = self._fetch(shown) if shown else {}
        passages = [by_id[i] for i in requested if i in by_id]
        return Fetched(passages, len(requested) - len(passages))

    def places(self, ids: Sequence[str]) -> dict[str, tuple[int, int]]:
        """``chunk_id → (start, end)`` from the chunks' metadata, for those of ``ids`` the store holds."""
        with self._using():
            col = self._existing()
            if col is None or not ids:
                return {}
            result = col.get(ids=list(ids), include=["metadatas"])
            return {
                cid: (int(meta["start"]), int(meta["end"]))
                for cid, meta in zip(result["ids"], result["metadatas"], strict=True)
                if meta and "start" in meta and "end" in meta
            }

    def _fetch(self, ids: list[str]) -> dict[str, Passage]:
        """The chunks among ``ids`` that Chroma holds, by id."""
        with self._using():
            col = self._existing()
            if col is None:
                return {}
            result = col.get(ids=ids, include=["documents", "metadatas"])
            return {
                cid: passage_from_record(cid, text, meta)
                for cid, text, meta in zip(result["ids"], result["documents"], result["metadatas"], strict=True)
            }

    def all_ids(self, batch: int = 5000) -> dict[str, str]:
        """``chunk_id → doc_id`` of everything in the collection (``qa check``)."""
        with self._using():
            col = self._existing()
            out: dict[str, str] = {}
            if col is None:
                return out
            offset = 0
            while True:
                result = col.get(include=["metadatas"], limit=batch, offset=offset)
                for cid, meta in zip(result["ids"], result["metadatas"], strict=True):
                    out[cid] = str((meta or {}).get("doc_id", ""))
                if len(result["ids"]) < batch:
                    return out
                offset += batch


def chunk_metadata(meta: ArticleMeta, index: int, start: int, end: int) -> dict[str, Any]:
    """What each chunk carries in Chroma (flat scalars only): its article's metadata, its place in the article."""
    return {**meta.as_dict(), "chunk_index": index, "start": start, "end": end, "date_num": meta.date_num}


def chroma_where(filters: Filters) -> dict[str, Any] | None:
    """``filters`` in Chroma's dialect: a ``where`` clause over the chunk metadata ``doc_id``, ``source``, ``date_num``."""
    clauses: list[dict[str, Any]] = []
    if filters.exclude:
        ids = list(filters.exclude)
        clauses.append({"doc_id": {"$nin": ids}} if len(ids) > 1 else {"doc_id": {"$ne": ids[0]}})
    if filters.source:
        sources = list(filters.source)
        clauses.append({"source": {"$in": sources}} if len(sources) > 1 else {"source": sources[0]})
    if filters.date_from_num is not None:
        clauses.append({"date_num": {"$gte": filters.date_from_num}})
    if filters.date_to_num is not None:
        clauses.append({"date_num": {"$lte": filters.date_to_num}})
        clauses.append({"date_num": {"$gte": 1}})  # undated articles are outside any range
    if not clauses:
        return None
    return clauses[0] if len(clauses) == 1 else {"$and": clauses}


def passage_from_record(chunk_id: str, text: str | None, meta: dict[str, Any] | None, score: float = 0.0) -> Passage:
    meta = meta or {}
    return Passage(
        doc_id=str(meta.get("doc_id", "")),
        chunk_id=chunk_id,
        text=text or "",
        title=str(meta.get("title", "")),
        source=str(meta.get("source", "")),
        url=str(meta.get("url", "")),
        date=str(meta.get("date", "")),
        score=round(score, 6),
        start=int(meta.get("start", 0)),
        end=int(meta.get("end", 0)),
    )
