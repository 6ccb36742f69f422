"""Retrieval: dense (e5 in the vector store) + lexical (BM25), fused (normalised
scores, or reciprocal ranks), then optionally re-ranked by what the question asks for.

Stages (each is a ``mode``, so each one's contribution can be measured):
``dense`` and ``lexical`` alone; ``hybrid`` (the default) = their fusion, by
default the weighted sum of each ranking's min-max normalised scores
(``fusion = "score"``), or reciprocal rank fusion (``fusion = "rrf"``);
``rerank`` = the hybrid top ``rerank_depth`` re-ranked by a sentence scorer handed in
by the caller (the extractive answerer's best sentence in each passage: IDF-weighted
coverage of the question, and whether it holds an answer of the asked type).
On PIAF the re-ranking moved recall@1 by +0.2 point, recall@5 by 0 and
recall@10 by −0.9 point for twice the latency, so it is opt-in.

``Passage.score`` is the cosine similarity in ``dense`` mode, the BM25 score in
``lexical`` mode, the fusion score in ``hybrid`` mode, in [0, 1] (1.0 = first in
every ranking; with ``rrf`` the rank-fusion score divided by its maximum), and in
``rerank`` mode the blend of that and the re-ranking score, in [0, 1].

Consistency: a search reads the dense index, the lexical index and the chunks at
slightly different moments, while a writer (another process, or another thread) may commit
in between. :meth:`Retriever.search` shows a result only if every chunk in it is committed at
one instant and none it asked for had vanished; else it searches again on the newer state, and
after a few tries searches once more with the committed state pinned (no writer may move it
meanwhile: :meth:`qa.index.view.CommittedView.pinned`). A result therefore holds one
version of each article, never half of one, however busy the machine.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace

import numpy as np

from qa.config import RETRIEVAL_MODES, Settings
from qa.embeddings import Embedder
from qa.errors import QueryError
from qa.index.parts import LexicalStore, VectorStore
from qa.index.view import CommittedView
from qa.retrieval.filters import NO_FILTERS, Filters, check_k, check_question
from qa.retrieval.fusion import rrf_fuse, score_fuse
from qa.schema import Passage

RRF_K = 60
OPTIMISTIC_TRIES = 3
"""Searches tried on a moving index before one is run with the committed state pinned."""

SentenceScorer = Callable[[str, list[Passage]], Iterable[tuple[int, float]]]
"""``(question, passages)`` → ``(passage index, sentence score)`` for sentences, best first (rerank mode)."""

_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def _dense_pool() -> ThreadPoolExecutor:
    """Threads that run the dense half of a search beside the lexical half (created once per process)."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(max_workers=4, thread_name_prefix="qa-dense")
        return _POOL


@dataclass
class Attempt:
    """One search over the index as it was: the hits, how many chunks it asked for had vanished, and whether every
    hit was seen committed at one instant already (the caller need not ask the manifest again)."""

    hits: list[Passage]
    misses: int = 0
    checked: bool = False


SPARE = 16
"""Nearest neighbours asked for beyond those needed, for the uncommitted chunks a writer may have in the store."""


