"""Retrieval: dense (e5 in Chroma) + lexical (BM25 over FTS5), fused by weighted
reciprocal rank fusion; and a LangChain ``BaseRetriever`` over it.

``Passage.score`` is the cosine similarity in ``dense`` mode, the BM25 score in
``lexical`` mode, and in ``hybrid`` mode the fusion score divided by its maximum
(1.0 = first in every ranking).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict

from qa.config import RETRIEVAL_MODES
from qa.errors import QueryError
from qa.lexical import rrf_fuse
from qa.schema import Passage
from qa.store import build_where, date_number

RRF_K = 60


def hybrid_search(
    kb: Any,
    question: str,
    k: int,
    *,
    mode: str = "hybrid",
    source: str | Sequence[str] | None = None,
    date_from: str | None = None,
    date_to: str | None = None,
    exclude: Sequence[str] | None = None,
) -> list[Passage]:
    """The ``k`` best passages for ``question`` from ``kb``'s dense and lexical indexes."""
    if mode not in RETRIEVAL_MODES:
        raise QueryError(f"retrieval mode {mode!r} is unknown: use one of {', '.join(RETRIEVAL_MODES)}")
    settings = kb.settings
    if isinstance(exclude, str):
        exclude = [exclude]
    where = build_where(source, date_from, date_to, exclude)  # validates the filters for both sides
    n = max(k, settings.candidates)
    dense: list[Passage] = []
    lexical: list[tuple[str, float]] = []
    if mode == "dense" or (mode == "hybrid" and settings.dense_weight > 0):
        dense = kb.store.query(kb.embedder.embed_query(question), n if mode == "hybrid" else k, where)
    if mode == "lexical" or (mode == "hybrid" and settings.lexical_weight > 0):
        filters = {
            "source": source,
            "date_from": date_number(date_from, "date_from") if date_from else None,
            "date_to": date_number(date_to, "date_to") if date_to else None,
            "exclude": exclude,
        }
        lexical = kb.manifest.lexical_search(question, n if mode == "hybrid" else k, **filters)
    if mode == "dense":
        return dense[:k]
    if mode == "lexical":
        passages = kb.store.get([cid for cid, _ in lexical])
        scores = dict(lexical)
        for p in passages:
            p.score = round(scores[p.chunk_id], 6)
        return passages

    weights = (settings.dense_weight, settings.lexical_weight)
    fused = rrf_fuse([[p.chunk_id for p in dense], [cid for cid, _ in lexical]], weights, k=RRF_K)[:k]
    by_id = {p.chunk_id: p for p in dense}
    missing = [cid for cid, _ in fused if cid not in by_id]
    by_id.update({p.chunk_id: p for p in kb.store.get(missing)})
    best = sum(weights) / (RRF_K + 1)
    out = []
    for cid, score in fused:
        if cid in by_id:  # a lexical row whose chunk vanished (concurrent delete) is skipped
            passage = by_id[cid]
            passage.score = round(score / best, 6)
            out.append(passage)
    return out


def passage_to_document(passage: Passage) -> Document:
    """A LangChain ``Document``: the chunk text, every other field as metadata."""
    meta = passage.to_dict()
    text = meta.pop("text")
    return Document(page_content=text, metadata=meta, id=passage.chunk_id)


class QARetriever(BaseRetriever):
    """Drop ``qa`` into any LangChain chain: ``kb.as_retriever(k=5, source="…")``."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    kb: Any
    """The ``KnowledgeBase`` to search."""
    k: int = 5
    filters: dict[str, Any] = {}
    """Keyword arguments of ``search``: ``source``, ``date_from``, ``date_to``, ``mode``."""

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
        return [passage_to_document(p) for p in self.kb.search(query, k=self.k, **self.filters)]
