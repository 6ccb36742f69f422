"""The extractive answerer: the offline default, no LLM.

Every sentence of every retrieved passage is a candidate. A sentence scores by the
question terms it shares (``analyze`` terms weighted by their IDF over the candidate
sentences, names of the question weighted up: « Almaty » tells more than « ouvert »),
a little by its neighbours and by its passage's retrieval rank, and gets a bonus when
it holds what the question asks for (a date for « Quand », a person for « Qui », a
place for « Où », a quantity for « Combien »). The short answer is cut from the best
sentence: regular expressions for dates and quantities, spaCy's French NER (run on
the few top sentences only) for people and places. The quote is always a verbatim
slice of the passage.

The confidence is the IDF-weighted share of the question's terms that the best
sentence (and its neighbours) cover, lowered when the expected kind of answer is not
there; below ``min_confidence`` the answerer abstains.

The question typing lives in :mod:`qa.answering.questions`, the short-answer spans (dates, quantities, spaCy
entities) in :mod:`qa.answering.spans`, the refusal, the social-media tail and the IDF in :mod:`qa.answering.text`;
this module holds the answerer and its sentence scoring.
"""

from __future__ import annotations

import math
import re
import threading
from dataclasses import dataclass, field
from typing import Any

from qa.analysis import analyze, fold
from qa.answering.questions import TYPED, asks_definition, asks_year, counted_terms, question_terms, question_type, word_terms
from qa.answering.spans import Span, find_dates, find_entities, find_quantities, in_question, load_nlp, year_only
from qa.answering.text import REFUSAL, document_frequencies, idf, straight_apostrophes, trim_social_tail
from qa.chunking import split_sentences
from qa.schema import Answer, Citation, Passage

__all__ = ["ExtractiveAnswerer", "ScoredSentence"]


@dataclass
class ScoredSentence:
    """A candidate sentence: ``passages[passage_index].text[start:end]`` and how it scored."""

    passage_index: int
    start: int
    end: int
    text: str
    score: float = 0.0
    """Ranking score: coverage, plus neighbours, answer type and retrieval prior."""
    coverage: float = 0.0
    """IDF-weighted share of the question's terms found in the sentence."""
    context_coverage: float = 0.0
    """The same over the sentence and its two neighbours."""
    matched: list[str] = field(default_factory=list)
    answer: Span | None = None
    typed: bool = False
    """Whether the answer-type check ran on this sentence."""


@dataclass
class _Candidate:
    passage_index: int
    order: int
    start: int
    end: int
    text: str
    terms: set[str]


