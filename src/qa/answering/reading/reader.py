"""The trained reader: scores (question, sentence) pairs (which sentence answers), run by ONNX Runtime.

The model is multilingual-e5-small with its top layers fine-tuned (see ``qa train-reader`` and
``qa/answering/reading/models/README.md``). Two kinds, named by the manifest: ``bi`` (the shipped one) embeds
« query: question » and « passage: sentence » apart, like e5, and scores ``w * cosine + b``; ``cross`` reads the pair
together and a linear head on the mean-pooled output gives the logit. The repository ships only what differs from
e5-small (``qa/answering/reading/models/reader.safetensors``, fp16) and a ``manifest.json`` that records its sha256,
the training data, parameters and dev-split scores. On first use the weights are put on top of the rebuilt e5 folder
and the layers they change (6-11, with the pooling) exported once to ONNX in the model cache (this build needs torch,
like the embedder's ONNX build: :mod:`qa.answering.reading.finetuned`); e5's own layers below run in the embedder's
sessions (:func:`~qa.answering.reading.finetuned.below`); scoring needs only ``onnxruntime``, ``tokenizers``,
``safetensors`` and numpy (no torch import).

At most :data:`MAX_TOKENS` tokens per sequence; one logit per sentence (higher = more likely to hold the answer;
``sigmoid(logit)`` is trained as a probability, the no-answer signal).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from qa.answering.reading.finetuned import PASSAGE_PREFIX, QUERY_PREFIX, FineTuned, FineTunedModel
from qa.answering.reading.vectors import SentenceVectors, rounded
from qa.chunking import split_sentences

logger = logging.getLogger(__name__)

MAX_TOKENS = 96
ARTIFACT_FORMAT = 1
WEIGHTS_FILE = "reader.safetensors"
MANIFEST_FILE = "manifest.json"
BUILD_FORMAT = 3  # bump whenever the export changes (2: weights as external data, memory-mapped; 3: own layers only)
MARKER = "qa_reader.json"
PREPARE_BATCH = 32
"""Sentences per batch when an ingest computes their vectors (:meth:`Reader.prepare`; sorted by length first)."""
SENTENCE_CACHE = 8192
"""Sentence vectors kept (bi-encoder; 1.5 KB each)."""


def candidate_sentences(text: str) -> list[tuple[int, int]]:
    """The sentences the reader chooses among: the project's own sentence splitter, with a trailing run of
    hashtags, mentions and links cut off, exactly as :class:`~qa.answering.extractive.ExtractiveAnswerer` does."""
    from qa.answering.text import trim_social_tail

    return [(s, trim_social_tail(text, s, e)) for s, e in split_sentences(text)]


def load_tokenizer(model_folder: Path) -> Any:
    """The e5 tokenizer (the process's shared one, :func:`qa.embeddings.base.shared_tokenizer`) truncating to
    :data:`MAX_TOKENS`, padded to the longest."""
    from qa.embeddings.base import shared_tokenizer

    return shared_tokenizer(model_folder, MAX_TOKENS)


def encode_pairs(tokenizer: Any, question: str, sentences: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """``input_ids`` and ``attention_mask`` (int64, padded to the longest pair) for one question and its sentences."""
    encoded = tokenizer.encode_batch([(QUERY_PREFIX + question, s) for s in sentences])
    ids = np.array([e.ids for e in encoded], dtype=np.int64)
    mask = np.array([e.attention_mask for e in encoded], dtype=np.int64)
    return ids, mask


# -- the ONNX build (torch, once; :class:`~qa.answering.reading.finetuned.FineTuned`) --------------------------------
def _head(bert: Any, manifest: dict[str, Any]) -> tuple[Any, Any, list[str]]:
    """``bi``: a ``Linear(1, 1)`` (``w * cosine + b`` runs in numpy), the graph gives the normalised embedding;
    ``cross``: a ``Linear(384, 1)`` on the mean-pooled output, the graph gives one logit per pair."""
    import torch

    from qa.embeddings.onnx_build import mean_pooled

    bi = manifest.get("kind") == "bi"
    head = torch.nn.Linear(1 if bi else bert.config.hidden_size, 1)
    pool = mean_pooled(bi)

    def logits(hidden: Any, mask: Any) -> Any:  # cross-encoder: one logit per pair
        return head(pool(hidden, mask)).squeeze(-1)

    return (head, pool, ["sentence_embedding"]) if bi else (head, logits, ["logits"])


def _tensors(artifact: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    from safetensors.torch import load_file

    return load_file(str(READER.weights(artifact, manifest)))


READER = FineTuned(
    kind="reader",
    manifest_file=MANIFEST_FILE,
    weights_file=WEIGHTS_FILE,
    artifact_format=ARTIFACT_FORMAT,
    build_format=BUILD_FORMAT,
    marker=MARKER,
    command="qa train-reader",
    missing="reader artifact",
    head=_head,
    tensors=_tensors,
)
"""The reader's artifact (``manifest.json``, ``reader.safetensors``) and its ONNX build (``reader-<sha12>.onnx``)."""


# -- scoring (ONNX Runtime) ------------------------------------------------------------------------------------------
class Reader(FineTunedModel):
    """Scores (question, sentence) pairs; loaded (and built, once) on first use. Thread-safe."""

    spec = READER

    def __init__(
        self, cache_dir: Path, *, artifact: Path | None = None, model: str = "multilingual-e5-small", progress: Any = None
    ) -> None:
        super().__init__(cache_dir, artifact=artifact, model=model, progress=progress)
        self._vectors: OrderedDict[str, np.ndarray] = OrderedDict()

    def _opened(self, folder: Path) -> None:
        self._tokenizer = load_tokenizer(folder)
        self._bi = self.manifest.get("kind") == "bi"
        if self._bi:  # logit = w * cosine + b
            from safetensors.numpy import load_file

            tensors = load_file(str(READER.weights(self.artifact, self.manifest)))
            self._w = float(tensors["head.weight"].reshape(-1)[0])
            self._b = float(tensors["head.bias"].reshape(-1)[0])

    def score(
        self, question: str, sentences: Sequence[str], batch_size: int = 8, store: SentenceVectors | None = None
    ) -> np.ndarray:
        """One logit per sentence (float32), in the given order (longest first in small batches: less padding).
        ``store``: the index's stored sentence vectors (bi-encoder), read first, and given the ones computed here."""
        self.load()
        if self._bi:
            return self._score_bi(question, sentences, batch_size, store)
        out = np.zeros(len(sentences), dtype=np.float32)
        order = np.argsort([-len(s) for s in sentences], kind="stable")
        for i in range(0, len(sentences), batch_size):
            idx = order[i : i + batch_size]
            ids, mask = encode_pairs(self._tokenizer, question, [sentences[j] for j in idx])
            out[idx] = self._run(ids, mask).reshape(-1)
        return out

    def _embed(self, texts: list[str]) -> np.ndarray:
        """The vectors of ``texts`` (prefixed), run in buckets of similar length, rounded as the store keeps them."""
        encoded = self._tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in encoded], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encoded], dtype=np.int64)
        return rounded(self._outputs_bucketed(ids, mask, per_token=False)[0])

    def _run(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return self._outputs(ids, mask)[0]

    def _score_bi(self, question: str, sentences: Sequence[str], batch_size: int, store: SentenceVectors | None) -> np.ndarray:
        """``w * cosine + b``; a sentence's vector does not depend on the question: the last :data:`SENTENCE_CACHE`
        are kept (the passages of a follow-up, of a popular article, read again), and ``store`` keeps every one
        computed at ingest (:meth:`prepare`) or here."""
        query = self._embed([QUERY_PREFIX + question])[0]
        vectors: list[np.ndarray | None] = []
        with self._lock:
            for text in sentences:
                vector = self._vectors.get(text)
                if vector is not None:
                    self._vectors.move_to_end(text)
                vectors.append(vector)
        unseen = list(dict.fromkeys(s for s, v in zip(sentences, vectors, strict=True) if v is None))
        fresh: dict[str, np.ndarray] = {}
        if unseen and store is not None:
            fresh.update((s, v) for s, v in zip(unseen, store.get(unseen), strict=True) if v is not None)
        missing = sorted((s for s in unseen if s not in fresh), key=lambda s: -len(s))
        computed = self.sentence_vectors(missing, batch_size)
        fresh.update(computed)
        if computed and store is not None:
            store.put(computed)
        if fresh:
            with self._lock:
                self._vectors.update(fresh)
                while len(self._vectors) > SENTENCE_CACHE:
                    self._vectors.popitem(last=False)
        matrix = (
            np.stack([v if v is not None else fresh[s] for s, v in zip(sentences, vectors, strict=True)])
            if sentences
            else np.zeros((0, len(query)))
        )
        return (self._w * (matrix @ query) + self._b).astype(np.float32)

    def sentence_vectors(self, sentences: Sequence[str], batch_size: int = 8) -> dict[str, np.ndarray]:
        """The vectors of ``sentences`` (computed; longest first, ``batch_size`` at a time)."""
        order = sorted(dict.fromkeys(sentences), key=lambda s: -len(s))
        out: dict[str, np.ndarray] = {}
        for i in range(0, len(order), batch_size):
            batch = order[i : i + batch_size]
            out.update(zip(batch, self._embed([PASSAGE_PREFIX + s for s in batch]), strict=True))
        return out

    def prepare(self, texts: Sequence[str], store: SentenceVectors, progress: Callable[[int, int], None] | None = None) -> int:
        """Compute and store the vectors of every candidate sentence of ``texts`` (passages: an ingest's chunks)
        that ``store`` lacks, so that a question reads only its own; how many were computed. ``progress(done,
        total)`` after each batch. A cross-encoder reader has no sentence vectors: nothing to do."""
        self.load()
        if not self._bi:
            return 0
        sentences = [text[s:e] for text in texts for s, e in candidate_sentences(text)]
        todo = sorted((s for s in store.missing(sentences) if s.strip()), key=lambda s: -len(s))
        step = PREPARE_BATCH * 8
        for i in range(0, len(todo), step):
            store.put(self.sentence_vectors(todo[i : i + step], PREPARE_BATCH))
            if progress is not None:
                progress(min(i + step, len(todo)), len(todo))
        return len(todo)

    def clear_cache(self) -> None:
        """Forget the cached sentence vectors (benchmarks time every sentence's encoding)."""
        with self._lock:
            self._vectors.clear()

    def rank(self, question: str, texts: Sequence[str]) -> list[tuple[int, int, int, float]]:
        """Every candidate sentence of ``texts`` (passages) as ``(text_index, start, end, logit)``, best first."""
        spans = [(ti, s, e) for ti, text in enumerate(texts) for s, e in candidate_sentences(text)]
        scores = self.score(question, [texts[ti][s:e] for ti, s, e in spans])
        ranked = [(ti, s, e, float(x)) for (ti, s, e), x in zip(spans, scores, strict=True)]
        return sorted(ranked, key=lambda r: -r[3])


def sigmoid(x: np.ndarray | float) -> Any:
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=np.float64)))
