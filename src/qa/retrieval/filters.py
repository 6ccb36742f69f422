"""The search filters, as one frozen value validated once: which sources, which dates, which articles left out.

Every face builds a :class:`Filters` from what the user gave (keyword arguments of
``KnowledgeBase.search``/``ask``, CLI flags, the HTTP request's ``filters``, the UI's sidebar)
with :meth:`Filters.of`, which raises :class:`~qa.errors.QueryError` naming the bad field. The
retriever then turns it into each index's own terms: a Chroma ``where`` clause and the lexical
index's SQL filters.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from qa.errors import QueryError
from qa.index.store import date_number

FILTER_NAMES = ("source", "date_from", "date_to", "exclude")
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


def _strings(value: str | Iterable[str] | None, name: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    try:
        items = tuple(value)
    except TypeError:
        raise QueryError(f"filter {name}={value!r} must be a string or a list of strings") from None
    if not all(isinstance(v, str) for v in items):
        raise QueryError(f"filter {name}={value!r} must be a string or a list of strings")
    return tuple(v for v in items if v)


def _day(value: Any, name: str) -> str:
    if value is None or value == "":
        return ""
    text = value.isoformat() if hasattr(value, "isoformat") else str(value)
    date_number(text, name)  # raises QueryError naming the field
    return text[:10]


@dataclass(frozen=True)
class Filters:
    """``source``: articles from these sources; ``date_from``/``date_to``: ISO days, inclusive (undated
    articles fall outside any range); ``exclude``: article ids left out. Empty means no filter."""

    source: tuple[str, ...] = ()
    date_from: str = ""
    date_to: str = ""
    exclude: tuple[str, ...] = field(default=())

    @classmethod
    def of(
        cls,
        source: str | Iterable[str] | None = None,
        date_from: Any = None,
        date_to: Any = None,
        exclude: str | Iterable[str] | None = None,
    ) -> Filters:
        """Validated filters from user input (strings, lists, ``date`` objects, ``None``)."""
        return cls(
            _strings(source, "source"), _day(date_from, "date_from"), _day(date_to, "date_to"), _strings(exclude, "exclude")
        )

    @classmethod
    def from_kwargs(cls, kwargs: Mapping[str, Any]) -> Filters:
        """From ``search``/``ask`` keyword arguments; an unknown name is an error that lists the known ones."""
        unknown = sorted(set(kwargs) - set(FILTER_NAMES))
        if unknown:
            raise QueryError(f"unknown filter {unknown[0]!r}: use {', '.join(FILTER_NAMES)}")
        return cls.of(**kwargs)

    def __bool__(self) -> bool:
        return bool(self.source or self.date_from or self.date_to or self.exclude)

    def as_kwargs(self) -> dict[str, Any]:
        """The non-empty filters as keyword arguments of ``KnowledgeBase.search``/``ask``."""
        out: dict[str, Any] = {}
        if self.source:
            out["source"] = list(self.source)
        if self.date_from:
            out["date_from"] = self.date_from
        if self.date_to:
            out["date_to"] = self.date_to
        if self.exclude:
            out["exclude"] = list(self.exclude)
        return out

    def where(self) -> dict[str, Any] | None:
        """The Chroma ``where`` clause (chunk metadata ``doc_id``, ``source``, ``date_num``)."""
        clauses: list[dict[str, Any]] = []
        if self.exclude:
            ids = list(self.exclude)
            clauses.append({"doc_id": {"$nin": ids}} if len(ids) > 1 else {"doc_id": {"$ne": ids[0]}})
        if self.source:
            sources = list(self.source)
            clauses.append({"source": {"$in": sources}} if len(sources) > 1 else {"source": sources[0]})
        if self.date_from:
            clauses.append({"date_num": {"$gte": date_number(self.date_from)}})
        if self.date_to:
            clauses.append({"date_num": {"$lte": date_number(self.date_to)}})
            clauses.append({"date_num": {"$gte": 1}})  # undated articles are outside any range
        if not clauses:
            return None
        return clauses[0] if len(clauses) == 1 else {"$and": clauses}

    def lexical(self) -> dict[str, Any]:
        """Keyword arguments of :meth:`qa.index.lexical.LexicalIndex.search`."""
        return {
            "source": list(self.source) or None,
            "date_from": date_number(self.date_from) if self.date_from else None,
            "date_to": date_number(self.date_to) if self.date_to else None,
            "exclude": list(self.exclude) or None,
        }


NO_FILTERS = Filters()
