"""Request and response models of the HTTP API (:mod:`qa.http.app`).

The response models mirror the dataclasses of :mod:`qa.schema` field for field
(``Passage``, ``Citation``, ``Answer``, ``IngestReport``): the JSON is the same as
``to_dict()`` and as the CLI's ``--json`` output.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, Strict, StringConstraints, create_model

MAX_QUESTION_CHARS = 2000
"""Longer questions are refused (422): a question is a sentence, not a document."""
MAX_API_K = 100
"""Most passages one request may ask for."""
MAX_HISTORY = 20
"""Most previous turns an ``/ask`` request may carry."""
MAX_BATCH = 500
"""Most articles one ``POST /documents`` may carry."""
MAX_ID_CHARS = 512
MAX_ANSWER_CHARS = 4000
"""An earlier answer in ``history``: with 20 turns, any valid request stays under the 2 MiB body limit."""
VISIBLE = r"[^\s\x1c-\x1f\u00ad\u200b-\u200d\u2060\ufeff]"
"""At least one character that text normalisation keeps (not a blank, not an invisible character)."""


def _text(value: Any) -> Any:
    if not isinstance(value, str):  # pydantic would read a number as a Unix time
        raise ValueError("write dates as strings: YYYY-MM-DD")
    return value


Day = Annotated[date, BeforeValidator(_text)]
"""``YYYY-MM-DD``, as a string."""
Stamp = Annotated[datetime, BeforeValidator(_text)]
Question = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_QUESTION_CHARS)]
Short = Annotated[str, StringConstraints(max_length=2000)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Filters(_Strict):
    """Restrict retrieval to some sources and/or a date range (articles' ``date``)."""

    # the routes turn it into one qa.retrieval.filters.Filters value (qa.http.routes_questions.request_filters);
    # the docstring is the schema's description

    source: list[Annotated[str, StringConstraints(min_length=1, max_length=200)]] | None = Field(
        None, max_length=50, description="only these sources (an article's `source` field)", examples=[["Astana Times"]]
    )
    date_from: Day | None = Field(None, description="only articles dated on or after (YYYY-MM-DD)")
    date_to: Day | None = Field(None, description="only articles dated on or before (YYYY-MM-DD)")


class SearchRequest(_Strict):
    question: Question = Field(examples=["Quand le bureau de l'UE a-t-il ouvert à Almaty ?"])
    k: int = Field(5, ge=1, le=MAX_API_K, description="number of passages")
    filters: Filters | None = None
    mode: Literal["hybrid", "rerank", "dense", "lexical"] | None = Field(
        None, description="retrieval mode (default: the server's QA_RETRIEVAL)"
    )


class Turn(_Strict):
    """One earlier exchange of the conversation."""

    question: Annotated[str, StringConstraints(max_length=MAX_QUESTION_CHARS)]
    answer: Annotated[str, StringConstraints(max_length=MAX_ANSWER_CHARS)] = ""


class AskRequest(_Strict):
    question: Question = Field(examples=["Quand le bureau de l'UE a-t-il ouvert à Almaty ?"])
    history: list[Turn] = Field(default_factory=list, max_length=MAX_HISTORY, description="earlier turns, oldest first")
    k: int = Field(5, ge=1, le=MAX_API_K, description="passages read")
    filters: Filters | None = None
    answerer: Annotated[str, StringConstraints(max_length=200)] | None = Field(
        None, description="`extractive` or the server's configured QA_ANSWERER (default); others are refused"
    )


def ask_request_model(answerers: Sequence[str]) -> type[AskRequest]:
    """:class:`AskRequest` whose ``answerer`` lists the answerers this server allows, so the schema says it."""
    choice: Any = Literal[tuple(answerers)]
    description = "default: the server's QA_ANSWERER; no other answerer can be asked for"
    return create_model("AskRequest", __base__=AskRequest, answerer=(choice | None, Field(None, description=description)))


class ArticleMetaOut(BaseModel):
    """An article's metadata (:class:`qa.schema.ArticleMeta`), as every passage and document carries it."""

    title: str = ""
    source: str = ""
    url: str = ""
    date: str = Field("", description="YYYY-MM-DD, or empty when undated")


class PassageOut(ArticleMetaOut):
    doc_id: str
    chunk_id: str
    text: str
    score: float = 0.0
    start: int = Field(0, description="character offset of the chunk inside its article")
    end: int = 0


class CitationOut(BaseModel):
    passage: PassageOut
    quote: str = Field(description="a verbatim substring of passage.text")
    start: int = Field(0, description="offset of quote inside passage.text")
    end: int = 0


class AnswerOut(BaseModel):
    text: str
    citations: list[CitationOut] = []
    passages: list[PassageOut] = []
    abstained: bool = False
    confidence: float | None = None
    short_answer: str = ""
    question: str = Field("", description="the question actually answered (a follow-up rewritten as a standalone one)")


class ArticleIn(_Strict):
    """One article, with the fields of the JSON Lines ingest format."""

    id: Annotated[str, StringConstraints(min_length=1, max_length=MAX_ID_CHARS, pattern=VISIBLE)] | Annotated[int, Strict()]
    text: Annotated[str, StringConstraints(min_length=1, pattern=VISIBLE)]
    title: Short | None = None
    date: Day | Stamp | None = Field(None, examples=["2022-02-07"], description="the day is kept")
    url: Short | None = None
    source: Annotated[str, StringConstraints(max_length=200)] | None = None


class SkippedOut(BaseModel):
    path: str
    reason: str
    line: int | None = None


class IngestReportOut(BaseModel):
    added: list[str]
    updated: list[str]
    unchanged: list[str]
    skipped: list[SkippedOut]
    errors: list[SkippedOut]
    chunks_written: int
    seconds: float


class DocumentSummary(ArticleMetaOut):
    id: str
    chunks: int
    ingested_at: str


class DocumentOut(DocumentSummary):
    text: str


class DocumentPage(BaseModel):
    total: int
    offset: int
    limit: int
    documents: list[DocumentSummary]


class Deleted(BaseModel):
    deleted: str


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class Ready(BaseModel):
    ready: bool
    detail: str = ""
    backends: dict[str, str] = Field(
        default_factory=dict,
        description="each backend's answer to a read just now: `database` (SQLite or PostgreSQL), `vectors` (Chroma): "
        "`ok` or the error",
    )


class Info(BaseModel):
    version: str
    model: str
    articles: int
    chunks: int
    dimension: int | None = None
    retrieval: str
    answerer: str
    store: str = Field(description="`embedded` or the Chroma server's URL")
    database: str = Field("sqlite", description="`sqlite` (files beside the index) or the PostgreSQL URL, without password")
    queue: dict[str, Any] | None = Field(
        None,
        description="the shared ingest queue (PostgreSQL): articles `queued`, `claimed`, `done`, `failed`, and the live "
        "`workers`",
    )
    ready: bool


class Error(BaseModel):
    error: str = Field(description="the kind of error, e.g. `not_found`, `invalid_request`, `unauthorized`")
    detail: str = Field(description="what went wrong and how to fix it")