class ExtractiveAnswerer:
    """Answers by quoting the passage sentence that best matches the question."""

    name = "extractive"

    # weights, tuned on PIAF (3,835 questions; the gold paragraph alone and among 4 others)
    NAME_WEIGHT = 1.5
    """Question terms written with a capital (names, acronyms) count this much more."""
    PREFIX_CREDIT = 0.5
    """A term that only shares its first 5 letters with a sentence term counts this much."""
    ENGLISH_WEIGHT = 0.3
    """In an English question, words other than names count this much (French passages rarely share them)."""
    CONTEXT_WEIGHT = 0.25
    TYPE_BONUS = 0.2
    RANK_DECAY = 0.03
    PASSAGE_WEIGHT = 0.8
    """The retrieval score of a sentence's passage (relative to the best passage's) adds this much: which passage
    the retriever ranks first is evidence the sentence's words alone miss (PIAF, 1,279 questions, hybrid top 5:
    the quote holds the answer 52.9 % → 55.9 %, the quote comes from the right paragraph 69.8 % → 75.2 %)."""
    PROXIMITY_NAME = 0.5
    """When choosing among several answers in a sentence, nearness to the question's names counts this much."""
    CALIBRATION = (6.58, -2.03)
    """Logistic mapping of the evidence to a probability (fitted on PIAF)."""
    SECOND_CITATION = 0.9
    """Cite the best sentence of another passage too when it scores this close (only when there is no short answer)."""
    TYPED_SENTENCES = 4
    """How many top sentences are checked for a date or a quantity (regular expressions, cheap)."""
    NER_SENTENCES = 3
    """How many top sentences spaCy reads for a person or a place (~10 ms each on one core)."""
    DOC_CACHE = 512

    def __init__(self, *, min_confidence: float = 0.35, nlp: Any = None) -> None:
        self.min_confidence = min_confidence
        self._nlp = nlp
        self._docs: dict[str, Any] = {}
        self._lock = threading.Lock()

    @property
    def nlp(self) -> Any:
        """The spaCy pipeline (loaded on first use); None when spaCy or its French model is missing, or ``nlp=False``."""
        if self._nlp is None:
            self._nlp = load_nlp() or False
        return None if self._nlp is False else self._nlp

    # -- public ---------------------------------------------------------------------------------------------------

    def answer(self, question: str, passages: list[Passage]) -> Answer:
        passages = list(passages)
        ranked, qinfo = self._rank(question, passages)
        if not ranked:
            return self._abstain(question, passages, 0.0)
        best = ranked[0]
        confidence = self._confidence(best, qinfo)
        if confidence < self.min_confidence:
            return self._abstain(question, passages, confidence)
        citations = [self._cite(best, passages)]
        if best.answer is not None:
            text, short = best.answer.reply, best.answer.core
        else:
            text, short = best.text, ""
            runner_up = next((s for s in ranked[1:] if s.passage_index != best.passage_index), None)
            if runner_up is not None and runner_up.score > 0 and runner_up.score >= self.SECOND_CITATION * best.score:
                citations.append(self._cite(runner_up, passages))
        return Answer(
            text=text,
            citations=citations,
            passages=passages,
            abstained=False,
            confidence=round(confidence, 4),
            short_answer=short,
            question=question,
        )

    def score_sentences(self, question: str, passages: list[Passage]) -> list[ScoredSentence]:
        """Every candidate sentence, best first (the top ones checked for the answer type)."""
        return self._rank(question, list(passages))[0]

    # -- internals ------------------------------------------------------------------------------------------------

    def _abstain(self, question: str, passages: list[Passage], confidence: float) -> Answer:
        return Answer(
            text=REFUSAL,
            citations=[],
            passages=passages,
            abstained=True,
            confidence=round(max(0.0, min(1.0, confidence)), 4),
            question=question,
        )

    @staticmethod
    def _cite(sentence: ScoredSentence, passages: list[Passage]) -> Citation:
        passage = passages[sentence.passage_index]
        return Citation(
            passage=passage, quote=passage.text[sentence.start : sentence.end], start=sentence.start, end=sentence.end
        )

    # -- ranking the sentences ------------------------------------------------------------------------------------

    def _rank(self, question: str, passages: list[Passage]) -> tuple[list[ScoredSentence], dict[str, Any]]:
        """Every sentence of ``passages``, best first, and what the question asks (type, weighted terms)."""
        qtype = question_type(question)
        q_terms = question_terms(question, self.NAME_WEIGHT, self.ENGLISH_WEIGHT)
        qinfo: dict[str, Any] = {"type": qtype, "terms": q_terms, "total": 0.0}
        candidates = _candidates(passages)
        if not candidates:
            return [], qinfo
        weights = _term_weights(q_terms, candidates)
        total = sum(weights.values())
        qinfo["total"] = total
        qinfo["weights"] = weights
        prefixes = {t: t[:5] for t in q_terms if len(t) >= 5}
        coverages = [self._coverage(c, weights, total, prefixes) for c in candidates]
        ranked = self._score(candidates, coverages, weights, total, passages)
        if qtype in TYPED:
            self._check_answer_types(qtype, question, q_terms, weights, ranked)
            _sort(ranked)
        return ranked, qinfo

    def _coverage(
        self, candidate: _Candidate, weights: dict[str, float], total: float, prefixes: dict[str, str]
    ) -> tuple[float, list[str]]:
        """The IDF-weighted share of the question's terms ``candidate`` holds (a shared 5-letter prefix counts
        ``PREFIX_CREDIT``), and the terms it matched."""
        got = 0.0
        matched = []
        for t, w in weights.items():
            if t in candidate.terms:
                got += w
                matched.append(t)
            elif t in prefixes and any(u.startswith(prefixes[t]) for u in candidate.terms):
                got += w * self.PREFIX_CREDIT
                matched.append(t)
        return (got / total if total else 0.0, matched)

    def _score(
        self,
        candidates: list[_Candidate],
        coverages: list[tuple[float, list[str]]],
        weights: dict[str, float],
        total: float,
        passages: list[Passage],
    ) -> list[ScoredSentence]:
        """The scored sentences, best first: coverage, plus the best neighbour's, times the retrieval-rank prior,
        plus the passage's retrieval score."""
        n = len(candidates)
        scores = [p.score for p in passages]
        top_score = max(scores) if scores else 0.0
        ranked: list[ScoredSentence] = []
        for i, c in enumerate(candidates):
            cov, matched = coverages[i]
            neighbours = [
                coverages[j][0] for j in (i - 1, i + 1) if 0 <= j < n and candidates[j].passage_index == c.passage_index
            ]
            context = _context_coverage(i, candidates, weights, total)
            score = (cov + self.CONTEXT_WEIGHT * max(neighbours, default=0.0)) * self._prior(c.passage_index, scores, top_score)
            if top_score > 0:
                score += self.PASSAGE_WEIGHT * max(scores[c.passage_index], 0.0) / top_score
            ranked.append(ScoredSentence(c.passage_index, c.start, c.end, c.text, score, cov, context, matched))
        _sort(ranked)
        return ranked

    def _prior(self, passage_index: int, scores: list[float], top_score: float) -> float:
        """Sentences of the passages retrieved first weigh a little more."""
        prior = 1.0 / (1.0 + self.RANK_DECAY * passage_index)
        if top_score > 0 and scores[passage_index] > 0:
            prior *= 0.9 + 0.1 * scores[passage_index] / top_score
        return prior

    def _check_answer_types(
        self, qtype: str, question: str, q_terms: dict[str, float], weights: dict[str, float], ranked: list[ScoredSentence]
    ) -> None:
        """Look for an answer of the asked kind in the top sentences; those holding one score ``TYPE_BONUS`` more."""
        names = {t for t, factor in q_terms.items() if factor == self.NAME_WEIGHT}
        limit = self.NER_SENTENCES if qtype in ("qui", "ou") else self.TYPED_SENTENCES
        top = [s for s in ranked[:limit] if s is ranked[0] or s.score >= ranked[0].score * 0.5]
        docs: dict[str, Any] = {}
        if qtype in ("qui", "ou") and self.nlp is not None:
            texts = [s.text for s in top]
            docs = dict(zip(texts, self._parse(texts), strict=True))
        for s in top:
            s.typed = True
            s.answer = self._find_answer(qtype, s, question, weights, names, docs.get(s.text))
            if s.answer is not None:
                s.score += self.TYPE_BONUS * s.answer.strength

    # -- the short answer -----------------------------------------------------------------------------------------

    def _find_answer(
        self, qtype: str, sentence: ScoredSentence, question: str, weights: dict[str, float], names: set[str], doc: Any = None
    ) -> Span | None:
        text = sentence.text
        q = straight_apostrophes(question.strip())
        q_folded = fold(q)
        if qtype == "quand":
            spans = find_dates(text)
            if asks_year(q_folded):
                spans = [year_only(s) for s in spans]
        elif qtype == "combien":
            spans = find_quantities(text)
            wanted = counted_terms(q_folded)
            for sp in spans:  # « 103 objets » for « Combien d'objets ? »
                unit_terms = set(analyze(sp.core))
                if unit_terms & wanted or any(u[:4] == w[:4] for u in unit_terms for w in wanted if len(w) >= 4):
                    sp.strength += 0.3
        else:
            if qtype == "qui" and asks_definition(q):
                return None  # « Qui est Maria Kirilenko ? » asks for a description, not a name
            spans = self._entities(qtype, text, doc)
        spans = [s for s in spans if not in_question(s.core, q_folded, set(weights))]
        if not spans:
            return None
        return self._closest(spans, text, sentence.matched, weights, names)

    def _closest(self, spans: list[Span], text: str, matched: list[str], weights: dict[str, float], names: set[str]) -> Span:
        """The strongest of ``spans``, nearness to the question's terms in ``text`` breaking close calls."""
        positions = _term_positions(text, set(matched))
        # the answer sits next to what is said of the subject (the verb, the rare words) more than next to the subject's name
        near = {t: weights.get(t, 0.0) * (self.PROXIMITY_NAME if t in names else 1.0) for t in positions}
        total = sum(near.values()) or 1.0

        def proximity(span: Span) -> float:
            score = 0.0
            for t, spots in positions.items():
                d = min(max(a - span.end, span.start - b, 0) for a, b in spots)
                score += near[t] * math.exp(-d / 40.0)
            return score / total

        return max(spans, key=lambda s: (s.strength + 0.3 * proximity(s), -s.start))

    def _entities(self, qtype: str, text: str, doc: Any = None) -> list[Span]:
        if self.nlp is None:
            return find_entities(qtype, text)
        if doc is None:
            doc = self._parse([text])[0]
        return find_entities(qtype, text, doc)

    def _parse(self, texts: list[str]) -> list[Any]:
        """spaCy docs of ``texts``, from a small cache (follow-up questions reuse the same passages)."""
        with self._lock:
            docs = {t: self._docs[t] for t in texts if t in self._docs}
        missing = [t for t in dict.fromkeys(texts) if t not in docs]
        if missing:
            docs.update(zip(missing, self.nlp.pipe(missing), strict=True))
            with self._lock:
                self._docs.update(docs)
                while len(self._docs) > self.DOC_CACHE:
                    self._docs.pop(next(iter(self._docs)))
        return [docs[t] for t in texts]

    def _confidence(self, best: ScoredSentence, qinfo: dict[str, Any]) -> float:
        """In [0, 1]: an estimate of the probability that the passages hold the answer.

        The evidence is how much of the question (IDF-weighted) the best sentence covers, with its neighbours,
        lowered when a « Quand / Qui / Où / Combien » question finds no answer of its kind; it is mapped to a
        probability by a logistic fitted on PIAF (gold paragraph among others of its article, versus the other
        paragraphs of the article without it). No question term in the passages gives 0.
        """
        if not qinfo["terms"] or qinfo["total"] <= 0 or best.context_coverage <= 0:
            return 0.0
        evidence = 0.7 * best.coverage + 0.3 * best.context_coverage
        if qinfo["type"] in TYPED:
            evidence *= 1.0 if best.answer is not None else 0.75
        return 1.0 / (1.0 + math.exp(-(self.CALIBRATION[0] * evidence + self.CALIBRATION[1])))


