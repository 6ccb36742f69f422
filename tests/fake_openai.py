"""A tiny OpenAI-compatible chat server for tests: scripted replies, recorded requests, loopback only.

>>> with FakeOpenAIServer(["Bonjour [1]."]) as server:
...     model = make_chat_model("openai:test-model", base_url=server.base_url, api_key="x")
...     model.invoke("Salut").content
'Bonjour [1].'

It implements ``POST /v1/chat/completions``, non-streaming (one ``chat.completion``
object) and streaming (server-sent events: ``data: {chat.completion.chunk}`` lines, an
optional usage chunk, then ``data: [DONE]``), and ``GET /v1/models``. Replies are
served in the order they were scripted (:meth:`FakeOpenAIServer.add`); a
:class:`ScriptedError` reply answers with that HTTP status and an OpenAI-style error body.
Every request received is kept in :attr:`FakeOpenAIServer.requests`. The ``fake_openai``
fixture (conftest.py) starts one for a test.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class ScriptedError:
    """A reply that fails with an HTTP status (401, 404, 500…)."""

    status: int
    message: str = "scripted error"


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    """Lower-cased header names."""
    body: dict[str, Any] = field(default_factory=dict)

    @property
    def messages(self) -> list[dict[str, Any]]:
        return list(self.body.get("messages", []))

    def text(self) -> str:
        """Every message's content, joined: what the model was shown."""
        parts = []
        for message in self.messages:
            content = message.get("content")
            if isinstance(content, list):  # content blocks
                content = "".join(block.get("text", "") for block in content if isinstance(block, dict))
            parts.append(str(content or ""))
        return "\n".join(parts)


def _pieces(text: str) -> list[str]:
    """Split a reply into streaming deltas: words with their following whitespace."""
    return re.findall(r"\S+\s*|\s+", text) or [""]


class _Handler(BaseHTTPRequestHandler):
    server: _Server  # type: ignore[assignment]
    protocol_version = "HTTP/1.0"  # one response per connection: no keep-alive bookkeeping

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - silence the access log
        pass

    def _json(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802
        self.server.fake.record(RecordedRequest("GET", self.path, {k.lower(): v for k, v in self.headers.items()}))
        if self.path.rstrip("/").endswith("/models"):
            self._json(200, {"object": "list", "data": [{"id": "test-model", "object": "model", "owned_by": "fake"}]})
        else:
            self._json(404, {"error": {"message": f"no route {self.path}", "type": "invalid_request_error"}})

    def do_POST(self) -> None:  # noqa: N802
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw or b"{}")
        except json.JSONDecodeError:
            self._json(400, {"error": {"message": "invalid JSON body", "type": "invalid_request_error"}})
            return
        fake = self.server.fake
        fake.record(RecordedRequest("POST", self.path, {k.lower(): v for k, v in self.headers.items()}, body))
        if not self.path.rstrip("/").endswith("/chat/completions"):
            self._json(404, {"error": {"message": f"no route {self.path}", "type": "invalid_request_error"}})
            return
        reply = fake.next_reply()
        if isinstance(reply, ScriptedError):
            self._json(reply.status, {"error": {"message": reply.message, "type": "scripted", "code": reply.status}})
            return
        model = body.get("model", "test-model")
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            self._stream(reply, model, include_usage)
        else:
            self._json(200, _completion(reply, model))

    def _stream(self, reply: str, model: str, include_usage: bool) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        created = int(time.time())
        base = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": created, "model": model}

        def send(payload: dict[str, Any] | str) -> None:
            data = payload if isinstance(payload, str) else json.dumps(payload)
            self.wfile.write(f"data: {data}\n\n".encode())
            self.wfile.flush()

        send({**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]})
        for piece in _pieces(reply):
            send({**base, "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]})
        send({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        if include_usage:
            send({**base, "choices": [], "usage": _usage(reply)})
        send("[DONE]")


def _usage(reply: str) -> dict[str, int]:
    n = len(reply.split())
    return {"prompt_tokens": 10, "completion_tokens": n, "total_tokens": 10 + n}


def _completion(reply: str, model: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": reply}, "logprobs": None, "finish_reason": "stop"}],
        "usage": _usage(reply),
    }


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    fake: FakeOpenAIServer


class FakeOpenAIServer:
    """Serve scripted chat replies on ``127.0.0.1:<free port>`` from a background thread."""

    def __init__(self, replies: Iterable[str | ScriptedError] = ()) -> None:
        self._replies: deque[str | ScriptedError] = deque(replies)
        self._lock = threading.Lock()
        self.requests: list[RecordedRequest] = []
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # scripting and inspection
    def add(self, *replies: str | ScriptedError) -> FakeOpenAIServer:
        with self._lock:
            self._replies.extend(replies)
        return self

    def next_reply(self) -> str | ScriptedError:
        with self._lock:
            if not self._replies:
                return ScriptedError(500, "FakeOpenAIServer: no scripted reply left")
            return self._replies.popleft()

    def record(self, request: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(request)

    @property
    def chat_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.method == "POST" and r.path.rstrip("/").endswith("/chat/completions")]

    # lifecycle
    @property
    def port(self) -> int:
        assert self._server is not None, "server not started"
        return self._server.server_address[1]

    @property
    def base_url(self) -> str:
        """The OpenAI base URL (``http://127.0.0.1:<port>/v1``)."""
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> FakeOpenAIServer:
        self._server = _Server(("127.0.0.1", 0), _Handler)  # loopback only, free port
        self._server.fake = self
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FakeOpenAIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
