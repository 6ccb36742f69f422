"""Evaluation on SQuAD-format data (PIAF, FQuAD, SQuAD): each paragraph is one
article, each question's gold article is its paragraph.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from qa.documents import Article
from qa.errors import DocumentError


@dataclass
class Question:
    id: str
    text: str
    doc_id: str
    """The paragraph (article) that holds the answer."""
    answers: list[str] = field(default_factory=list)


def load_squad(path: str | Path) -> tuple[list[Article], list[Question]]:
    """Paragraphs as articles (id ``<article>-<paragraph>``, title = the page title) and their questions."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        entries = data["data"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DocumentError(str(path), f"not a SQuAD-format JSON file ({exc}): expected {{'data': [...]}}") from None
    articles: list[Article] = []
    questions: list[Question] = []
    for i, entry in enumerate(entries):
        for j, paragraph in enumerate(entry.get("paragraphs", [])):
            doc_id = f"{i}-{j}"
            articles.append(Article(id=doc_id, text=paragraph["context"], title=entry.get("title", ""), source="squad"))
            for qa in paragraph.get("qas", []):
                if qa.get("is_impossible"):
                    continue
                questions.append(Question(str(qa["id"]), qa["question"], doc_id, [a["text"] for a in qa.get("answers", [])]))
    return articles, questions


def first_relevant_rank(retrieved_doc_ids: Sequence[str], gold: str) -> int | None:
    """1-based rank of ``gold`` among the distinct retrieved articles, or None."""
    seen: list[str] = []
    for doc_id in retrieved_doc_ids:
        if doc_id not in seen:
            seen.append(doc_id)
            if doc_id == gold:
                return len(seen)
    return None


def recall_at(ranks: Sequence[int | None], k: int) -> float:
    """Share of questions whose gold article is in the top ``k``."""
    return sum(1 for r in ranks if r is not None and r <= k) / len(ranks) if ranks else 0.0


def mrr_at(ranks: Sequence[int | None], k: int = 10) -> float:
    """Mean reciprocal rank, counting only ranks up to ``k``."""
    return sum(1.0 / r for r in ranks if r is not None and r <= k) / len(ranks) if ranks else 0.0


# -- answers -----------------------------------------------------------------------------
_ELIDED_ARTICLES = re.compile(r"\b(?:l|d)['’]", re.IGNORECASE)
_ARTICLES = re.compile(r"\b(?:le|la|les|un|une|des|du|de)\b")
_PUNCT = re.compile(r"[^\w\s]")


def normalize_answer(text: str) -> str:
    """SQuAD normalisation adapted to French: lower case, no punctuation, no articles
    (le, la, les, l', un, une, des, du, de), single spaces."""
    text = unicodedata.normalize("NFC", text.lower())
    text = _ELIDED_ARTICLES.sub(" ", text)
    text = _PUNCT.sub(" ", text)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(prediction: str, golds: Sequence[str]) -> float:
    """1.0 if the normalised prediction equals a normalised gold answer."""
    p = normalize_answer(prediction)
    return float(any(p == normalize_answer(g) for g in golds))


def f1_score(prediction: str, golds: Sequence[str]) -> float:
    """The best token-overlap F1 between the prediction and a gold answer."""
    p_tokens = normalize_answer(prediction).split()
    best = 0.0
    for gold in golds:
        g_tokens = normalize_answer(gold).split()
        if not p_tokens or not g_tokens:
            best = max(best, float(p_tokens == g_tokens))
            continue
        common = Counter(p_tokens) & Counter(g_tokens)
        same = sum(common.values())
        if same:
            precision, recall = same / len(p_tokens), same / len(g_tokens)
            best = max(best, 2 * precision * recall / (precision + recall))
    return best


def quote_contains_answer(quotes: Sequence[str], golds: Sequence[str]) -> bool:
    """Does a cited quote contain a gold answer (compared normalised)?"""
    normalised = [f" {normalize_answer(q)} " for q in quotes]
    return any(f" {normalize_answer(g)} " in q for g in golds if normalize_answer(g) for q in normalised)
