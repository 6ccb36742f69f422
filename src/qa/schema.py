"""The data objects of the public API: what search, ask and ingest return.

They are plain dataclasses that serialise to JSON (``to_dict``) for the CLI's
``--json`` output and the HTTP API.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class ArticleMeta:
    """What every chunk of an article carries: one value from :class:`qa.documents.Article` through the writer to
    the vector store, the lexical index, the manifest and back in each :class:`Passage` (``Passage.meta``)."""

    doc_id: str
    title: str = ""
    source: str = ""
    url: str = ""
    date: str = ""
    """``YYYY-MM-DD`` or empty (the loaders normalise it)."""

    @property
    def date_num(self) -> int:
        """``date`` as ``YYYYMMDD`` (what stores compare), 0 when undated."""
        digits = self.date[:10].replace("-", "")
        return int(digits) if len(digits) == 8 and digits.isdigit() else 0

    def as_dict(self) -> dict[str, str]:
        return {"doc_id": self.doc_id, "title": self.title, "source": self.source, "url": self.url, "date": self.date}


@dataclass
class Passage:
    """One retrieved chunk of an article."""

    doc_id: str
    chunk_id: str
    text: str
    title: str = ""
    source: str = ""
    url: str = ""
    date: str = ""
    score: float = 0.0
    start: int = 0
    """Character offset of the chunk inside its article's text."""
    end: int = 0

    @property
    def meta(self) -> ArticleMeta:
        """The metadata of the passage's article."""
        return ArticleMeta(self.doc_id, self.title, self.source, self.url, self.date)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Citation:
    """The passage an answer rests on and the exact sentence(s) quoted from it."""

    passage: Passage
    quote: str
    """A verbatim substring of ``passage.text``."""
    start: int = 0
    """Offset of ``quote`` inside ``passage.text``."""
    end: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"passage": self.passage.to_dict(), "quote": self.quote, "start": self.start, "end": self.end}


@dataclass
class Answer:
    """What ``KnowledgeBase.ask`` returns."""

    text: str
    citations: list[Citation] = field(default_factory=list)
    passages: list[Passage] = field(default_factory=list)
    abstained: bool = False
    """True when the corpus does not hold the answer (``text`` then says so)."""
    confidence: float | None = None
    """The answerer's confidence in [0, 1], when it has one."""
    short_answer: str = ""
    """The bare answer span (« novembre 1994 ») when one was found, for evaluation."""
    question: str = ""
    """The question actually answered (a follow-up rewritten as a standalone question)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "citations": [c.to_dict() for c in self.citations],
            "passages": [p.to_dict() for p in self.passages],
            "abstained": self.abstained,
            "confidence": self.confidence,
            "short_answer": self.short_answer,
            "question": self.question,
        }


@dataclass
class Skipped:
    """An input that was not ingested, and why."""

    path: str
    reason: str
    line: int | None = None

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line is not None else self.path
        return f"{where}: {self.reason}"


@dataclass
class IngestReport:
    """The outcome of ``KnowledgeBase.ingest``: article ids by outcome."""

    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    errors: list[Skipped] = field(default_factory=list)
    """Inputs that failed (bad file, bad record); ``skipped`` holds the benign skips."""
    pruned: list[str] = field(default_factory=list)
    """Articles removed because their files are gone (``ingest(..., prune=True)``)."""
    chunks_written: int = 0
    seconds: float = 0.0
    job: int | None = None
    """The ingest queue's job (the shared PostgreSQL backend only): ``qa info`` follows it."""
    queued: int = 0
    """Articles enqueued in :attr:`job` (``qa worker`` processes write them)."""

    @property
    def ok(self) -> bool:
        return not self.errors

    def summary(self) -> str:
        rate = self.chunks_written / self.seconds if self.seconds > 0 else 0.0
        return (
            f"{len(self.added)} added, {len(self.updated)} updated, "
            f"{len(self.unchanged)} unchanged, {len(self.skipped)} skipped, "
            f"{len(self.errors)} errors{f', {len(self.pruned)} pruned' if self.pruned else ''}; "
            f"{self.chunks_written} chunks written "
            f"in {self.seconds:.1f}s ({rate:.1f} chunks/s)"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "added": self.added,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "skipped": [asdict(s) for s in self.skipped],
            "errors": [asdict(s) for s in self.errors],
            "pruned": self.pruned,
            "chunks_written": self.chunks_written,
            "seconds": round(self.seconds, 3),
            **({"job": self.job, "queued": self.queued} if self.job is not None else {}),
        }