class Retriever:
    """Searches the committed index: built from the parts it reads, nothing else.

    ``embedder`` embeds the question, ``store`` holds the vectors and chunks, ``lexical`` is the
    BM25 index, ``view`` the committed state; ``settings`` gives the mode, fusion and weights;
    ``scorer`` (optional) re-ranks passages in ``rerank`` mode.
    """

    def __init__(
        self,
        *,
        embedder: Embedder,
        store: VectorStore,
        lexical: LexicalStore,
        view: CommittedView,
        settings: Settings,
        scorer: SentenceScorer | None = None,
    ) -> None:
        self.embedder = embedder
        self.store = store
        self.lexical = lexical
        self.view = view
        self.settings = settings
        self.scorer = scorer

    def search(self, question: str, k: int = 5, filters: Filters = NO_FILTERS, mode: str | None = None) -> list[Passage]:
        """The ``k`` best committed passages for ``question``, best first (one version of each article)."""
        question, k = check_question(question), check_k(k)
        mode = mode or self.settings.retrieval
        if mode not in RETRIEVAL_MODES:
            raise QueryError(f"retrieval mode {mode!r} is unknown: use one of {', '.join(RETRIEVAL_MODES)}")
        self.view.sync()
        if self.view.is_empty():  # (Chroma's count() reads every row: 13 ms at 100k chunks)
            return []
        for _ in range(OPTIMISTIC_TRIES):
            attempt = self.attempt(question, k, filters, mode)
            if not attempt.misses and (attempt.checked or self._all_committed(attempt.hits)):
                return attempt.hits
            self.view.sync()
        with self.view.pinned():  # no writer moves the committed state until the result is read
            attempt = self.attempt(question, k, filters, mode)
            if attempt.checked:
                return attempt.hits
            visible = self.view.committed([h.chunk_id for h in attempt.hits])
            return [h for h in attempt.hits if h.chunk_id in visible]

    def _all_committed(self, hits: list[Passage]) -> bool:
        return len(self.view.committed([h.chunk_id for h in hits])) == len(hits)

    def _dense(self, question: str, n: int, filters: Filters) -> list[Passage]:
        vector: np.ndarray = self.embedder.embed_query(question)
        return self.store.query(vector, n, filters)

    def _nearest(self, question: str, n: int, filters: Filters) -> tuple[np.ndarray, list[tuple[str, float]]]:
        vector: np.ndarray = self.embedder.embed_query(question)
        return vector, self.store.nearest(vector, n + SPARE, filters)

    def attempt(self, question: str, k: int, filters: Filters, mode: str) -> Attempt:
        """One search, as the index is now: dense and lexical halves, then fusion (and re-ranking)."""
        if mode in ("hybrid", "rerank"):
            return self._hybrid(question, k, filters, mode)
        if mode == "dense":
            return Attempt(self._dense(question, k, filters))
        lexical = self.lexical.search(question, k, filters)
        fetched = self.store.get([cid for cid, _ in lexical])
        scores = dict(lexical)
        return Attempt([replace(p, score=round(scores[p.chunk_id], 6)) for p in fetched.passages], fetched.misses)

    def _hybrid(self, question: str, k: int, filters: Filters, mode: str) -> Attempt:
        """Nearest ids (no text) and BM25 ids, both checked against the manifest in one read (one instant), fused;
        then the text of the few shown is fetched. Every hit was committed at that instant: ``checked``."""
        settings = self.settings
        n = max(k, settings.candidates)
        pending: Future[tuple[np.ndarray, list[tuple[str, float]]]] | None = None
        if settings.dense_weight > 0:
            # the question is embedded (GIL released) while BM25 runs here (SQLite, GIL released)
            pending = _dense_pool().submit(self._nearest, question, n, filters)
        lexical = self.lexical.search(question, n, filters) if settings.lexical_weight > 0 else []
        vector, nearest = pending.result() if pending is not None else (None, [])
        committed = self.view.committed([cid for cid, _ in nearest] + [cid for cid, _ in lexical])
        dense = [hit for hit in nearest if hit[0] in committed]
        asked = n + SPARE
        while vector is not None and len(dense) < n and len(nearest) == asked and asked < 8 * (n + SPARE):
            asked *= 2  # a writer holds many uncommitted chunks near the question: look further
            nearest = self.store.nearest(vector, asked, filters)
            committed = self.view.committed([cid for cid, _ in nearest] + [cid for cid, _ in lexical])
            dense = [hit for hit in nearest if hit[0] in committed]
        vanished = sum(1 for cid, _ in lexical if cid not in committed)  # replaced since BM25 read them: search again
        return self._fuse(question, k, mode, dense[:n], [hit for hit in lexical if hit[0] in committed], vanished)

    def _fuse(
        self, question: str, k: int, mode: str, dense: list[tuple[str, float]], lexical: list[tuple[str, float]], vanished: int
    ) -> Attempt:
        settings = self.settings
        weights = (settings.dense_weight, settings.lexical_weight)
        rerank = mode == "rerank" and settings.rerank_weight > 0 and self.scorer is not None
        depth = max(k, settings.rerank_depth) if rerank else k
        if settings.fusion == "rrf":
            fused = rrf_fuse([[cid for cid, _ in dense], [cid for cid, _ in lexical]], weights, k=RRF_K)[:depth]
            best = sum(weights) / (RRF_K + 1)
        else:
            fused = score_fuse([dense, lexical], weights)[:depth]
            best = 1.0
        fetched = self.store.get([cid for cid, _ in fused], checked=True)
        by_id = {p.chunk_id: p for p in fetched.passages}
        # a chunk that vanished from the store since (a concurrent write) is skipped here, and counted as a miss
        out = [replace(by_id[cid], score=round(score / best, 6)) for cid, score in fused if cid in by_id]
        if rerank and self.scorer is not None:
            out = rerank_passages(question, out, settings.rerank_weight, self.scorer)
        return Attempt(out[:k], fetched.misses + vanished, checked=True)


def rerank_passages(question: str, passages: list[Passage], weight: float, scorer: SentenceScorer) -> list[Passage]:
    """Re-order passages by ``(1 - weight) * score + weight * answer score``.

    The answer score of a passage is its best sentence's score by ``scorer`` (for the
    extractive answerer: coverage of the question's rare terms, answer of the asked type),
    relative to the best passage's.
    """
    if len(passages) < 2:
        return passages
    best: dict[int, float] = {}
    for index, score in scorer(question, passages):
        best.setdefault(index, score)
    top = max(best.values(), default=0.0) or 1.0
    top_score = max(p.score for p in passages) or 1.0
    blended = [((1 - weight) * p.score / top_score + weight * best.get(i, 0.0) / top, -i) for i, p in enumerate(passages)]
    order = sorted(range(len(passages)), key=lambda i: blended[i], reverse=True)
    return [replace(passages[i], score=round(blended[i][0], 6)) for i in order]
