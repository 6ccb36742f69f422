"""One model shared by threads: first come, first served, concurrent questions encoded together."""

from __future__ import annotations

import threading
from collections import deque
from typing import Any

import numpy as np


class FairLock:
    """A lock handed over first come, first served (``threading.Lock`` lets a writer that
    releases and re-acquires it in a loop starve the readers waiting for it)."""

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._waiting: deque[threading.Event] = deque()
        self._held = False

    def __enter__(self) -> None:
        with self._mutex:
            if not self._held:
                self._held = True
                return
            turn = threading.Event()
            self._waiting.append(turn)
        turn.wait()  # the lock is handed over held

    def __exit__(self, *exc: object) -> None:
        with self._mutex:
            if self._waiting:
                self._waiting.popleft().set()
            else:
                self._held = False


class _Query:
    __slots__ = ("text", "vector", "error")

    def __init__(self, text: str) -> None:
        self.text = text
        self.vector: np.ndarray | None = None
        self.error: Exception | None = None


class SerialEmbedder:
    """Wraps an embedder so that its model is used by one thread at a time, and batches queries.

    A fast tokenizer shared between threads fails ("Already borrowed") when an ingest
    changes its truncation while a query encodes. Documents are embedded in slices, each
    under the lock, so a query waits for one slice, not for a whole ingest. Queries that
    arrive while the model is busy are encoded together when their turn comes: a batch of 8
    short questions costs about twice one, so concurrent searches share the model's time.
    """

    def __init__(self, inner: Any, slice_size: int = 8) -> None:
        self._inner = inner
        self._slice = slice_size
        self._lock = FairLock()
        self._pending: list[_Query] = []
        self._pending_lock = threading.Lock()

    @property
    def model_id(self) -> str:
        return self._inner.model_id

    @property
    def dimension(self) -> int:
        with self._lock:
            return self._inner.dimension

    def embed_query(self, text: str) -> np.ndarray:
        query = _Query(text)
        with self._pending_lock:
            self._pending.append(query)
        with self._lock:
            if query.vector is None and query.error is None:  # not done by an earlier batch: lead one
                with self._pending_lock:
                    batch, self._pending = self._pending, []
                try:
                    for q, vector in zip(batch, self._encode_queries([q.text for q in batch]), strict=True):
                        q.vector = vector
                except Exception as exc:
                    for q in batch:
                        q.error = exc
        if query.error is not None:
            raise query.error
        assert query.vector is not None  # set by whichever batch encoded it
        return query.vector

    def _encode_queries(self, texts: list[str]) -> list[np.ndarray]:
        if len(texts) == 1:
            return [self._inner.embed_query(texts[0])]  # keeps the embedder's query cache
        if hasattr(self._inner, "embed_queries"):  # the ONNX embedder: one batched call
            return list(self._inner.embed_queries(texts))
        model = getattr(self._inner, "model", None)  # a sentence-transformers model: one batched call
        if model is None or not hasattr(model, "encode"):
            return [self._inner.embed_query(t) for t in texts]
        prompt = "query" if "query" in (getattr(model, "prompts", None) or {}) else None
        vectors = model.encode(
            texts, prompt_name=prompt, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
        )
        return [np.asarray(v, dtype=np.float32) for v in vectors]

    def embed_documents(self, texts: Any) -> np.ndarray:
        texts = list(texts)
        if not texts:
            return self._inner.embed_documents([])
        # slices of similar lengths, longest first, as the model would sort one big call: slicing in
        # arrival order padded every slice to its longest chunk (ingest 15 % slower)
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        out: np.ndarray | None = None
        for i in range(0, len(order), self._slice):
            idx = order[i : i + self._slice]
            with self._lock:
                vectors = self._inner.embed_documents([texts[j] for j in idx])
            if out is None:
                out = np.zeros((len(texts), vectors.shape[1]), dtype=np.float32)
            out[idx] = vectors
        assert out is not None  # texts is not empty
        return out

    def count_tokens(self, texts: Any) -> list[int]:
        with self._lock:
            return self._inner.count_tokens(texts)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)
