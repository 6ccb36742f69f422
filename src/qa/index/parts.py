"""The seams of an index: what the writer, the retriever, the check and the knowledge base need from each part.

An index is four parts (:class:`qa.index.Index`), each a protocol here with one implementation per backend:

- :class:`VectorStore` (chunks, vectors, metadata): :class:`qa.index.store.ChunkStore`, an embedded Chroma,
  or the same over a ``chroma run`` server (``QA_CHROMA_URL``);
- :class:`ManifestStore` (articles, journal, generation): :class:`qa.index.manifest.Manifest` in SQLite, or
  PostgreSQL (:mod:`qa.index.postgres`, ``QA_DATABASE_URL``);
- :class:`LexicalStore` (BM25 over the project's own terms): :class:`qa.index.lexical.SqliteLexical` (FTS5) on
  the manifest's SQLite file, or BM25 scored in SQL (:mod:`qa.index.postgres.lexical`);
- :class:`WriterLockPart`, :class:`CommitLockPart`: file locks (:mod:`qa.index.locking`), or advisory locks.

Every part takes the one :class:`~qa.filters.Filters` value and translates it into its own dialect, and every
chunk carries its article's :class:`~qa.schema.ArticleMeta` whole (:class:`ChunkPlace`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

import numpy as np

from qa.filters import NO_FILTERS, Filters
from qa.schema import ArticleMeta, Passage

if TYPE_CHECKING:
    from qa.index.lexical import LexicalRow
    from qa.index.manifest import ArticleRecord

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class IndexSpec:
    """How an index was built; stored with the vectors (Chroma: the collection's metadata)."""

    model_id: str
    dimension: int
    chunk_tokens: int
    chunk_overlap: int

    def as_metadata(self) -> dict[str, Any]:
        return {
            "qa_schema": SCHEMA_VERSION,
            "embedding_model": self.model_id,
            "dimension": self.dimension,
            "chunk_tokens": self.chunk_tokens,
            "chunk_overlap": self.chunk_overlap,
        }


class ChunkPlace(NamedTuple):
    """Where a chunk sits: its article's metadata, its number in the article, its character offsets."""

    meta: ArticleMeta
    number: int
    start: int
    end: int


class Fetched(NamedTuple):
    """What :meth:`VectorStore.get` found: the passages, and how many asked-for chunks it could not show."""

    passages: list[Passage]
    misses: int


Visible = Callable[[Sequence[str]], set[str]]
"""Given chunk ids, those that search may show (the committed ones, per the manifest)."""

Texts = Callable[[Sequence[str]], tuple[dict[str, Passage], list[str]]]
"""Given chunk ids, the committed ones as passages read from the manifest (which keeps the articles' text), and the
committed ones whose place in their article it does not know (written by an older ``qa``: the store reads them)."""


class VectorStore(Protocol):
    """Chunks with their vectors and metadata. Shows only the chunks its ``visible`` callable allows."""

    def spec(self) -> dict[str, Any] | None:
        """The build record (:meth:`IndexSpec.as_metadata`), or None while the store holds nothing."""

    def check_compatible(self, model_id: str, chunk_tokens: int | None = None, chunk_overlap: int | None = None) -> None:
        """Raise :class:`~qa.errors.IndexMismatchError` if the store was built another way."""

    def ensure(self, spec: IndexSpec) -> Any:
        """Create the store with ``spec`` if missing, else check it against ``spec``."""

    def drop(self) -> None:
        """Delete every chunk and the build record."""

    def refresh(self) -> bool:
        """Reload after another process changed the data; False if this store needs no reload."""

    def upsert(self, ids: list[str], vectors: np.ndarray, texts: list[str], places: Sequence[ChunkPlace]) -> None:
        """Write chunks under their (deterministic) ids; writing one again replaces it."""

    def delete(self, ids: Sequence[str]) -> None: ...

    def query(self, vector: np.ndarray, k: int, filters: Filters = NO_FILTERS) -> list[Passage]:
        """The ``k`` nearest visible chunks that pass ``filters``, nearest first (``score`` = cosine similarity)."""

    def nearest(self, vector: np.ndarray, n: int, filters: Filters = NO_FILTERS) -> list[tuple[str, float]]:
        """The ids of the ``n`` nearest chunks that pass ``filters``, visible or not, with their cosine similarity,
        nearest first (ids only: the caller checks them against the manifest, then fetches what it shows)."""

    def places(self, ids: Sequence[str]) -> dict[str, tuple[int, int]]:
        """``chunk_id → (start, end)`` in its article's text, for those of ``ids`` the store holds."""

    def get(self, ids: Sequence[str], *, checked: bool = False) -> Fetched:
        """The visible chunks among ``ids``, in that order, and how many could not be shown (``checked``: the caller
        has checked ``ids`` against the manifest already)."""

    def count(self) -> int: ...

    def all_ids(self) -> dict[str, str]:
        """``chunk_id → doc_id`` of everything stored, visible or not (``qa check``)."""


class LexicalStore(Protocol):
    """BM25 over the project's analysed terms (:func:`qa.analysis.analyze`). Its rows are written by the manifest,
    in the manifest's transactions; this is the part readers and the check see."""

    def search(self, query: str, k: int, filters: Filters = NO_FILTERS) -> list[tuple[str, float]]:
        """The ``k`` best ``(chunk_id, score)``, best first (higher is better)."""

    def count(self) -> int: ...

    def rows(self) -> dict[str, str]:
        """``chunk_id → doc_id`` for every indexed chunk."""

    def unindexed_chunks(self) -> list[str]:
        """Chunk rows that BM25 cannot find (their terms are missing)."""

    def problems(self) -> list[str]:
        """What the index itself reports as broken; empty when sound."""

    def rebuild(self) -> None:
        """Rebuild the term index from the stored rows."""

    def drop_rows(self, chunk_ids: Sequence[str]) -> None:
        """Delete these chunks' rows in one transaction."""

    def unplaced(self, limit: int | None = None) -> list[str]:
        """Chunks whose place in their article this index should keep and lacks (PostgreSQL rows written before
        schema 2: their text is read from the vector store); ``[]`` for an index that keeps no places (SQLite)."""

    def place(self, places: dict[str, tuple[int, int]]) -> None:
        """Record ``chunk_id → (start, end)`` in the article's text, in one transaction."""


class ManifestStore(Protocol):
    """The source of truth: one row per article (text, metadata, chunk ids), the ``pending`` journal of chunk ids
    whose fate is not settled, and the generation that grows with every committed change."""

    def get(self, doc_id: str) -> ArticleRecord | None: ...
    def hashes(self, doc_ids: list[str]) -> dict[str, str]: ...
    def ids_for_path(self, path: str) -> list[str]: ...

    def put_many(
        self,
        records: list[ArticleRecord],
        lexical_rows: Sequence[LexicalRow] = (),
        drop_chunks: Sequence[str] = (),
        drop_docs: Sequence[str] = (),
        owner: str = "",
    ) -> list[str]:
        """One transaction: forget ``drop_docs``/``drop_chunks``, store the records and their lexical rows, journal
        the chunks to delete from the vector store; returns those. ``owner`` (a queue claim's token): the commit is
        refused with :class:`~qa.errors.ClaimLostError` if the claim is no longer held."""

    def delete(self, doc_id: str) -> list[str] | None: ...
    def clear(self) -> None: ...
    def journal(self, chunk_ids: Sequence[str], owner: str = "") -> None:
        """Record chunk ids before they are written to the vector store, under the batch ``owner`` (a queue token)."""

    def pending(self) -> list[str]:
        """The journaled ids recovery may settle (not those of a batch in flight)."""

    def settle(self, chunk_ids: Sequence[str]) -> None: ...
    def committed(self, chunk_ids: Sequence[str]) -> set[str]: ...
    def generation(self) -> int: ...
    def doc_ids(self) -> list[str]: ...
    def paths(self) -> list[tuple[str, str]]: ...
    def chunk_map(self) -> dict[str, str]: ...
    def iter_records(self, doc_ids: Sequence[str]) -> Iterator[ArticleRecord]: ...
    def count(self) -> int: ...
    def is_empty(self) -> bool: ...
    def sources(self) -> list[str]: ...
    def meta(self, key: str) -> str | None: ...
    def page(self, offset: int, limit: int) -> list[ArticleRecord]: ...

    def problems(self) -> list[str]:
        """What the database itself reports as broken (SQLite's ``quick_check``); empty when sound."""

    def close(self) -> None: ...


class WriterLockPart(Protocol):
    """One writer at a time across processes (and machines); re-entrant within a process."""

    on_wait: Callable[[str], None] | None

    @property
    def held(self) -> bool: ...

    def hold(self, *, wait: bool = True, timeout: float | None = None) -> contextlib.AbstractContextManager[None]: ...


class CommitLockPart(Protocol):
    """Exclusive while a writer moves the committed state; shared by a reader that needs one fixed state."""

    def exclusive(self) -> contextlib.AbstractContextManager[Any]: ...

    def shared(self) -> contextlib.AbstractContextManager[Any]: ...
