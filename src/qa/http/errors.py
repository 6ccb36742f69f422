"""Errors of the HTTP API: every one is a JSON body ``{"error": kind, "detail": what to do}``.

:class:`ApiError` is what routes raise; :func:`qa_error_status` maps the library's
:class:`~qa.errors.QAError` kinds to a status and a name; :func:`add_error_handlers` installs the
handlers that turn exceptions (ours, FastAPI's validation errors, Starlette's 404/405, crashes) into
those bodies.
"""

import logging
import sys
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import iter_route_contexts
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from qa.errors import (
    ConfigError,
    DocumentError,
    IndexMismatchError,
    ModelError,
    NotFoundError,
    QAError,
    QueryError,
    StoreError,
)
from qa.http import models as m

logger = logging.getLogger(__name__)

_STATUS: list[tuple[type[QAError], int, str]] = [
    (QueryError, 400, "invalid_query"),
    (ConfigError, 400, "invalid_setting"),
    (NotFoundError, 404, "not_found"),
    (IndexMismatchError, 409, "index_mismatch"),
    (DocumentError, 422, "invalid_document"),
    (StoreError, 503, "store_unavailable"),
    (ModelError, 503, "model_unavailable"),
]

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {status: {"model": m.Error} for status in (400, 401, 404, 413, 422, 503)}
"""The error statuses the OpenAPI schema documents for the search, ask and documents routes."""


class ApiError(Exception):
    """An error a route reports as is: its status, its ``error`` name, its ``detail``, and headers."""

    def __init__(self, status: int, error: str, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status, self.error, self.detail, self.headers = status, error, detail, headers


def error_response(status: int, error: str, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": error, "detail": detail}, status_code=status, headers=headers)


def qa_error_status(exc: QAError) -> tuple[int, str]:
    """The HTTP status and ``error`` name of a library error."""
    for kind, status, name in _STATUS:
        if isinstance(exc, kind):
            return status, name
    llm = sys.modules.get("qa.answering.llm")  # loaded whenever an LLM answerer could have failed
    if llm is not None and isinstance(exc, llm.LLMError):
        return 502, "llm_unavailable"
    return 400, "invalid_request"


def _allowed_methods(request: Request) -> set[str]:
    """Every method the request's path has, over all routes, those of included routers too (FastAPI keeps
    those behind one lazy entry of ``app.routes``; ``iter_route_contexts`` walks them as routing sees them)."""
    return {
        method
        for route in iter_route_contexts(request.app.routes)
        if route.methods and route.matches(request.scope)[0] != Match.NONE
        for method in route.methods
    }


async def on_api_error(request: Request, exc: ApiError) -> JSONResponse:
    return error_response(exc.status, exc.error, exc.detail, exc.headers)


async def on_qa_error(request: Request, exc: QAError) -> JSONResponse:
    status, name = qa_error_status(exc)
    return error_response(status, name, str(exc))


async def on_invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
    problems = exc.errors()
    if any(p.get("type") == "json_invalid" for p in problems):
        return error_response(
            400, "malformed_json", "the body is not valid JSON: send a JSON object (Content-Type: application/json)"
        )
    parts = []
    for p in problems[:10]:
        where = ".".join(str(x) for x in p.get("loc", ())[1:]) or "body"
        parts.append(f"{where}: {p.get('msg', 'invalid')}")
    return error_response(422, "invalid_request", "; ".join(parts))


async def on_http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    name = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    headers = dict(getattr(exc, "headers", None) or {})
    if exc.status_code == 405:  # every method the path has, not only those of the first route that matched it
        headers["Allow"] = ", ".join(sorted(_allowed_methods(request)))
    return error_response(exc.status_code, name, str(exc.detail), headers or None)


async def on_crash(request: Request, exc: Exception) -> JSONResponse:
    if type(exc).__module__.split(".")[0] in ("chromadb", "httpx", "httpcore"):
        logger.error("Chroma failed: %s", exc)
        return error_response(503, "store_unavailable", f"the vector store did not answer ({type(exc).__name__}): retry later")
    if type(exc).__module__.split(".")[0] == "psycopg":
        logger.error("PostgreSQL failed: %s", exc)
        return error_response(503, "store_unavailable", f"the database did not answer ({type(exc).__name__}): retry later")
    logger.exception("internal error on %s %s", request.method, request.url.path)
    return error_response(500, "internal", "internal error: see the server's log")


def add_error_handlers(app: FastAPI) -> None:
    """Install the handlers: our errors, the library's, invalid requests, unknown routes and methods, crashes."""
    app.exception_handler(ApiError)(on_api_error)
    app.exception_handler(QAError)(on_qa_error)
    app.exception_handler(RequestValidationError)(on_invalid)
    app.exception_handler(StarletteHTTPException)(on_http)
    app.exception_handler(Exception)(on_crash)
