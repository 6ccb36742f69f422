"""The HTTP API: a FastAPI app over :class:`~qa.kb.KnowledgeBase` (``qa serve``).

``create_app(kb=None, settings=None)`` builds the app. Given no ``kb`` it opens the
index of ``settings`` (``QA_INDEX_DIR``, ``QA_CHROMA_URL``…) in a background thread at
start-up and warms the model; ``/health`` answers at once, ``/ready`` once the model is
loaded. Tests pass a KnowledgeBase built with a fake embedder.

Blocking work (model inference, Chroma, SQLite) never runs on the event loop: reads go
to a pool of worker threads, writes (``POST``/``DELETE /documents``) to a single writer
thread, so one ingest never locks readers out and two writes never interleave.

When ``QA_API_TOKEN`` is set every route but ``/health`` (and the schema pages ``/docs``,
``/redoc``, ``/openapi.json``, which hold no data) requires ``Authorization: Bearer <token>``.
"""

import asyncio
import hmac
import json
import logging
import sys
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Annotated, Any, TypeVar

from fastapi import Body, Depends, FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from qa.config import Settings, load_settings
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

T = TypeVar("T")
SMALL_BODY_BYTES = 2 << 20
"""Largest body for every route but ``POST /documents`` (whose limit is ``QA_MAX_FILE_MB``)."""

_STATUS: list[tuple[type[QAError], int, str]] = [
    (QueryError, 400, "invalid_query"),
    (ConfigError, 400, "invalid_setting"),
    (NotFoundError, 404, "not_found"),
    (IndexMismatchError, 409, "index_mismatch"),
    (DocumentError, 422, "invalid_document"),
    (StoreError, 503, "store_unavailable"),
    (ModelError, 503, "model_unavailable"),
]


