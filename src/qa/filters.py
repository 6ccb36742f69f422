"""The search filters, as one frozen value validated once: which sources, which dates, which articles left out.

Every face builds a :class:`Filters` from what the user gave (keyword arguments of
``KnowledgeBase.search``/``ask`` or a ``Filters`` value, CLI flags, the HTTP request's ``filters``,
the UI's sidebar) with :meth:`Filters.of`, which raises :class:`~qa.errors.QueryError` naming the bad
field. Each store translates it into its own dialect: Chroma's ``where`` clause
(:func:`qa.index.store.chroma_where`), SQL over the lexical tables (:mod:`qa.index.lexical`,
:mod:`qa.index.postgres.lexical`). It sits below ``index`` and ``retrieval`` so that both (and
``answering``) use the one value.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from qa.errors import QueryError

FILTER_NAMES = ("source", "date_from", "date_to", "exclude")


def date_number(value: str, name: str = "date") -> int:
    """``YYYY-MM-DD`` → ``YYYYMMDD`` (stores compare numbers, not strings)."""
    try:
        d = date.fromisoformat(str(value)[:10])
    except ValueError:
        raise QueryError(f"filter {name}={value!r} is not a date: write it as YYYY-MM-DD") from None
    return d.year * 10000 + d.month * 100 + d.day


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

    @property
    def date_from_num(self) -> int | None:
        """``date_from`` as ``YYYYMMDD`` (None when unset)."""
        return date_number(self.date_from) if self.date_from else None

    @property
    def date_to_num(self) -> int | None:
        """``date_to`` as ``YYYYMMDD`` (None when unset); a store leaves undated articles (0) out of any range."""
        return date_number(self.date_to) if self.date_to else None


NO_FILTERS = Filters()