def _sort(ranked: list[ScoredSentence]) -> None:
    ranked.sort(key=lambda s: (-s.score, s.passage_index, s.start))


def _candidates(passages: list[Passage]) -> list[_Candidate]:
    """Every sentence of every passage (without a trailing run of hashtags and links), with its terms."""
    candidates: list[_Candidate] = []
    for pi, passage in enumerate(passages):
        for order, (s, e) in enumerate(split_sentences(passage.text)):
            e = trim_social_tail(passage.text, s, e)
            text = passage.text[s:e]
            candidates.append(_Candidate(pi, order, s, e, text, set(analyze(text))))
    return candidates


def _term_weights(q_terms: dict[str, float], candidates: list[_Candidate]) -> dict[str, float]:
    """Each question term's weight: its factor (a name counts more) times its IDF over the candidate sentences."""
    df = document_frequencies(c.terms for c in candidates)
    n = len(candidates)
    return {t: idf(df.get(t, 0), n) * factor for t, factor in q_terms.items()}


def _term_positions(text: str, terms: set[str]) -> dict[str, list[tuple[int, int]]]:
    """Where each of ``terms`` occurs in ``text``."""
    out: dict[str, list[tuple[int, int]]] = {}
    if terms:
        for m in re.finditer(r"[\wÀ-ÿ]+", text):
            for t in word_terms(m.group()):
                if t in terms:
                    out.setdefault(t, []).append((m.start(), m.end()))
    return out


def _context_coverage(i: int, candidates: list[_Candidate], weights: dict[str, float], total: float) -> float:
    if not total:
        return 0.0
    c = candidates[i]
    terms = set(c.terms)
    for j in (i - 1, i + 1):
        if 0 <= j < len(candidates) and candidates[j].passage_index == c.passage_index:
            terms |= candidates[j].terms
    return sum(w for t, w in weights.items() if t in terms) / total
