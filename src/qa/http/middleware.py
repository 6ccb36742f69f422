"""The body limit: an ASGI middleware that refuses bodies over the limit with 413 before any route reads them."""

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from qa.http.errors import error_response

SMALL_BODY_BYTES = 2 << 20
"""Largest body for every route but ``POST /documents`` (whose limit is ``QA_MAX_FILE_MB``)."""


class BodyLimit:
    """``documents`` bytes for ``/documents``, ``small`` for every other path: a declared ``Content-Length``
    over the limit is refused at once, a chunked body as soon as it passes it."""

    def __init__(self, app: ASGIApp, small: int, documents: int) -> None:
        self.app, self.small, self.documents = app, small, documents

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
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

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        detail = f"the request body is over the {limit:,} bytes limit: send less (fewer articles per POST /documents)"
        await error_response(413, "body_too_large", detail)(scope, receive, send)