class ApiError(Exception):
    def __init__(self, status: int, error: str, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status, self.error, self.detail, self.headers = status, error, detail, headers


def _error(status: int, error: str, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": error, "detail": detail}, status_code=status, headers=headers)


def qa_error_status(exc: QAError) -> tuple[int, str]:
    for kind, status, name in _STATUS:
        if isinstance(exc, kind):
            return status, name
    llm = sys.modules.get("qa.answering.llm")  # loaded whenever an LLM answerer could have failed
    if llm is not None and isinstance(exc, llm.LLMError):
        return 502, "llm_unavailable"
    return 400, "invalid_request"


def open_kb(settings: Settings) -> Any:
    """The KnowledgeBase a server uses: documents embedded in slices of 8 under the model's lock,
    so a search waits for one slice of an ingest, not for all of it."""
    from qa.kb import KnowledgeBase

    return KnowledgeBase.open(settings=settings, embed_slice=8)


class Service:
    """What the routes share: the KnowledgeBase, its readiness, the worker threads."""

    def __init__(self, kb: Any, settings: Settings, *, warm: bool, threads: int) -> None:
        self.kb = kb
        self.settings = settings
        self.owns_kb = kb is None
        self.warm = warm
        self.ready = False
        self.problem = "starting: opening the index and loading the model"
        self.threads = threads
        self._pools: dict[str, ThreadPoolExecutor] = {}
        self._pools_lock = threading.Lock()

    def pool(self, name: str) -> ThreadPoolExecutor:
        """``read`` (``threads`` workers) or ``write`` (one: writes never interleave); made on first use."""
        with self._pools_lock:
            if name not in self._pools:
                size = self.threads if name == "read" else 1
                self._pools[name] = ThreadPoolExecutor(size, thread_name_prefix=f"qa-{name}")
            return self._pools[name]

    def start(self) -> None:
        """Open the index (unless given one) and warm the model; runs in a background thread."""
        try:
            if self.kb is None:
                self.kb = open_kb(self.settings)
            if self.warm:
                self.kb.warm()
            self.ready, self.problem = True, ""
            logger.info("qa API ready: %s", self.kb.stats()["model"])
        except QAError as exc:
            self.problem = f"the index cannot be opened: {exc}"
            logger.error("%s", self.problem)
        except Exception as exc:  # noqa: BLE001 - reported by /ready, the server stays up
            self.problem = f"start-up failed: {type(exc).__name__}: {exc}"
            logger.exception("qa API start-up failed")

    def close(self) -> None:
        with self._pools_lock:
            pools, self._pools = self._pools, {}
        for name, pool in pools.items():
            pool.shutdown(wait=name == "write", cancel_futures=name == "read")
        if self.owns_kb and self.kb is not None:
            self.kb.close()
            self.kb, self.ready = None, False

    def get_kb(self) -> Any:
        if self.kb is None:
            raise ApiError(503, "not_ready", f"{self.problem}; retry when GET /ready says ready", {"Retry-After": "2"})
        return self.kb

    async def read(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.pool("read"), lambda: fn(*args, **kwargs))

    async def write(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.pool("write"), lambda: fn(*args, **kwargs))


class BodyLimit:
    """ASGI middleware: refuses bodies over the limit with 413 before any route reads them."""

    def __init__(self, app: Any, small: int, documents: int) -> None:
        self.app, self.small, self.documents = app, small, documents

    async def __call__(self, scope: dict[str, Any], receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = self.documents if scope["path"].rstrip("/") == "/documents" else self.small
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            return await self._refuse(scope, receive, send, limit)
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return None
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > limit:
                return await self._refuse(scope, receive, send, limit)
            if not message.get("more_body"):
                break
        replayed = False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, scope: dict[str, Any], receive: Callable, send: Callable, limit: int) -> None:
        detail = f"the request body is over the {limit:,} bytes limit: send less (fewer articles per POST /documents)"
        await _error(413, "body_too_large", detail)(scope, receive, send)


def _filters(f: m.Filters | None) -> dict[str, Any]:
    return f.as_kwargs() if f else {}


def _sse(event: str, data: Any) -> str:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


def _summary(record: Any, with_text: bool = False) -> dict[str, Any]:
    out = {
        "id": record.doc_id,
        "title": record.title,
        "date": record.date,
        "url": record.url,
        "source": record.source,
        "chunks": len(record.chunk_ids),
        "ingested_at": record.ingested_at,
    }
    if with_text:
        out["text"] = record.text
    return out


def _routes(routes: Any) -> Any:
    """Every endpoint route, looking inside included routers."""
    for route in routes:
        if getattr(route, "methods", None):
            yield route
        elif getattr(route, "routes", None):
            yield from _routes(route.routes)


_ERRORS = {status: {"model": m.Error} for status in (400, 401, 404, 413, 422, 503)}
DocId = Annotated[str, Path(min_length=1, max_length=m.MAX_ID_CHARS, description="the article's id")]


def create_app(
    kb: Any = None,
    settings: Settings | None = None,
    *,
    warm: bool = True,
    threads: int = 4,
    max_body_bytes: int | None = None,
) -> FastAPI:
    """The FastAPI app. ``kb``: a ready KnowledgeBase (else opened from ``settings`` at start-up);
    ``threads``: worker threads for searches and answers; ``max_body_bytes``: the ``POST /documents``
    body limit (default ``QA_MAX_FILE_MB``)."""
    from qa import __version__

    settings = settings or (kb.settings if kb is not None else load_settings())
    service = Service(kb, settings, warm=warm, threads=threads)
    AskRequest = m.ask_request_model(sorted({"extractive", (kb.settings if kb is not None else settings).answerer}))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        threading.Thread(target=service.start, name="qa-start", daemon=True).start()
        yield
        service.close()

    app = FastAPI(
        title="qa",
        version=__version__,
        description="Questions over a news corpus, French first: search passages, cited answers, manage articles.",
        lifespan=lifespan,
    )
    app.state.service = service
    app.add_middleware(BodyLimit, small=SMALL_BODY_BYTES, documents=max_body_bytes or int(settings.max_file_mb * 1_000_000))
    bearer = HTTPBearer(auto_error=False, description="`Authorization: Bearer <QA_API_TOKEN>` when the server sets one")
    token = (settings.api_token or "").encode("utf-8")

    def authorise(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> None:
        if not token:
            return
        given = credentials.credentials.encode("utf-8") if credentials else b""
        if not hmac.compare_digest(given, token):
            raise ApiError(
                401,
                "unauthorized",
                "missing or wrong token: send `Authorization: Bearer <QA_API_TOKEN>`",
                {"WWW-Authenticate": "Bearer"},
            )

    @app.exception_handler(ApiError)
    async def on_api_error(request: Request, exc: ApiError) -> JSONResponse:
        return _error(exc.status, exc.error, exc.detail, exc.headers)

    @app.exception_handler(QAError)
    async def on_qa_error(request: Request, exc: QAError) -> JSONResponse:
        status, name = qa_error_status(exc)
        return _error(status, name, str(exc))

    @app.exception_handler(RequestValidationError)
    async def on_invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = exc.errors()
        if any(p.get("type") == "json_invalid" for p in problems):
            return _error(
                400, "malformed_json", "the body is not valid JSON: send a JSON object (Content-Type: application/json)"
            )
        parts = []
        for p in problems[:10]:
            where = ".".join(str(x) for x in p.get("loc", ())[1:]) or "body"
            parts.append(f"{where}: {p.get('msg', 'invalid')}")
        return _error(422, "invalid_request", "; ".join(parts))

    @app.exception_handler(StarletteHTTPException)
    async def on_http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        name = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        headers = dict(getattr(exc, "headers", None) or {})
        if exc.status_code == 405:  # every method the path has, not only those of the first route that matched it
            methods = {x for r in _routes(request.app.routes) if r.matches(request.scope)[0] != Match.NONE for x in r.methods}
            headers["Allow"] = ", ".join(sorted(methods))
        return _error(exc.status_code, name, str(exc.detail), headers or None)

    @app.exception_handler(Exception)
    async def on_crash(request: Request, exc: Exception) -> JSONResponse:
        if type(exc).__module__.split(".")[0] in ("chromadb", "httpx", "httpcore"):
            logger.error("Chroma failed: %s", exc)
            return _error(503, "store_unavailable", f"the vector store did not answer ({type(exc).__name__}): retry later")
        logger.exception("internal error on %s %s", request.method, request.url.path)
        return _error(500, "internal", "internal error: see the server's log")

    @app.get("/health", response_model=m.Health, tags=["service"])
    async def health() -> dict[str, Any]:
        """Liveness: the process answers (no token needed)."""
        return {"status": "ok"}

    guard = [Depends(authorise)]  # every route below /health needs the token, when one is set

    @app.get(
        "/ready",
        dependencies=guard,
        response_model=m.Ready,
        responses={401: {"model": m.Error}, 503: {"model": m.Ready}},
        tags=["service"],
    )
    async def ready() -> Any:
        """Readiness: the index is open and the model loaded (503 until then)."""
        if service.ready:
            return {"ready": True, "detail": ""}
        return JSONResponse({"ready": False, "detail": service.problem}, status_code=503)

    @app.get(
        "/info",
        dependencies=guard,
        response_model=m.Info,
        responses={401: {"model": m.Error}, 503: {"model": m.Error}},
        tags=["service"],
    )
    async def info() -> dict[str, Any]:
        """The model, the counts, the version."""
        base = service.get_kb()
        stats = await service.read(base.stats)
        return {
            "version": __version__,
            "model": stats["model"],
            "articles": stats["articles"],
            "chunks": stats["chunks"],
            "dimension": stats.get("dimension"),
            "retrieval": base.settings.retrieval,
            "answerer": base.settings.answerer,
            "store": base.settings.chroma_url or "embedded",
            "ready": service.ready,
        }

    @app.post("/search", dependencies=guard, response_model=list[m.PassageOut], responses=_ERRORS, tags=["questions"])
    async def search(req: m.SearchRequest) -> list[dict[str, Any]]:
        """The `k` passages that best answer the question, best first."""
        base = service.get_kb()
        hits = await service.read(base.search, req.question, req.k, mode=req.mode, **_filters(req.filters))
        return [p.to_dict() for p in hits]

    def ask_args(req: AskRequest, base: Any) -> dict[str, Any]:
        allowed = {"extractive", base.settings.answerer}
        if req.answerer is not None and req.answerer not in allowed:
            raise ApiError(
                400,
                "answerer_not_enabled",
                f"answerer {req.answerer!r} is not enabled on this server: use one of {', '.join(sorted(allowed))} "
                "(the server's QA_ANSWERER sets which)",
            )
        history = [(t.question, t.answer) for t in req.history]
        return {"history": history, "k": req.k, "answerer": req.answerer, **_filters(req.filters)}

    @app.post("/ask", dependencies=guard, response_model=m.AnswerOut, responses=_ERRORS, tags=["questions"])
    async def ask(req: AskRequest) -> dict[str, Any]:
        """An answer with citations (verbatim quotes of the passages), or an abstention."""
        base = service.get_kb()
        answer = await service.read(base.ask, req.question, **ask_args(req, base))
        return answer.to_dict()

    @app.post(
        "/ask/stream",
        dependencies=guard,
        response_class=StreamingResponse,
        responses={200: {"content": {"text/event-stream": {}}, "description": "server-sent events"}, **_ERRORS},
        tags=["questions"],
    )
    async def ask_stream(req: AskRequest) -> StreamingResponse:
        """Server-sent events: `token` events (`{"text": …}`) as an LLM writes, then one `answer`
        event with the whole Answer (citations included); an `error` event if it fails midway."""
        from qa.index.store import build_where

        base = service.get_kb()
        args = ask_args(req, base)
        filters = _filters(req.filters)
        build_where(filters.get("source"), filters.get("date_from"), filters.get("date_to"))  # 400 before streaming
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

    @app.get("/documents", dependencies=guard, response_model=m.DocumentPage, responses=_ERRORS, tags=["documents"])
    async def list_documents(
        offset: Annotated[int, Query(ge=0, le=1_000_000_000)] = 0, limit: Annotated[int, Query(ge=1, le=500)] = 50
    ) -> dict[str, Any]:
        """The indexed articles, ordered by id, one page at a time (no text)."""
        base = service.get_kb()
        total, page = await service.read(base.list_documents, offset, limit)
        return {"total": total, "offset": offset, "limit": limit, "documents": [_summary(r) for r in page]}

    @app.get("/documents/{doc_id:path}", dependencies=guard, response_model=m.DocumentOut, responses=_ERRORS, tags=["documents"])
    async def get_document(doc_id: DocId) -> dict[str, Any]:
        """One article: metadata and full text."""
        base = service.get_kb()
        return _summary(await service.read(base.article, doc_id), with_text=True)

    @app.post("/documents", dependencies=guard, response_model=m.IngestReportOut, responses=_ERRORS, tags=["documents"])
    async def add_documents(
        body: Annotated[m.ArticleIn | Annotated[list[m.ArticleIn], Field(min_length=1, max_length=m.MAX_BATCH)], Body()],
    ) -> dict[str, Any]:
        """Add or update one article or a batch (the JSON Lines fields). Every article is checked
        first: one invalid article refuses the whole request (422) and nothing is written."""
        from qa.documents import parse_jsonl_record

        base = service.get_kb()
        given = body if isinstance(body, list) else [body]
        articles, problems = [], []
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

    @app.delete("/documents/{doc_id:path}", dependencies=guard, response_model=m.Deleted, responses=_ERRORS, tags=["documents"])
    async def delete_document(doc_id: DocId) -> dict[str, Any]:
        """Remove an article and all its chunks."""
        base = service.get_kb()
        await service.write(base.delete, doc_id)
        return {"deleted": doc_id}

    return app
