"""Retrieval: dense (e5 in Chroma) + lexical (BM25 over FTS5), fused (normalised
scores, or reciprocal ranks), then re-ranked by what the question asks for; and a
LangChain ``BaseRetriever`` over it.

Stages (each is a ``mode``, so each one's contribution can be measured):
``dense`` and ``lexical`` alone; ``hybrid`` (the default) = their fusion, by
default the weighted sum of each ranking's min-max normalised scores
(``fusion = "score"``), or reciprocal rank fusion (``fusion = "rrf"``);
``rerank`` = the hybrid top ``rerank_depth`` re-ranked by the
extractive answerer's best sentence in each passage (IDF-weighted coverage of
the question, and whether it holds an answer of the asked type: a date for
« Quand », a quantity for « Combien », a person for « Qui », a place for « Où »).
On PIAF the re-ranking moved recall@1 by +0.2 point, recall@5 by 0 and
recall@10 by −0.9 point for twice the latency, so it is opt-in.

``Passage.score`` is the cosine similarity in ``dense`` mode, the BM25 score in
``lexical`` mode, the fusion score in ``hybrid`` mode, in [0, 1] (1.0 = first in
every ranking; with ``rrf`` the rank-fusion score divided by its maximum), and in
``rerank`` mode the blend of that and the re-ranking score, in [0, 1].
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from typing import Any

from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict

from qa.config import RETRIEVAL_MODES
from qa.errors import QueryError
from qa.index.store import build_where, date_number
from qa.retrieval.fusion import rrf_fuse, score_fuse
from qa.schema import Passage

RRF_K = 60
_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def _dense_pool() -> ThreadPoolExecutor:
    """Threads that run the dense half of a search beside the lexical half (created once per process)."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(max_workers=4, thread_name_prefix="qa-dense")
        return _POOL


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
    fusing = mode in ("hybrid", "rerank")
    pending: Future[list[Passage]] | None = None
    if mode == "dense" or (fusing and settings.dense_weight > 0):
        # the question is embedded (torch, GIL released) while BM25 runs here (SQLite, GIL released)
        pending = _dense_pool().submit(lambda: kb.store.query(kb.embedder.embed_query(question), n if fusing else k, where))
    if mode == "lexical" or (fusing and settings.lexical_weight > 0):
        filters = {
            "source": source,
            "date_from": date_number(date_from, "date_from") if date_from else None,
            "date_to": date_number(date_to, "date_to") if date_to else None,
            "exclude": exclude,
        }
        lexical = kb.manifest.lexical_search(question, n if fusing else k, **filters)
    if pending is not None:
        dense = pending.result()
    if mode == "dense":
        return dense[:k]
    if mode == "lexical":
        passages = kb.store.get([cid for cid, _ in lexical])
        scores = dict(lexical)
        for p in passages:
            p.score = round(scores[p.chunk_id], 6)
        return passages

    weights = (settings.dense_weight, settings.lexical_weight)
    rerank = mode == "rerank" and settings.rerank_weight > 0
    depth = max(k, settings.rerank_depth) if rerank else k
    if settings.fusion == "rrf":
        fused = rrf_fuse([[p.chunk_id for p in dense], [cid for cid, _ in lexical]], weights, k=RRF_K)[:depth]
        best = sum(weights) / (RRF_K + 1)
    else:
        fused = score_fuse([[(p.chunk_id, p.score) for p in dense], lexical], weights)[:depth]
        best = 1.0
    by_id = {p.chunk_id: p for p in dense}
    missing = [cid for cid, _ in fused if cid not in by_id]
    by_id.update({p.chunk_id: p for p in kb.store.get(missing)})
    out = []
    for cid, score in fused:
        if cid in by_id:  # a lexical row whose chunk vanished (concurrent delete) is skipped
            passage = by_id[cid]
            passage.score = round(score / best, 6)
            out.append(passage)
    if rerank:
        out = rerank_passages(question, out, settings.rerank_weight)
    return out[:k]


def rerank_passages(question: str, passages: list[Passage], weight: float) -> list[Passage]:
    """Re-order passages by ``(1 - weight) * score + weight * answer score``.

    The answer score of a passage is its best sentence's score by the extractive
    answerer (coverage of the question's rare terms, answer of the asked type),
    relative to the best passage's.
    """
    from qa.answering.chain import extractive_answerer

    if len(passages) < 2:
        return passages
    best: dict[int, float] = {}
    for sentence in extractive_answerer().score_sentences(question, passages):
        best.setdefault(sentence.passage_index, sentence.score)
    top = max(best.values(), default=0.0) or 1.0
    top_score = max(p.score for p in passages) or 1.0
    blended = [((1 - weight) * p.score / top_score + weight * best.get(i, 0.0) / top, -i) for i, p in enumerate(passages)]
    order = sorted(range(len(passages)), key=lambda i: blended[i], reverse=True)
    return [replace(passages[i], score=round(blended[i][0], 6)) for i in order]


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
