"""What both answerers need, one copy each: the refusal, the conversation type, the social-media tail, the IDF.

The extractive answerer (:mod:`qa.answering.extractive`) and the LLM answerer (:mod:`qa.answering.llm`) used to
carry their own copies of these; where the copies differed, the difference is now a parameter, and each caller
passes the value that keeps its behaviour:

* :func:`trim_social_tail` ``after_stop``: the extractive answerer trims a tail of hashtags, mentions and links
  (``www.`` ones too) only after a sentence-final mark (``.!?…»``); the LLM answerer's quote choice trims it after
  any word, ``www.`` links excepted.
* :func:`idf` ``bm25``: the extractive answerer weighs the question's terms with BM25's IDF
  (defined for terms no sentence holds); the LLM answerer weighs the quote's terms with ``log(1 + n / df)``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence

__all__ = [
    "REFUSAL",
    "History",
    "document_frequencies",
    "idf",
    "straight_apostrophes",
    "trim_social_tail",
]

REFUSAL = "Je ne trouve pas cela dans le corpus."
"""The answer of an answerer that abstains, and the reply the LLM is told to give when the passages lack the answer."""

History = Sequence[tuple[str, str]]
"""Previous turns, oldest first: ``(question, answer_text)`` pairs (the LLM answerer accepts ``(role, text)`` too)."""

# ---------------------------------------------------------------------------------------------------------------------
# Hashtags, mentions and links trailing a tweet quoted in an article (split_sentences keeps them with the sentence)

_TAIL_ITEMS = r"#\w+|@\w+|pic\.twitter\.com/\S+|https?://\S+"
_SOCIAL_TAIL_AFTER_STOP = re.compile(rf"(?<=[.!?…»])(?:\s+(?:{_TAIL_ITEMS}|www\.\S+))+\s*$")
_SOCIAL_TAIL_ANYWHERE = re.compile(rf"(?:\s+(?:{_TAIL_ITEMS}))+\s*$")


def trim_social_tail(text: str, start: int, end: int, *, after_stop: bool = True) -> int:
    """End of ``text[start:end]`` without a trailing run of hashtags, mentions and links
    (« … à Almaty. #EUinKZ pic.twitter.com/… » ends after « Almaty. »); ``end`` when there is none.

    ``after_stop=True`` (the extractive answerer's sentences): only a run that follows a sentence-final mark
    (``.!?…»``) is cut, ``www.`` links included. ``after_stop=False`` (the LLM answerer's quotes): a run after
    any word is cut, ``www.`` links are kept. Never cuts the whole span.
    """
    pattern = _SOCIAL_TAIL_AFTER_STOP if after_stop else _SOCIAL_TAIL_ANYWHERE
    m = pattern.search(text, start, end)
    return m.start() if m and m.start() > start else end


# ---------------------------------------------------------------------------------------------------------------------
# Term weights


def document_frequencies(documents: Iterable[set[str]]) -> dict[str, int]:
    """In how many of ``documents`` (sets of terms) each term occurs, in first-seen order."""
    df: dict[str, int] = {}
    for terms in documents:
        for t in terms:
            df[t] = df.get(t, 0) + 1
    return df


def idf(df: int, n: int, *, bm25: bool = True) -> float:
    """Inverse document frequency of a term that ``df`` of ``n`` documents hold.

    ``bm25=True``: ``log(1 + (n - df + 0.5) / (df + 0.5))``, BM25's, defined for ``df = 0`` (the extractive
    answerer's question terms). ``bm25=False``: ``log(1 + n / df)``, ``df >= 1`` (the LLM answerer's quote choice).
    """
    if bm25:
        return math.log(1.0 + (n - df + 0.5) / (df + 0.5))
    return math.log(1 + n / df)


# ---------------------------------------------------------------------------------------------------------------------
# Cleaning

_APOSTROPHES = re.compile(r"[’‘`´]")


def straight_apostrophes(text: str) -> str:
    """``’ ‘ ` ´`` → ``'`` (« l’UE » → « l'UE »)."""
    return _APOSTROPHES.sub("'", text)
