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

The parts: :mod:`qa.http.service` (the shared :class:`~qa.http.service.Service`, its worker
threads, start-up and close; the token check), :mod:`qa.http.errors` (the JSON error bodies),
:mod:`qa.http.middleware` (the body limit), and one router per OpenAPI tag:
:mod:`qa.http.routes_service`, :mod:`qa.http.routes_questions`, :mod:`qa.http.routes_documents`.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from fastapi import FastAPI

from qa.config import Settings, load_settings
from qa.http import models as m
from qa.http import routes_documents, routes_questions, routes_service
from qa.http.errors import add_error_handlers
from qa.http.middleware import SMALL_BODY_BYTES, BodyLimit
from qa.http.service import Service

if TYPE_CHECKING:
    from qa.kb import KnowledgeBase


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Open the index and warm the model in the background (``/ready`` says when); close at shutdown."""
    service: Service = app.state.service
    threading.Thread(target=service.start, name="qa-start", daemon=True).start()
    yield
    service.close()


def create_app(
    kb: KnowledgeBase | None = None,
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
    answerer = (kb.settings if kb is not None else settings).answerer
    app = FastAPI(
        title="qa",
        version=__version__,
        description="Questions over a news corpus, French first: search passages, cited answers, manage articles.",
        lifespan=lifespan,
    )
    app.state.service = Service(kb, settings, warm=warm, threads=threads)
    app.add_middleware(BodyLimit, small=SMALL_BODY_BYTES, documents=max_body_bytes or int(settings.max_file_mb * 1_000_000))
    add_error_handlers(app)
    app.include_router(routes_service.router)
    app.include_router(routes_questions.questions_router(m.ask_request_model(sorted({"extractive", answerer}))))
    app.include_router(routes_documents.router)
    return app
