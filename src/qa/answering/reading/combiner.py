"""The calibrated combiner: one probability per candidate sentence from the reader's and the lexical scores.

A candidate sentence is described by :data:`FEATURES` — the trained reader's logit (absolute, and relative to the
question's best), the lexical answerer's score, coverage and answer-type check, its passage's retrieval rank and
score, and the span model's margin of its answer over the null answer (a cross-encoder reading question and sentence
together: it tells « à Almaty » from « à Bruxelles », which the bi-encoder reader blurs). A logistic regression over
them, fitted on the training split by ``qa fit-combiner`` (:mod:`qa.training.combiner`), gives ``P(the sentence
holds the answer)``; the best sentence's probability is the answer's confidence, and the abstention threshold
(``threshold`` in ``combiner.json``) was chosen on the dev split for a stated false-abstention rate. Nothing here is
hand-set but the feature list.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from qa.analysis import fold
from qa.answering.questions import TYPED, word_terms
from qa.errors import ModelError

FORMAT = 1
COMBINER_FILE = "combiner.json"
FEATURES = (
    "reader_logit",
    "reader_margin",
    "reader_best",
    "lexical_score",
    "lexical_share",
    "lexical_best",
    "coverage",
    "context_coverage",
    "name_coverage",
    "type_found",
    "type_missing",
    "passage_share",
    "passage_prior",
    "span_margin",
    "span_margin_gap",
    "anchor_coverage",
    "anchors_absent",
    "anchor_conflict",
    "span_fits",
    "near_miss",
)
"""What the combiner reads of each candidate (see :func:`features`); a combiner may be fitted on a subset."""
RULES = ("near_miss", "span_fits")
"""Features obeyed as rules, never fitted: the choice passes over a near miss (:meth:`Combiner.choose`), and a
sentence whose answer is not of the kind the question wants gets no confidence (:meth:`Combiner.confidences`)."""
GROUPS = {
    "reader": ("reader_logit", "reader_margin", "reader_best"),
    "span": ("span_margin", "span_margin_gap", "span_fits"),
}
"""The features each model gives (``qa fit-combiner --drop reader`` fits without them)."""


@dataclass
class Candidate:
    """What :func:`features` needs of one candidate sentence (a view of the lexical answerer's ``ScoredSentence``)."""

    passage_index: int
    score: float
    coverage: float
    context_coverage: float
    typed: bool
    has_answer: bool
    name_coverage: float = 1.0
    """Share of the question's names (capitalised terms: « Almaty », « UE ») the sentence holds; 1 without names."""
    span_margin: float = 0.0
    """The span model's answer score over its null answer in this sentence (0 without a null-trained span model)."""
    anchor_coverage: float = 1.0
    """Share of the question's anchors (its names and numbers) the sentence holds, each weighted by how few of the
    candidates hold it: « Almaty », in one candidate, weighs more than « UE », in several, and the subject that every
    candidate names weighs little; 1 when no candidate holds an anchor (:func:`anchor_coverages`)."""
    anchors_absent: float = 0.0
    """Share of the question's anchors that no candidate holds (« PIB », « 2021 »): the same for every candidate of
    a question; a sign that the passages do not hold its answer."""
    anchor_conflict: float = 0.0
    """Share of the question's anchored slots (« à Almaty », « en 2021 »: a preposition and a name or number) that
    the sentence fills with another name or number (« à Bruxelles », « en décembre 1993 »): a sentence that says
    the same of another place, person or date — the near miss — rather than one that leaves a name out (a pronoun)
    (:func:`anchor_conflicts`)."""
    span_fits: float = 1.0
    """0 when the span model's answer in the sentence is not of the kind the question wants, for the kinds that
    admit no other (:data:`qa.answering.questions.STRICT_KINDS`: « brièvement » for « Comment s'appelle… », « 23
    juin » for « Quel âge… »: :func:`qa.answering.spans.fits_kind`); 1 otherwise, and where the span model did
    not read the sentence."""
    near_miss: bool = False
    """The sentence says of another place or time what the question asks of its own, and another candidate says it
    of the question's (:func:`near_misses`): « ouvert son bureau à Bruxelles » when « à Almaty » is asked and a
    candidate says « à Almaty ». The choice passes it over (:meth:`Combiner.choose`)."""


def features(qtype: str, candidates: Sequence[Candidate], logits: Sequence[float], passage_scores: Sequence[float]) -> np.ndarray:
    """The ``len(candidates) x len(FEATURES)`` matrix; ``candidates`` in lexical order (best first), ``logits`` the
    reader's, aligned with them."""
    n = len(candidates)
    out = np.zeros((n, len(FEATURES)), dtype=np.float64)
    if not n:
        return out
    logit = np.asarray(logits, dtype=np.float64)
    top_lexical = max(c.score for c in candidates)
    top_passage = max(passage_scores) if passage_scores else 0.0
    typed_question = qtype in TYPED
    for i, c in enumerate(candidates):
        pscore = passage_scores[c.passage_index] if c.passage_index < len(passage_scores) else 0.0
        out[i] = (
            logit[i],
            0.0,  # reader_margin and reader_best: set_relative
            0.0,
            c.score,
            c.score / top_lexical if top_lexical > 0 else 0.0,
            float(i == 0),
            c.coverage,
            c.context_coverage,
            c.name_coverage,
            float(c.has_answer),
            float(typed_question and c.typed and not c.has_answer),
            max(pscore, 0.0) / top_passage if top_passage > 0 else 0.0,
            1.0 / (1.0 + c.passage_index),
            c.span_margin,
            0.0,  # span_margin_gap: set_relative
            c.anchor_coverage,
            c.anchors_absent,
            c.anchor_conflict,
            c.span_fits,
            float(c.near_miss),
        )
    return set_relative(out)


def anchor_coverages(anchors: set[str], held: Sequence[set[str]]) -> tuple[list[float], float]:
    """Per candidate (``held``: the question terms each one holds), the share of the question's ``anchors`` it
    holds, each anchor weighted by 1 / the number of candidates holding it; and the share of anchors no candidate
    holds (see :class:`Candidate`)."""
    counts: dict[str, int] = {}
    for terms in held:
        for t in terms & anchors:
            counts[t] = counts.get(t, 0) + 1
    total = sum(1.0 / n for n in counts.values())
    shares = [sum(1.0 / counts[t] for t in terms & anchors) / total if total else 1.0 for terms in held]
    return shares, (len(anchors) - len(counts)) / len(anchors) if anchors else 0.0


RELATIVE = {"reader_margin": "reader_logit", "span_margin_gap": "span_margin"}
"""The features relative to the candidates' best (of the feature named): recomputed by :func:`first_candidates`."""


def set_relative(x: np.ndarray) -> np.ndarray:
    """``x`` (a :func:`features` matrix) with its features relative to the candidate set (:data:`RELATIVE`, and
    ``reader_best``) computed from the absolute ones, in place."""
    if len(x):
        for relative, absolute in RELATIVE.items():
            column = x[:, FEATURES.index(absolute)]
            x[:, FEATURES.index(relative)] = column - column.max()
        logit = x[:, FEATURES.index("reader_logit")]
        x[:, FEATURES.index("reader_best")] = (logit >= logit.max()).astype(np.float64)
    return x


def first_candidates(row: dict[str, Any], n: int) -> dict[str, Any]:
    """A collected row (``x``: a :func:`features` matrix of the candidates in lexical order, ``y``: labels) cut to
    its first ``n`` candidates, with the features relative to the set recomputed: what :func:`features` gives for
    ``n`` candidates (the lexical ones are relative to the first candidate, which stays). The anchor features
    (:func:`anchor_coverages`) are not recomputed: they stay those of the candidates collected, so a fit meant to
    ship collects as many candidates as it reads (``make fit-combiner``: 5 and 5)."""
    return {**row, "x": set_relative(row["x"][:n].copy()), "y": row["y"][:n]}


class Combiner:
    """A fitted logistic regression over :data:`FEATURES` or a subset of them (standardised), and the abstention
    threshold."""

    def __init__(self, spec: dict[str, Any]) -> None:
        names = tuple(spec.get("features", ()))
        if spec.get("format") != FORMAT or not names or any(n not in FEATURES for n in names):
            raise ModelError(
                f"the combiner was fitted for features {spec.get('features')} (format {spec.get('format')}), "
                f"this qa computes {list(FEATURES)}: run `qa fit-combiner`"
            )
        sizes = {len(spec.get(k) or ()) for k in ("mean", "scale", "coef")}
        if sizes != {len(names)}:
            raise ModelError(
                f"the combiner lists {len(names)} features but {len(spec.get('coef') or ())} coefficients: run `qa fit-combiner`"
            )
        self.spec = spec
        self.features = names
        self.columns = [FEATURES.index(n) for n in names]
        self.mean = np.asarray(spec["mean"], dtype=np.float64)
        self.scale = np.asarray(spec["scale"], dtype=np.float64)
        self.coef = np.asarray(spec["coef"], dtype=np.float64)
        self.intercept = float(spec["intercept"])
        self.threshold = float(spec["threshold"])
        choice = spec.get("choice_coef")
        self.choice = np.asarray(choice, dtype=np.float64) if choice is not None else None

    def uses(self, group: str) -> bool:
        """Does it read any feature of ``group`` (``"reader"``, ``"span"``: :data:`GROUPS`)? A model it does not
        read need not run."""
        return any(n in GROUPS[group] for n in self.features)

    def _z(self, x: np.ndarray) -> np.ndarray:
        return (x[:, self.columns] - self.mean) / self.scale

    def choose(self, x: np.ndarray) -> int:
        """The candidate to quote: the listwise choice model's best (``choice_coef``: fitted as a softmax over each
        question's candidates, it ranks better than the pointwise probabilities), else the most probable; never a
        near miss (:data:`RULES`: :func:`near_misses`) while another candidate is not one."""
        scores = self.probabilities(x) if self.choice is None else self._z(x) @ self.choice
        miss = x[:, FEATURES.index("near_miss")] > 0
        if miss.any() and not miss.all():
            scores = np.where(miss, -np.inf, scores)
        return int(np.argmax(scores))

    @classmethod
    def load(cls, folder: Path) -> Combiner:
        path = Path(folder) / COMBINER_FILE
        try:
            spec = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ModelError(f"cannot read {path} ({exc}): run `qa fit-combiner` or set QA_READER=off") from None
        return cls(spec)

    def confidences(self, x: np.ndarray) -> np.ndarray:
        """:meth:`probabilities`, 0 for a sentence whose answer is not of the kind the question wants (:data:`RULES`:
        ``span_fits``): quoted, it would answer another question (« brièvement » for a name), so it abstains."""
        return self.probabilities(x) * (x[:, FEATURES.index("span_fits")] > 0) if len(x) else np.zeros(0)

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        """``P(holds the answer)`` per row of a :func:`features` matrix."""
        if not len(x):
            return np.zeros(0)
        z = self._z(x) @ self.coef + self.intercept
        return 1.0 / (1.0 + np.exp(-np.clip(z, -40, 40)))


SLOT_WORDS = frozenset(
    "a au aux en dans de du des chez vers par pour depuis sur sous entre contre apres avant pendant "
    "in at on of from to by since during after before against".split()
)
"""The prepositions that open a slot (folded): « à Almaty », « en 2021 », « in Paris »."""
_WORDS = re.compile(r"[\wÀ-ÿ]+")


def _slot_positions(text: str, prepositions: frozenset[str]) -> tuple[list[tuple[str, ...]], list[tuple[int, str]]]:
    """The terms of each word of ``text``, and ``(position, preposition)`` per name or number whose nearest
    preposition (one of ``prepositions``) is at most two words before it; a name is a capitalised word that does
    not open the text."""
    words = _WORDS.findall(text)
    out: list[tuple[int, str]] = []
    for i, w in enumerate(words):
        if not (w.isdigit() or (i > 0 and w[:1].isupper())):
            continue
        for j in (i - 1, i - 2):
            if j >= 0 and fold(words[j]) in prepositions:
                out.append((i, fold(words[j])))
                break
    return [word_terms(w) for w in words], out


def slots(text: str) -> list[tuple[str, str]]:
    """``(preposition, term)`` per name or number of ``text`` whose nearest preposition is at most two words before
    it (« à Almaty » → ``("a", "almaty")``; « en décembre 1993 » → ``("en", "1993")``); a name is a capitalised
    word that does not open the text."""
    terms, found = _slot_positions(text, SLOT_WORDS)
    return [(prep, t) for i, prep in found for t in terms[i]]


def anchor_conflicts(question: str, anchors: set[str], texts: Sequence[str], held: Sequence[set[str]]) -> list[float]:
    """Per candidate sentence (``texts``, ``held``: the question terms each holds), the share of the question's
    anchored slots (:func:`slots` whose term is one of ``anchors``) it does not hold but fills, after the same
    preposition, with a name or number the question does not name; 0 for a question without such slots."""
    asked = [(prep, t) for prep, t in slots(question) if t in anchors]
    if not asked:
        return [0.0] * len(texts)
    out = []
    for text, terms in zip(texts, held, strict=True):
        filled = {prep for prep, t in slots(text) if t not in anchors}  # the prepositions another name follows
        out.append(sum(1.0 for prep, t in asked if t not in terms and prep in filled) / len(asked))
    return out


NEAR_PREPOSITIONS = frozenset("a au aux en dans chez depuis pendant vers in at since during".split())
"""The prepositions of a place or a time (folded): the slots a near miss fills with another name or number."""
NEAR_WINDOW = 4
"""How many words from its slot the predicate shared with the question may stand (« ouvert son bureau à Bruxelles »)."""


def near_misses(
    question: str, anchors: set[str], content: set[str], texts: Sequence[str], held: Sequence[set[str]]
) -> list[bool]:
    """Per candidate sentence (``texts``; ``held``: the question terms each holds), is it a near miss: for one of
    the question's place or time slots (:data:`NEAR_PREPOSITIONS` + one of ``anchors``, within
    :data:`NEAR_WINDOW` words of one of its ``content`` terms: « ouvert à Almaty »), the sentence does not hold the
    anchor but fills the same preposition, near the same content term, with a name or number the question does not
    name (« ouvert son bureau à Bruxelles »), and another candidate holds the slot as asked (« à Almaty »)? A
    sentence that leaves the place out (a pronoun, a paraphrase) is not one, nor is a sentence when no candidate
    holds the asked place: then nothing tells which one the question means."""

    def around(terms: list[tuple[str, ...]], i: int) -> set[str]:
        return {t for k in range(max(0, i - NEAR_WINDOW), min(len(terms), i + NEAR_WINDOW + 1)) for t in terms[k]}

    q_terms, q_slots = _slot_positions(question, NEAR_PREPOSITIONS)
    asked = []  # (preposition, the slot's anchors, the content terms around it)
    for i, prep in q_slots:
        anchored, near = set(q_terms[i]) & anchors, around(q_terms, i) & content
        if anchored and near:
            asked.append((prep, anchored, near))
    if not asked:
        return [False] * len(texts)
    parsed = [_slot_positions(text, NEAR_PREPOSITIONS) for text in texts]
    holds = [
        [any(p == prep and set(terms[i]) & anchored for i, p in found) for prep, anchored, _ in asked] for terms, found in parsed
    ]
    out = []
    for n, ((terms, found), has) in enumerate(zip(parsed, held, strict=True)):
        out.append(
            any(
                not anchored & has
                and any(holds[m][k] for m in range(len(texts)) if m != n)
                and any(p == prep and not set(terms[i]) & anchors and around(terms, i) & near for i, p in found)
                for k, (prep, anchored, near) in enumerate(asked)
            )
        )
    return out
