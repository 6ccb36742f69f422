"""The reading answerer: the lexical answerer's candidates, re-scored by the trained reader and the combiner.

The default offline answerer when the reader is on (``QA_READER`` not ``off``). For a question and its passages:

1. the lexical :class:`~qa.answering.extractive.ExtractiveAnswerer` ranks every sentence (term coverage, answer-type
   check, passage rank) — its top :data:`CANDIDATES` are the candidates (the right sentence is among them for
   nearly every question whose passages hold it; reading fewer keeps a question fast);
2. the trained reader (:mod:`qa.answering.reading.reader`) gives each candidate a logit;
3. the combiner (:mod:`qa.answering.reading.combiner`, fitted on the training split) turns both into ``P(holds the answer)``;
   the best candidate is quoted, its probability is the confidence, and below the threshold chosen on the dev split
   the answerer abstains;
4. the span model (:mod:`qa.answering.reading.span`) cuts the short answer out of the quoted sentence; where the
   answer-type rules found an answer of the asked kind at the same place, their phrasing is the reply
   (« En novembre 1994. »).

``stage`` selects a part alone, for ``qa eval``: ``"lexical"`` (the lexical answerer), ``"reader"`` (the reader's
logit alone chooses and decides abstention) or ``"combined"`` (the default).
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from qa.answering.extractive import ExtractiveAnswerer, ScoredSentence
from qa.answering.questions import STRICT_KINDS, expected_kind, question_terms, question_type
from qa.answering.reading.combiner import Candidate, Combiner, anchor_conflicts, anchor_coverages, features, near_misses
from qa.answering.reading.finetuned import DEFAULT_ARTIFACT
from qa.answering.reading.reader import Reader, sigmoid
from qa.answering.reading.vectors import SentenceVectors
from qa.answering.spans import fits_kind
from qa.answering.text import REFUSAL
from qa.schema import Answer, Citation, Passage


@dataclass(frozen=True)
class Reading:
    """One candidate as the reading answerer saw it: the lexical answerer's sentence, the combiner's probability
    that it holds the answer, the span model's reading of it (None without one)."""

    sentence: ScoredSentence
    probability: float
    span: Any


CANDIDATES = 8
"""How many of the lexical answerer's best sentences the reader reads, unless the combiner was fitted for another
number (``candidates`` in ``combiner.json``, ``qa fit-combiner --candidates``)."""
STAGES = ("lexical", "reader", "combined")
NO_ANSWER = -20.0
"""The span margin of a sentence with nothing to read (empty, punctuation): far below any sentence's."""
SPAN_GAP = 3.0
"""The span model (a cross-encoder: ~25 ms of CPU per candidate) reads a candidate only if its reader logit is
within this of the question's best; the others get :data:`NO_ANSWER` as their margin. Measured on 600 PIAF
questions over the query benchmark's 200 real articles (``benchmarks/span_gap.py``): the same choice for every
question and the same abstention for 599 at 3.0 (2.0: 0.998 / 0.993), reading 3.2 of the 5 candidates, not 5."""
SPAN_MANIFEST = "span.json"
"""The span model's manifest in the reader artifact folder; without it the answer-type rules cut short answers."""

_MODELS: dict[tuple[str, str], Any] = {}
_MODELS_LOCK = threading.Lock()


def _shared(kind: str, cache_dir: Path, artifact: Path, make: Any) -> Any:
    """One reader / span model / combiner per process (they are read-only and thread-safe)."""
    key = (kind, f"{Path(cache_dir).expanduser()}|{artifact}")
    with _MODELS_LOCK:
        if key not in _MODELS:
            _MODELS[key] = make()
        return _MODELS[key]


