"""The checks of a search's own arguments (the question, ``k``); the filters value lives in :mod:`qa.filters`
(re-exported here for the faces that imported it from this module)."""

from __future__ import annotations

from typing import Any

from qa.errors import QueryError
from qa.filters import FILTER_NAMES, NO_FILTERS, Filters

__all__ = ["FILTER_NAMES", "MAX_K", "NO_FILTERS", "Filters", "check_k", "check_question"]

MAX_K = 1000
"""The most passages a search returns (and the largest page of a listing)."""


def check_question(question: Any) -> str:
    """The question, stripped; an empty one is a :class:`~qa.errors.QueryError`."""
    if not isinstance(question, str) or not question.strip():
        raise QueryError("the question is empty: type a question")
    return question.strip()


def check_k(k: Any) -> int:
    """``k`` if it is an int from 1 to :data:`MAX_K`, else a :class:`~qa.errors.QueryError`."""
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_K:
        raise QueryError(f"k={k!r} is out of range: ask for 1 to {MAX_K} passages")
    return k
