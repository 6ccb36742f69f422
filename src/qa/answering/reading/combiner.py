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
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from qa.answering.questions import TYPED
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
)
"""What the combiner reads of each candidate (see :func:`features`); a combiner may be fitted on a subset."""
GROUPS = {
    "reader": ("reader_logit", "reader_margin", "reader_best"),
    "span": ("span_margin", "span_margin_gap"),
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
        )
    return set_relative(out)


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
    ``n`` candidates (the lexical ones are relative to the first candidate, which stays)."""
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
        question's candidates, it ranks better than the pointwise probabilities), else the most probable."""
        if self.choice is None:
            return int(np.argmax(self.probabilities(x)))
        return int(np.argmax(self._z(x) @ self.choice))

    @classmethod
    def load(cls, folder: Path) -> Combiner:
        path = Path(folder) / COMBINER_FILE
        try:
            spec = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ModelError(f"cannot read {path} ({exc}): run `qa fit-combiner` or set QA_READER=off") from None
        return cls(spec)

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        """``P(holds the answer)`` per row of a :func:`features` matrix."""
        if not len(x):
            return np.zeros(0)
        z = self._z(x) @ self.coef + self.intercept
        return 1.0 / (1.0 + np.exp(-np.clip(z, -40, 40)))