class ReadingAnswerer:
    """Quotes the candidate sentence the combiner finds most likely to hold the answer (see the module doc)."""

    name = "extractive"

    def __init__(
        self,
        lexical: ExtractiveAnswerer,
        cache_dir: Path,
        *,
        stage: str = "combined",
        artifact: Path | None = None,
        progress: Any = None,
        reader: Any = None,
        combiner: Combiner | None = None,
        spans: Any = None,
        vectors: Path | None = None,
    ) -> None:
        """``reader``, ``combiner`` and ``spans`` replace the shipped models (tests, experiments; ``spans=False``: no
        span model); by default they load from ``artifact`` (:data:`DEFAULT_ARTIFACT`) on first use, once per process.
        ``vectors``: the index's file of stored sentence vectors (:mod:`qa.answering.reading.vectors`; None: every
        question computes its candidates' vectors)."""
        if stage not in STAGES:
            raise ValueError(f"unknown reading stage {stage!r}: one of {', '.join(STAGES)}")
        self.lexical = lexical
        self.stage = stage
        self.cache_dir = Path(cache_dir).expanduser()
        self.artifact = Path(artifact) if artifact else DEFAULT_ARTIFACT
        self.progress = progress
        self.name = "extractive" if stage == "combined" else f"extractive:{stage}"
        self._given = {"reader": reader, "combiner": combiner, "spans": spans}
        self.vectors_path = Path(vectors) if vectors else None
        self._vectors: SentenceVectors | None = None

    # -- the models, loaded on first use -------------------------------------------------------------------------
    @property
    def reader(self) -> Reader:
        if self._given["reader"] is not None:
            return self._given["reader"]
        return _shared(
            "reader",
            self.cache_dir,
            self.artifact,
            lambda: Reader(self.cache_dir, artifact=self.artifact, progress=self.progress),
        )

    @property
    def combiner(self) -> Combiner:
        if self._given["combiner"] is not None:
            return self._given["combiner"]
        return _shared("combiner", self.cache_dir, self.artifact, lambda: Combiner.load(self.artifact))

    @property
    def spans(self) -> Any:
        """The span model, or None when the artifact ships none (the answer-type rules cut the short answer)."""
        if self._given["spans"] is not None:
            return self._given["spans"] or None  # False: no span model

        def make() -> Any:
            if not (self.artifact / SPAN_MANIFEST).is_file():
                return None
            from qa.answering.reading.span import SpanReader

            return SpanReader(self.cache_dir, artifact=self.artifact, progress=self.progress)

        return _shared("spans", self.cache_dir, self.artifact, make)

    @property
    def vectors(self) -> SentenceVectors | None:
        """The index's stored sentence vectors for this reader (None without a file, or when the combiner reads no
        reader logits)."""
        if self.vectors_path is None or self._vectors is not None:
            return self._vectors
        if self.stage == "combined" and not self.combiner.uses("reader"):
            return None
        reader = self.reader.load()
        self._vectors = SentenceVectors(self.vectors_path, str(reader.manifest.get("weights_sha256", "")))
        return self._vectors

    def prepare(self, texts: list[str], progress: Any = None) -> int:
        """Compute and store the reader's vectors of the candidate sentences of ``texts`` (an ingest's chunks), so
        that the questions that read them do not (:meth:`Reader.prepare`); how many were computed."""
        store = None if self.stage == "lexical" else self.vectors  # the lexical stage never loads the reader
        if store is None:
            return 0
        return self.reader.prepare(texts, store, progress)

    @property
    def nlp(self) -> Any:
        """The lexical answerer's spaCy pipeline (``kb.warm`` loads it through this)."""
        return self.lexical.nlp

    def load(self) -> ReadingAnswerer:
        """Load (and build, once) every model this stage uses: the reader and the span model side by side (ONNX
        Runtime opens their sessions without the GIL)."""
        loads = []
        if self.stage == "reader" or (self.stage == "combined" and self.combiner.uses("reader")):
            loads.append(self.reader.load)
        if self.stage == "combined" and self.spans is not None:
            loads.append(self.spans.load)
        if len(loads) < 2:
            for load in loads:
                load()
            return self
        with ThreadPoolExecutor(len(loads), thread_name_prefix="qa-reading-load") as pool:
            for done in [pool.submit(load) for load in loads]:
                done.result()
        return self

    # -- answering -----------------------------------------------------------------------------------------------
    def answer(self, question: str, passages: list[Passage]) -> Answer:
        if self.stage == "lexical":
            return self.lexical.answer(question, passages)
        passages = list(passages)
        read = self.read(question, passages)
        if not read:
            return self._abstain(question, passages, 0.0)
        best, confidence = read[0].sentence, read[0].probability
        threshold = (
            self.combiner.threshold if self.stage == "combined" else float(self.combiner.spec.get("reader_threshold", 0.5))
        )
        if confidence < threshold:
            return self._abstain(question, passages, confidence)
        found = read[0].span
        if found is None and self.stage == "combined" and self.spans is not None:
            found = self.spans.read(question, [best.text])[0]
        text, short = self._short_answer(best, found, expected_kind(question))
        passage = passages[best.passage_index]
        citation = Citation(passage=passage, quote=passage.text[best.start : best.end], start=best.start, end=best.end)
        return Answer(
            text=text,
            citations=[citation],
            passages=passages,
            abstained=False,
            confidence=round(float(confidence), 4),
            short_answer=short,
            question=question,
        )

    def score(self, question: str, passages: list[Passage]) -> list[tuple[ScoredSentence, float]]:
        """The candidate sentences with their probability of holding the answer: the one to quote first (the
        combiner's choice), then the others, most probable first."""
        return [(c.sentence, c.probability) for c in self.read(question, passages)]

    def read(self, question: str, passages: list[Passage]) -> list[Reading]:
        """:meth:`score` with what each model read of each candidate (the span model's answer reused for the
        short answer)."""
        ranked = self.lexical.score_sentences(question, passages)[: int(self.combiner.spec.get("candidates", CANDIDATES))]
        if not ranked:
            return []
        logits, spans, x = self.candidates(question, ranked, passages)
        if self.stage == "reader":
            probs = sigmoid(logits)
            first = int(np.argmax(probs))
        else:
            probs = self.combiner.confidences(x)
            first = self.combiner.choose(x)
        order = [first] + [int(i) for i in np.argsort(-probs, kind="stable") if i != first]
        return [Reading(ranked[i], float(probs[i]), spans[i]) for i in order]

    def candidates(
        self, question: str, ranked: list[ScoredSentence], passages: list[Passage]
    ) -> tuple[Any, list[Any], np.ndarray]:
        """For the lexical answerer's candidates ``ranked``: the reader's logits, the span model's readings (None
        each where it did not read) and the combiner's features. A model whose features the combiner does not read
        does not run (its features are 0): without the reader's, the reader; without the span model's, the span
        model reads only the sentence quoted (``qa fit-combiner`` runs them all:
        :func:`qa.training.combiner.all_features`). The span model reads only the candidates whose reader logit is
        within :data:`SPAN_GAP` of the best; the others get the margin of a sentence it finds nothing in."""
        texts = [s.text for s in ranked]
        combined = self.stage == "combined"
        if combined and not self.combiner.uses("reader"):
            logits = np.zeros(len(texts))
        else:
            logits = np.asarray(self.reader.score(question, texts, store=self.vectors), dtype=np.float64)
        spans = self.spans if combined else None
        readings: list[Any] = [None] * len(texts)
        margins = None
        if spans is not None and spans.null and self.combiner.uses("span"):
            near = [i for i in range(len(texts)) if logits[i] >= np.max(logits) - SPAN_GAP]
            for i, reading in zip(near, spans.read(question, [texts[i] for i in near]), strict=True):
                readings[i] = reading
            margins = [r.margin if r is not None else NO_ANSWER for r in readings]
        answers = [texts[i][r.start : r.end] if r is not None else None for i, r in enumerate(readings)]
        return (
            logits,
            readings,
            self.features(question, ranked, logits, passages, margins, answers if margins is not None else None),
        )

    def features(
        self,
        question: str,
        ranked: list[ScoredSentence],
        logits: Any,
        passages: list[Passage],
        margins: Any = None,
        answers: Any = None,
    ) -> np.ndarray:
        """The combiner's features of ``ranked`` (the lexical answerer's candidates, best first); ``margins``: the
        null-trained span model's, else 0; ``answers``: its answer in each sentence (None where it did not read)."""
        lexical = self.lexical
        terms = question_terms(question, lexical.NAME_WEIGHT, lexical.ENGLISH_WEIGHT)
        names = {t for t, factor in terms.items() if factor == lexical.NAME_WEIGHT}
        anchors = names | {t for t in terms if any(ch.isdigit() for ch in t)}
        held = [set(s.matched) for s in ranked]
        anchored, absent = anchor_coverages(anchors, held)
        texts = [s.text for s in ranked]
        conflicts = anchor_conflicts(question, anchors, texts, held)
        misses = near_misses(question, anchors, set(terms) - anchors, texts, held)
        kind = expected_kind(question)
        fits = [  # the span model's answer, else the answer-type rules' in the same sentence (« 1999 », not « 27 août »)
            float(
                kind not in STRICT_KINDS
                or a is None
                or fits_kind(kind, a)
                or (s.answer is not None and fits_kind(kind, s.answer.core))
            )
            for s, a in zip(ranked, answers if answers is not None else [None] * len(ranked), strict=True)
        ]
        candidates = [
            Candidate(
                s.passage_index,
                s.score,
                s.coverage,
                s.context_coverage,
                s.typed,
                s.answer is not None,
                len(names & set(s.matched)) / len(names) if names else 1.0,
                float(margins[i]) if margins is not None else 0.0,
                anchored[i],
                absent,
                conflicts[i],
                fits[i],
                misses[i],
            )
            for i, s in enumerate(ranked)
        ]
        return features(question_type(question), candidates, logits, [p.score for p in passages])

    def score_sentences(self, question: str, passages: list[Passage]) -> list[ScoredSentence]:
        """The candidates best first (what ``qa eval`` reads to tell what an abstention cost)."""
        return (
            [s for s, _ in self.score(question, passages)]
            if self.stage != "lexical"
            else self.lexical.score_sentences(question, passages)
        )

    def _short_answer(self, best: ScoredSentence, found: Any, kind: str = "") -> tuple[str, str]:
        """``(reply, short answer)`` from the quoted sentence: the span model's answer ``found`` (on the dev split,
        measured with the span model before its null-answer epoch, it beats the answer-type rules where they found
        one: F1 0.49 vs 0.40 on « Qui », 0.54 vs 0.41 on « Où », 0.60 vs 0.55 on « Combien », all questions 0.409 vs
        0.398; the rules win on « Quand », 0.71 vs 0.61), phrased as the rules phrase it when they found the same
        answer (« En novembre 1994. »); the rules' answer when the span model's is not of the ``kind`` the question
        wants and theirs is (:data:`~qa.answering.questions.STRICT_KINDS`: « 1999 » rather than « 27 août » for a
        year); without a span model, the rules' answer, else the sentence itself."""
        rule = best.answer
        if found is None:
            return (rule.reply, rule.core) if rule is not None else (best.text, "")
        start, end = found.start, found.end
        core = best.text[start:end]
        if rule is not None and kind in STRICT_KINDS and not fits_kind(kind, core) and fits_kind(kind, rule.core):
            return rule.reply, rule.core
        if rule is not None and rule.start < end and start < rule.end:
            return rule.reply, core
        return reply_of(core), core

    @staticmethod
    def _abstain(question: str, passages: list[Passage], confidence: float) -> Answer:
        return Answer(
            text=REFUSAL,
            citations=[],
            passages=passages,
            abstained=True,
            confidence=round(max(0.0, min(1.0, float(confidence))), 4),
            question=question,
        )


def reply_of(core: str) -> str:
    """A short answer as a reply: capital first letter, a final full stop."""
    core = core.strip()
    if not core:
        return core
    reply = core[0].upper() + core[1:]
    return reply if reply[-1] in ".!?…" else reply + "."
