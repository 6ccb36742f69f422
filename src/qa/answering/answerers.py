"""Which answerer answers: the process-wide extractive one, LLM answerers by spec, one cache per knowledge base.

Nothing here imports LangChain: the chain (:mod:`qa.answering.chain`) loads with the first question.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from qa.answering.base import Answerer, ConversationalAnswerer
from qa.answering.extractive import ExtractiveAnswerer
from qa.schema import Passage

_EXTRACTIVE: ExtractiveAnswerer | None = None
_EXTRACTIVE_LOCK = threading.Lock()


def extractive_answerer() -> ExtractiveAnswerer:
    """The process-wide extractive answerer (its spaCy pipeline loads once)."""
    global _EXTRACTIVE
    with _EXTRACTIVE_LOCK:  # a knowledge base's preload thread may ask for it beside the first question
        if _EXTRACTIVE is None:
            _EXTRACTIVE = ExtractiveAnswerer()
        return _EXTRACTIVE


def sentence_scores(question: str, passages: list[Passage]) -> list[tuple[int, float]]:
    """The extractive answerer's sentence scores ``(passage index, score)``, best first (rerank mode)."""
    return [(s.passage_index, s.score) for s in extractive_answerer().score_sentences(question, passages)]


class Answerers:
    """The answerers of one knowledge base, each built once per spec (``extractive``, ``openai:…``)."""

    def __init__(
        self,
        default: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        model_cache: Path | None = None,
        progress: Any = None,
        reader: bool | None = None,
        reader_artifact: Path | None = None,
        reader_vectors: Path | None = None,
    ) -> None:
        self.default, self.base_url, self.api_key, self.model_cache = default, base_url, api_key, model_cache
        self.progress = progress
        self.reader, self.reader_artifact, self.reader_vectors = reader, reader_artifact, reader_vectors
        self._built: dict[str, Answerer | ConversationalAnswerer] = {}
        self._lock = threading.Lock()

    def get(self, spec: str | None = None) -> Answerer | ConversationalAnswerer:
        spec = spec or self.default
        with self._lock:
            if spec not in self._built:
                self._built[spec] = make_answerer(
                    spec,
                    base_url=self.base_url,
                    api_key=self.api_key,
                    model_cache=self.model_cache,
                    progress=self.progress,
                    reader=self.reader,
                    reader_artifact=self.reader_artifact,
                    reader_vectors=self.reader_vectors,
                )
            return self._built[spec]


def make_answerer(
    spec: str,
    *,
    base_url: str | None = None,
    api_key: str | None = None,
    model_cache: Path | None = None,
    progress: Any = None,
    reader: bool | None = None,
    reader_artifact: Path | None = None,
    reader_vectors: Path | None = None,
) -> Answerer | ConversationalAnswerer:
    """``extractive`` (default, offline) or an LLM answerer for ``openai:…``, ``ollama:…``, ``llamacpp:…``.

    ``extractive`` is the lexical :class:`~qa.answering.extractive.ExtractiveAnswerer`, or with ``reader`` (the
    ``reader`` setting; None: ``QA_READER``) the
    reading answerer (:class:`qa.answering.reading.ReadingAnswerer`: the trained reader and the combiner over the
    lexical answerer's candidates); ``extractive:lexical``, ``extractive:reader`` and
    ``extractive:combined`` name one stage (``qa eval`` compares them). LLM answerers fall back on the extractive
    answer's citations when the model cites nothing. ``progress`` is told what a model's first load builds (the
    reader's and the span model's ONNX files). ``reader_artifact``: the reading answerer's models (None: shipped);
    ``reader_vectors``: its file of stored sentence vectors (None: none).
    """
    from qa.answering.llm import make_llm_answerer, parse_answerer
    from qa.answering.reading import enabled

    provider, stage = parse_answerer(spec)
    extractive = extractive_answerer()
    if provider == "extractive":
        if stage == "lexical" or (not stage and not (enabled() if reader is None else reader)):
            return extractive
        from qa.answering.reading import ReadingAnswerer

        cache = model_cache or Path("~/.cache/qa/models")
        return ReadingAnswerer(
            extractive, cache, stage=stage or "combined", progress=progress, artifact=reader_artifact, vectors=reader_vectors
        )
    return make_llm_answerer(spec, base_url=base_url, api_key=api_key, fallback=extractive.answer)
