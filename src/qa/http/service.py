"""What the routes share, and how they get it: the :class:`Service` (the KnowledgeBase, its readiness,
the worker threads) lives in ``app.state.service``; routes take it through the :data:`ServiceDep`
dependency, and :data:`GUARD` checks the bearer token when ``QA_API_TOKEN`` is set.

Blocking work (model inference, Chroma, SQLite) never runs on the event loop: reads go to a pool of
worker threads, writes to a single writer thread, so one ingest never locks readers out and two
writes never interleave.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Annotated, Any, TypeVar, cast

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from qa.config import Settings
from qa.errors import QAError, StoreError
from qa.http.errors import ApiError

if TYPE_CHECKING:
    from qa.kb import KnowledgeBase

logger = logging.getLogger(__name__)
START_RETRY_SECONDS = 1.0
"""First wait before opening the index again when a backend does not answer (doubling up to 10 s)."""

T = TypeVar("T")


def open_kb(settings: Settings) -> KnowledgeBase:
    """The KnowledgeBase a server uses: documents embedded in slices of 8 under the model's lock,
    so a search waits for one slice of an ingest, not for all of it."""
    from qa.kb import KnowledgeBase

    return KnowledgeBase.open(settings=settings, embed_slice=8)


class Service:
    """What the routes share: the KnowledgeBase, its readiness, the worker threads."""

    def __init__(self, kb: KnowledgeBase | None, settings: Settings, *, warm: bool, threads: int) -> None:
        self.kb = kb
        self.settings = settings
        self.token = (settings.api_token or "").encode("utf-8")
        self.owns_kb = kb is None
        self.warm = warm
        self.ready = False
        self.problem = "starting: opening the index and loading the model"
        self.threads = threads
        self._pools: dict[str, ThreadPoolExecutor] = {}
        self._pools_lock = threading.Lock()
        self._closing = threading.Event()

    def pool(self, name: str) -> ThreadPoolExecutor:
        """``read`` (``threads`` workers) or ``write`` (one: writes never interleave); made on first use."""
        with self._pools_lock:
            if name not in self._pools:
                size = self.threads if name == "read" else 1
                self._pools[name] = ThreadPoolExecutor(size, thread_name_prefix=f"qa-{name}")
            return self._pools[name]

    def start(self) -> None:
        """Open the index (unless given one) and warm the model; runs in a background thread. A backend that does
        not answer yet (PostgreSQL, a Chroma server starting beside this replica) is tried again, every few seconds,
        until it does or the service closes."""
        delay = START_RETRY_SECONDS
        while True:
            try:
                self._start()
                return
            except StoreError as exc:
                self.problem = f"waiting for a backend: {exc}"
                logger.warning("%s (retrying in %.0fs)", self.problem, delay)
                if self._closing.wait(delay):
                    return
                delay = min(delay * 2, 10.0)

    def _start(self) -> None:
        try:
            if self.kb is None:
                self.kb = open_kb(self.settings)
            if self.warm:
                self.kb.warm()
            self.ready, self.problem = True, ""
            logger.info("qa API ready: %s", self.kb.stats()["model"])
        except StoreError:
            raise
        except QAError as exc:
            self.problem = f"the index cannot be opened: {exc}"
            logger.error("%s", self.problem)
        except Exception as exc:  # noqa: BLE001 - reported by /ready, the server stays up
            self.problem = f"start-up failed: {type(exc).__name__}: {exc}"
            logger.exception("qa API start-up failed")

    def close(self) -> None:
        self._closing.set()
        with self._pools_lock:
            pools, self._pools = self._pools, {}
        for name, pool in pools.items():
            pool.shutdown(wait=name == "write", cancel_futures=name == "read")
        if self.owns_kb and self.kb is not None:
            self.kb.close()
            self.kb, self.ready = None, False

    def get_kb(self) -> KnowledgeBase:
        """The KnowledgeBase, or 503 ``not_ready`` while the index is opening (or could not be opened)."""
        if self.kb is None:
            raise ApiError(503, "not_ready", f"{self.problem}; retry when GET /ready says ready", {"Retry-After": "2"})
        return self.kb

    async def read(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)`` on a reader thread."""
        return await asyncio.get_running_loop().run_in_executor(self.pool("read"), lambda: fn(*args, **kwargs))

    async def write(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)`` on the writer thread."""
        return await asyncio.get_running_loop().run_in_executor(self.pool("write"), lambda: fn(*args, **kwargs))


async def get_service(request: Request) -> Service:
    """The app's :class:`Service` (set by ``create_app``). ``async``, as :func:`authorise`: FastAPI would run a plain
    function on a worker thread, a thread hop per request for a dictionary read."""
    return cast(Service, request.app.state.service)


ServiceDep = Annotated[Service, Depends(get_service)]
"""A route parameter that receives the app's :class:`Service`."""

bearer = HTTPBearer(auto_error=False, description="`Authorization: Bearer <QA_API_TOKEN>` when the server sets one")


async def authorise(service: ServiceDep, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> None:
    """401 unless the request carries the server's token (when it has one)."""
    if not service.token:
        return
    given = credentials.credentials.encode("utf-8") if credentials else b""
    if not hmac.compare_digest(given, service.token):
        raise ApiError(
            401,
            "unauthorized",
            "missing or wrong token: send `Authorization: Bearer <QA_API_TOKEN>`",
            {"WWW-Authenticate": "Bearer"},
        )


GUARD = [Depends(authorise)]
"""The dependencies of every route but ``/health``: the token, when the server sets one."""
