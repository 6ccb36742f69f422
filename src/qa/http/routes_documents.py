"""The article routes (OpenAPI tag ``documents``): list, read, add or update, delete.

Writes run on the service's single writer thread: two writes never interleave, and readers go on.
"""

from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Body, Path, Query
from pydantic import Field

from qa.errors import DocumentError
from qa.http import models as m
from qa.http.errors import ERROR_RESPONSES, ApiError
from qa.http.service import GUARD, ServiceDep

if TYPE_CHECKING:
    from qa.index.manifest import ArticleRecord

router = APIRouter(tags=["documents"], dependencies=GUARD, responses=ERROR_RESPONSES)

DocId = Annotated[str, Path(min_length=1, max_length=m.MAX_ID_CHARS, description="the article's id")]


def summary(record: "ArticleRecord", with_text: bool = False) -> dict[str, Any]:
    """An indexed article as the API shows it (:class:`~qa.http.models.DocumentSummary`, or
    :class:`~qa.http.models.DocumentOut` ``with_text``)."""
    meta = record.meta.as_dict()
    out: dict[str, Any] = {
        "id": meta.pop("doc_id"),
        **meta,
        "chunks": len(record.chunk_ids),
        "ingested_at": record.ingested_at,
    }
    if with_text:
        out["text"] = record.text
    return out


@router.get("/documents", response_model=m.DocumentPage)
async def list_documents(
    service: ServiceDep,
    offset: Annotated[int, Query(ge=0, le=1_000_000_000)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> dict[str, Any]:
    """The indexed articles, ordered by id, one page at a time (no text)."""
    base = service.get_kb()
    total, page = await service.read(base.list_documents, offset, limit)
    return {"total": total, "offset": offset, "limit": limit, "documents": [summary(r) for r in page]}


@router.get("/documents/{doc_id:path}", response_model=m.DocumentOut)
async def get_document(doc_id: DocId, service: ServiceDep) -> dict[str, Any]:
    """One article: metadata and full text."""
    base = service.get_kb()
    return summary(await service.read(base.article, doc_id), with_text=True)


@router.post("/documents", response_model=m.IngestReportOut)
async def add_documents(
    body: Annotated[m.ArticleIn | Annotated[list[m.ArticleIn], Field(min_length=1, max_length=m.MAX_BATCH)], Body()],
    service: ServiceDep,
) -> dict[str, Any]:
    """Add or update one article or a batch (the JSON Lines fields). Every article is checked
    first: one invalid article refuses the whole request (422) and nothing is written."""
    from qa.documents import Article, parse_jsonl_record

    base = service.get_kb()
    given = body if isinstance(body, list) else [body]
    articles: list[Article] = []
    problems: list[str] = []
    for i, item in enumerate(given):
        try:
            article = parse_jsonl_record(item.model_dump(mode="json", exclude_none=True), "request", i)
        except DocumentError as exc:
            problems.append(f"article {i} ({item.id!r}): {exc.reason}" if len(given) > 1 else exc.reason)
            continue
        article.path = ""  # posted articles come from no file
        articles.append(article)
    if problems:
        raise ApiError(422, "invalid_document", "; ".join(problems[:20]) + " — nothing was written")
    report = await service.write(base.add_articles, articles)
    return report.to_dict()


@router.delete("/documents/{doc_id:path}", response_model=m.Deleted)
async def delete_document(doc_id: DocId, service: ServiceDep) -> dict[str, Any]:
    """Remove an article and all its chunks."""
    base = service.get_kb()
    await service.write(base.delete, doc_id)
    return {"deleted": doc_id}
