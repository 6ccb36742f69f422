"""The question routes (OpenAPI tag ``questions``): ``/search``, ``/ask`` and ``/ask/stream``.

``/ask`` takes the server's own request model (:func:`qa.http.models.ask_request_model`: its
``answerer`` lists the answerers this server allows), so the router is made per app by
:func:`questions_router`. The request's ``filters`` become one validated
:class:`~qa.retrieval.filters.Filters` value before any work starts.
"""

import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from fastapi import APIRouter
from fastapi.responses import StreamingResponse

from qa.errors import QAError
from qa.http import models as m
from qa.http.errors import ERROR_RESPONSES, ApiError, qa_error_status
from qa.http.service import GUARD, ServiceDep
from qa.retrieval.filters import NO_FILTERS, Filters

if TYPE_CHECKING:
    from qa.kb import KnowledgeBase

logger = logging.getLogger(__name__)

Endpoint = TypeVar("Endpoint", bound=Callable[..., Any])


def request_filters(filters: m.Filters | None) -> Filters:
    """The request's filters as one validated value (a :class:`~qa.errors.QueryError`, 400, if one is invalid)."""
    if filters is None:
        return NO_FILTERS
    return Filters.of(source=filters.source, date_from=filters.date_from, date_to=filters.date_to)


def ask_args(req: m.AskRequest, base: "KnowledgeBase") -> dict[str, Any]:
    """``KnowledgeBase.ask`` keyword arguments for a request: 400 for an answerer the server did not enable
    or an invalid filter, before anything runs."""
    allowed = {"extractive", base.settings.answerer}
    if req.answerer is not None and req.answerer not in allowed:
        raise ApiError(
            400,
            "answerer_not_enabled",
            f"answerer {req.answerer!r} is not enabled on this server: use one of {', '.join(sorted(allowed))} "
            "(the server's QA_ANSWERER sets which)",
        )
    history = [(t.question, t.answer) for t in req.history]
    return {"history": history, "k": req.k, "answerer": req.answerer, **request_filters(req.filters).as_kwargs()}


def _sse(event: str, data: Any) -> str:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


def _reads(model: type[m.AskRequest], endpoint: Endpoint) -> Endpoint:
    """``endpoint`` with its ``req`` body read as ``model``: FastAPI takes the body's validation and schema from
    the annotation, and this server's request model is only known when its app is made."""
    endpoint.__annotations__["req"] = model
    return endpoint


async def search(req: m.SearchRequest, service: ServiceDep) -> list[dict[str, Any]]:
    """The `k` passages that best answer the question, best first."""
    base = service.get_kb()
    filters = request_filters(req.filters)
    hits = await service.read(base.search, req.question, req.k, mode=req.mode, **filters.as_kwargs())
    return [p.to_dict() for p in hits]


def questions_router(ask_request: type[m.AskRequest] = m.AskRequest) -> APIRouter:
    """The routes, ``/ask`` and ``/ask/stream`` reading ``ask_request`` bodies."""
    router = APIRouter(tags=["questions"], dependencies=GUARD, responses=ERROR_RESPONSES)
    router.post("/search", response_model=list[m.PassageOut])(search)

    async def ask(req: m.AskRequest, service: ServiceDep) -> dict[str, Any]:
        """An answer with citations (verbatim quotes of the passages), or an abstention."""
        base = service.get_kb()
        answer = await service.read(base.ask, req.question, **ask_args(req, base))
        return answer.to_dict()

    async def ask_stream(req: m.AskRequest, service: ServiceDep) -> StreamingResponse:
        """Server-sent events: `token` events (`{"text": …}`) as an LLM writes, then one `answer`
        event with the whole Answer (citations included); an `error` event if it fails midway."""
        base = service.get_kb()
        args = ask_args(req, base)  # 400 before streaming
        items = iter(await service.read(base.ask_stream, req.question, **args))
        done = object()

        async def events() -> AsyncIterator[str]:
            try:
                while (item := await service.read(next, items, done)) is not done:
                    yield _sse("token", {"text": item}) if isinstance(item, str) else _sse("answer", item.to_dict())
            except QAError as exc:
                yield _sse("error", {"error": qa_error_status(exc)[1], "detail": str(exc)})
            except Exception:  # noqa: BLE001 - the status line is sent already: report in the stream
                logger.exception("ask/stream failed")
                yield _sse("error", {"error": "internal", "detail": "internal error: see the server's log"})

        return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    router.post("/ask", response_model=m.AnswerOut)(_reads(ask_request, ask))
    router.post(
        "/ask/stream",
        response_class=StreamingResponse,
        responses={200: {"content": {"text/event-stream": {}}, "description": "server-sent events"}},
    )(_reads(ask_request, ask_stream))
    return router
