"""The HTTP API (qa.http.app) through TestClient, with the fake embedder.

Every test runs twice: against the embedded Chroma store in tmp_path, and against a real
``chroma run`` server started once for the session (``QA_CHROMA_URL`` mode; see chroma_server.py).
"""

import hashlib
import json
import threading
import time

import pytest
from fastapi.testclient import TestClient

from qa import KnowledgeBase, QueryError, Settings, load_settings
from qa.embeddings import SerialEmbedder
from qa.http.app import create_app

from chroma_server import unique_collection
from fake_openai import FakeOpenAIServer
from helpers import SEED, FakeEmbedder

QUESTION = "Quand le bureau de l'UE a-t-il ouvert à Almaty ?"
ALMATY = "En novembre 1994, la délégation de l’UE au Kazakhstan a commencé ses travaux à Almaty."
TOKEN = "s3cret-token"
PASSAGE_FIELDS = {"doc_id", "chunk_id", "text", "title", "source", "url", "date", "score", "start", "end"}
ARTICLE = {
    "id": "astana-2022-02-07",
    "title": "Hakala à Nur-Sultan",
    "text": "Le représentant spécial a visité Nur-Sultan le 7 février. Il a rencontré le ministre des affaires étrangères.",
    "date": "2022-02-07",
    "url": "https://example.org/a",
    "source": "Astana Times",
}


@pytest.fixture(params=["embedded", pytest.param("chroma-server", marks=pytest.mark.server)])
def backend(request: pytest.FixtureRequest) -> dict[str, str]:
    """Settings for the store: embedded (tmp_path) or the session's `chroma run` server."""
    if request.param == "embedded":
        return {}
    server = request.getfixturevalue("chroma_server")
    return {"chroma_url": server.url, "collection": unique_collection()}


@pytest.fixture
def api_kb(tmp_path, backend):
    kb = KnowledgeBase.open(tmp_path / "index", embedder=FakeEmbedder(), chunk_tokens=60, chunk_overlap=10, **backend)
    kb.ingest([SEED])
    yield kb
    kb.close()


def make_client(kb, **settings) -> TestClient:
    return TestClient(create_app(kb, settings=kb.settings.replace(**settings)), raise_server_exceptions=False)


def llm_client(kb, base_url: str) -> TestClient:
    """A client whose KnowledgeBase (same index) answers with an OpenAI-compatible LLM."""
    settings = kb.settings.replace(answerer="openai:test-model", llm_base_url=base_url, llm_api_key="x")
    return TestClient(create_app(KnowledgeBase.open(settings=settings, embedder=kb.embedder)), raise_server_exceptions=False)


@pytest.fixture
def client(api_kb):
    with make_client(api_kb) as c:
        yield c


@pytest.fixture
def secured(api_kb):
    with make_client(api_kb, api_token=TOKEN) as c:
        yield c


def wait_ready(client: TestClient, headers: dict[str, str] | None = None, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = client.get("/ready", headers=headers)
        if r.status_code == 200:
            return r.json()
        assert r.status_code == 503 and r.json()["ready"] is False
        time.sleep(0.1)
    raise AssertionError("/ready never said ready")


def assert_error(r, status: int, error: str | None = None, contains: str = "") -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"error", "detail"} and body["detail"]
    if error:
        assert body["error"] == error
    assert contains in body["detail"]
    return body


# -- service routes ---------------------------------------------------------------------
def test_health_ready_info(client, api_kb, backend):
    assert client.get("/health").json() == {"status": "ok"}
    assert wait_ready(client) == {"ready": True, "detail": "", "backends": {"database": "ok", "vectors": "ok"}}
    info = client.get("/info").json()
    assert info["articles"] == 1 and info["chunks"] >= 2 and info["model"] == FakeEmbedder.model_id
    assert info["version"] == "0.1.0" and info["ready"] is True and info["answerer"] == "extractive"
    assert info["store"] == backend.get("chroma_url", "embedded")
    assert info["database"] == "sqlite" and info["queue"] is None


def test_openapi_documents_every_route(client):
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/search", "/ask", "/ask/stream", "/documents", "/documents/{doc_id}", "/health", "/ready", "/info"} <= set(paths)
    assert client.get("/docs").status_code == 200


OPERATIONS = {
    ("/health", "get"): ("health_health_get", ["service"], ["200"], False),
    ("/ready", "get"): ("ready_ready_get", ["service"], ["200", "401", "503"], True),
    ("/info", "get"): ("info_info_get", ["service"], ["200", "401", "503"], True),
    ("/search", "post"): ("search_search_post", ["questions"], ["200", "400", "401", "404", "413", "422", "503"], True),
    ("/ask", "post"): ("ask_ask_post", ["questions"], ["200", "400", "401", "404", "413", "422", "503"], True),
    ("/ask/stream", "post"): (
        "ask_stream_ask_stream_post",
        ["questions"],
        ["200", "400", "401", "404", "413", "422", "503"],
        True,
    ),
    ("/documents", "get"): (
        "list_documents_documents_get",
        ["documents"],
        ["200", "400", "401", "404", "413", "422", "503"],
        True,
    ),
    ("/documents", "post"): (
        "add_documents_documents_post",
        ["documents"],
        ["200", "400", "401", "404", "413", "422", "503"],
        True,
    ),
    ("/documents/{doc_id}", "get"): (
        "get_document_documents__doc_id__get",
        ["documents"],
        ["200", "400", "401", "404", "413", "422", "503"],
        True,
    ),
    ("/documents/{doc_id}", "delete"): (
        "delete_document_documents__doc_id__delete",
        ["documents"],
        ["200", "400", "401", "404", "413", "422", "503"],
        True,
    ),
}
"""Every operation: its id, tags, documented statuses, and whether it declares the bearer token."""
OPENAPI_SHA256 = {
    "extractive": "5d75d570a957d45bf58f7f4808c64b6a2599acc58c2e91570514fb3952b337e1",
    "openai:test-model": "4668a31ae0fe64fddbc5c7e555d5097e4f551d8298bc34c6d3e8dd5f94e0e5f9",
}
"""``create_app(settings=Settings(answerer=…)).openapi()`` (less ``info.version``) as JSON with sorted keys, as
it was when ``create_app`` still held every route: the schema is a contract that a refactor must not change.
Changed on purpose once since (issue 22): passages and documents share one article-metadata model
(``ArticleMetaOut``: ``title``, ``source``, ``url``, ``date`` with a description; always present in responses);
``/ready`` reports each backend (``backends``) and ``/info`` the ``database`` and the shared ingest ``queue``."""


def test_openapi_schema_is_unchanged():
    for answerer, expected in OPENAPI_SHA256.items():
        schema = create_app(settings=Settings().replace(answerer=answerer)).openapi()
        operations = {
            (path, method): (op["operationId"], op["tags"], sorted(op["responses"]), "security" in op)
            for path, methods in schema["paths"].items()
            for method, op in methods.items()
        }
        assert operations == OPERATIONS
        del schema["info"]["version"]
        digest = hashlib.sha256(json.dumps(schema, sort_keys=True, ensure_ascii=False).encode()).hexdigest()
        assert digest == expected, f"the OpenAPI schema changed ({answerer}): if on purpose, update OPENAPI_SHA256"


def test_each_app_keeps_its_own_ask_request_model():
    """Two apps in one process: each /ask reads its own server's answerers (no router or model shared)."""
    plain = create_app(settings=Settings())
    llm = create_app(settings=Settings().replace(answerer="openai:test-model"))

    def answerers(app):
        return app.openapi()["components"]["schemas"]["AskRequest"]["properties"]["answerer"]["anyOf"][0]

    assert answerers(plain) == {"const": "extractive", "type": "string"}
    assert answerers(llm) == {"type": "string", "enum": ["extractive", "openai:test-model"]}
    body = {"question": QUESTION, "answerer": "openai:test-model"}
    assert_error(TestClient(plain).post("/ask", json=body), 422, "invalid_request", "'extractive'")
    assert_error(TestClient(llm).post("/ask", json=body), 503, "not_ready")  # valid; no lifespan, so no index


# -- search and ask ---------------------------------------------------------------------
def test_search_returns_passages(client):
    r = client.post("/search", json={"question": QUESTION, "k": 5})
    assert r.status_code == 200, r.text
    hits = r.json()
    assert 1 <= len(hits) <= 5 and all(set(h) == PASSAGE_FIELDS for h in hits)
    assert any(ALMATY in h["text"] for h in hits)
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)


def test_search_filters(client):
    client.post("/documents", json=ARTICLE).raise_for_status()
    only = client.post("/search", json={"question": "Nur-Sultan ministre", "k": 10, "filters": {"source": ["Astana Times"]}})
    assert {h["doc_id"] for h in only.json()} == {ARTICLE["id"]}
    later = {"question": QUESTION, "filters": {"date_from": "2023-01-01"}}
    assert client.post("/search", json=later).json() == []
    dated = client.post("/search", json={"question": QUESTION, "filters": {"date_from": "2022-01-01", "date_to": "2022-12-31"}})
    assert {h["doc_id"] for h in dated.json()} == {ARTICLE["id"]}
    lexical = client.post("/search", json={"question": "ministre", "mode": "lexical"}).json()
    assert lexical and lexical[0]["doc_id"] == ARTICLE["id"]


def test_request_filters_become_one_filters_value(client, api_kb, monkeypatch):
    from qa.http import models as m
    from qa.http.routes_questions import request_filters
    from qa.retrieval.filters import NO_FILTERS, Filters

    assert request_filters(None) is NO_FILTERS
    given = m.Filters(source=["Astana Times"], date_from="2022-01-01")
    assert request_filters(given) == Filters(source=("Astana Times",), date_from="2022-01-01")
    wait_ready(client)  # warming searches once: let it finish first
    seen: list[dict] = []
    search = api_kb.search
    monkeypatch.setattr(api_kb, "search", lambda *a, **k: seen.append(k) or search(*a, **k))
    filters = {"source": ["AFP"], "date_to": "2022-12-31"}
    assert client.post("/search", json={"question": QUESTION, "filters": filters}).json() == []
    assert seen == [{"mode": None, "source": ["AFP"], "date_to": "2022-12-31"}]


@pytest.mark.parametrize("route", ["/search", "/ask", "/ask/stream"])
def test_invalid_filters_are_400_before_any_work(client, monkeypatch, route):
    """A filter the Filters value refuses is a 400 body, for /ask/stream too (not an error event after a 200)."""

    class Refusing:
        @staticmethod
        def of(**given):
            raise QueryError("filter date_from='2022-02-30' is not a date: write it as YYYY-MM-DD")

    monkeypatch.setattr("qa.http.routes_questions.Filters", Refusing)
    r = client.post(route, json={"question": QUESTION, "filters": {"date_from": "2022-02-28"}})
    assert_error(r, 400, "invalid_query", "YYYY-MM-DD")


def test_ask_answers_with_a_verbatim_citation(client):
    r = client.post("/ask", json={"question": QUESTION})
    assert r.status_code == 200, r.text
    answer = r.json()
    assert not answer["abstained"] and "novembre 1994" in answer["text"]
    citation = answer["citations"][0]
    assert citation["quote"] == citation["passage"]["text"][citation["start"] : citation["end"]]
    assert "Almaty" in citation["quote"] and set(citation["passage"]) == PASSAGE_FIELDS
    assert answer["passages"] and answer["question"] == QUESTION


def test_ask_follow_up_uses_the_history(client):
    history = [{"question": QUESTION, "answer": "En novembre 1994."}]
    answer = client.post("/ask", json={"question": "Et à Bruxelles ?", "history": history}).json()
    assert answer["question"] == "Quand le bureau de l'UE a-t-il ouvert à Bruxelles ?"
    assert "décembre 1993" in answer["text"]


def test_ask_abstains_when_the_corpus_does_not_hold_the_answer(client):
    answer = client.post("/ask", json={"question": "Quel est le PIB du Kazakhstan en 2021 ?"}).json()
    assert answer["abstained"] and not answer["citations"] and answer["passages"]


def sse_events(text: str) -> list[tuple[str, dict]]:
    events = []
    for block in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.split("\n"))
        events.append((lines["event"], json.loads(lines["data"])))
    return events


def test_ask_stream_extractive_sends_the_answer_event(client):
    r = client.post("/ask/stream", json={"question": QUESTION})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    [(event, answer)] = sse_events(r.text)
    assert event == "answer" and "novembre 1994" in answer["text"] and answer["citations"]
    assert answer == client.post("/ask", json={"question": QUESTION}).json()


def test_ask_stream_llm_streams_tokens_then_the_cited_answer(api_kb, fake_openai: FakeOpenAIServer):
    passages = api_kb.search(QUESTION, k=5)
    number = next(i for i, p in enumerate(passages, 1) if ALMATY in p.text)
    reply = f"La délégation de l'UE a commencé ses travaux à Almaty en novembre 1994 [{number}]."
    fake_openai.add(reply)
    with llm_client(api_kb, fake_openai.base_url) as c:
        events = sse_events(c.post("/ask/stream", json={"question": QUESTION}).text)
    kinds = [e for e, _ in events]
    assert kinds[-1] == "answer" and kinds.count("token") >= 2 and set(kinds[:-1]) == {"token"}
    assert "".join(d["text"] for e, d in events if e == "token") == reply
    answer = events[-1][1]
    assert "novembre 1994" in answer["text"] and ALMATY[:-1] in answer["citations"][0]["quote"]


def test_ask_stream_reports_an_llm_failure_as_an_error_event(api_kb):
    with llm_client(api_kb, "http://127.0.0.1:9/v1") as c:
        r = c.post("/ask/stream", json={"question": QUESTION})
    [(event, data)] = sse_events(r.text)
    assert r.status_code == 200 and event == "error" and data["error"] == "llm_unavailable"


def test_ask_refuses_answerers_the_server_did_not_enable(client):
    for spec in ("llamacpp:/etc/passwd", "openai:gpt-4o"):
        assert_error(client.post("/ask", json={"question": QUESTION, "answerer": spec}), 422, "invalid_request", "'extractive'")
    assert client.get("/openapi.json").json()["components"]["schemas"]["AskRequest"]["properties"]["answerer"]["anyOf"][0] == {
        "const": "extractive",
        "type": "string",
    }
    assert client.post("/ask", json={"question": QUESTION, "answerer": "extractive"}).status_code == 200


# -- bad inputs -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("body", "contains"),
    [
        ({"question": ""}, "question"),
        ({"question": "   "}, "question"),
        ({"question": "x" * 1_000_000}, "at most 2000 characters"),
        ({"question": QUESTION, "k": 0}, "k: Input should be greater than or equal to 1"),
        ({"question": QUESTION, "k": 10_000}, "k: Input should be less than or equal to 100"),
        ({"question": QUESTION, "k": "five"}, "k"),
        ({"k": 3}, "question: Field required"),
        ({"question": QUESTION, "filters": {"date_from": "2022-13-45"}}, "filters.date_from"),
        ({"question": QUESTION, "filters": {"source": "AFP"}}, "filters.source"),
        ({"question": QUESTION, "filters": {"date_to": 0}}, "filters.date_to"),
        ({"question": QUESTION, "unknown": 1}, "unknown: Extra inputs are not permitted"),
        (["not", "an", "object"], "body"),
    ],
)
@pytest.mark.parametrize("route", ["/search", "/ask", "/ask/stream"])
def test_bad_requests_are_422_with_a_clear_message(client, route, body, contains):
    assert_error(client.post(route, json=body), 422, "invalid_request", contains)


@pytest.mark.parametrize("route", ["/search", "/ask", "/documents"])
def test_malformed_json_is_400(client, route):
    r = client.post(route, content=b'{"question": "Quand', headers={"content-type": "application/json"})
    assert_error(r, 400, "malformed_json", "not valid JSON")


def test_bodies_over_the_limit_are_413(api_kb):
    with make_client(api_kb) as c:
        big = json.dumps({"question": "x" * 3_000_000})
        assert_error(c.post("/search", content=big, headers={"content-type": "application/json"}), 413, "body_too_large")
    app = create_app(api_kb, max_body_bytes=5_000)
    with TestClient(app) as c:
        article = {**ARTICLE, "text": "mot " * 5_000}
        assert_error(c.post("/documents", json=article), 413, "body_too_large", "5,000 bytes")
        assert c.get(f"/documents/{ARTICLE['id']}").status_code == 404


def test_unknown_routes_and_methods_are_json(client):
    assert_error(client.get("/nope"), 404, "not_found")
    assert_error(client.get("/search"), 405, "method_not_allowed")
    assert client.put("/documents").headers["allow"] == "GET, POST"
    assert client.put("/documents/x").headers["allow"] == "DELETE, GET"


# -- documents --------------------------------------------------------------------------
def test_documents_add_list_get_delete(client, api_kb):
    seed_id = api_kb.list_documents()[1][0].doc_id
    r = client.post("/documents", json=ARTICLE)
    assert r.status_code == 200, r.text
    assert r.json()["added"] == [ARTICLE["id"]] and r.json()["chunks_written"] >= 1
    assert client.post("/documents", json=ARTICLE).json()["unchanged"] == [ARTICLE["id"]]
    batch = [{"id": f"b{i}", "text": f"Article numéro {i} sur Almaty."} for i in range(3)]
    assert client.post("/documents", json=batch).json()["added"] == ["b0", "b1", "b2"]

    every = sorted([ARTICLE["id"], "b0", "b1", "b2", seed_id])
    page = client.get("/documents", params={"limit": 2}).json()
    assert page["total"] == 5 and page["limit"] == 2 and [d["id"] for d in page["documents"]] == every[:2]
    rest = client.get("/documents", params={"offset": 2, "limit": 10}).json()["documents"]
    assert [d["id"] for d in rest] == every[2:]
    assert client.get("/documents", params={"offset": 99}).json()["documents"] == []
    assert_error(client.get("/documents", params={"limit": 0}), 422, "invalid_request", "limit")

    doc = client.get(f"/documents/{ARTICLE['id']}").json()
    assert doc["text"] == ARTICLE["text"] and doc["source"] == "Astana Times" and doc["date"] == "2022-02-07"
    assert doc["chunks"] >= 1 and "path" not in doc

    assert client.delete(f"/documents/{ARTICLE['id']}").json() == {"deleted": ARTICLE["id"]}
    assert_error(client.get(f"/documents/{ARTICLE['id']}"), 404, "not_found", ARTICLE["id"])
    assert_error(client.delete(f"/documents/{ARTICLE['id']}"), 404, "not_found")
    hits = client.post("/search", json={"question": "Nur-Sultan ministre affaires étrangères", "k": 10}).json()
    assert ARTICLE["id"] not in {h["doc_id"] for h in hits}


def test_unknown_document_ids_are_404(client):
    for doc_id in ("nope", "a/b/c", "..%2F..%2Fetc%2Fpasswd", "%00"):
        assert_error(client.get(f"/documents/{doc_id}"), 404, "not_found")
        assert_error(client.delete(f"/documents/{doc_id}"), 404, "not_found")


def test_invalid_articles_write_nothing(client):
    batch = [{"id": "good", "text": "Un bon article."}, {"id": "x", "text": " "}, {"id": "y", "text": "\u200b"}]
    assert_error(client.post("/documents", json=batch), 422, "invalid_request", "1.text: String should match pattern")
    assert client.get("/documents/good").status_code == 404
    bad_date = [{"id": "good", "text": "Un bon article."}, {"id": "bad", "text": "Daté.", "date": "hier"}]
    assert_error(client.post("/documents", json=bad_date), 422, "invalid_request", "date")
    assert client.get("/documents/good").status_code == 404
    assert_error(client.post("/documents", json={"text": "sans id"}), 422, "invalid_request", "id: Field required")
    assert_error(client.post("/documents", json=[]), 422, "invalid_request")
    assert_error(client.post("/documents", json={"id": "0" * 600, "text": "x"}), 422, "invalid_request", "id")
    assert_error(client.post("/documents", json={"id": "d", "text": "x", "date": 20220207}), 422, "invalid_request", "date")
    stamped = client.post("/documents", json={"id": "stamped", "text": "Un texte.", "date": "2022-02-07T23:10:00+01:00"})
    assert stamped.status_code == 200 and client.get("/documents/stamped").json()["date"] == "2022-02-07"


def test_article_ids_never_become_paths(client, tmp_path):
    name = unique_collection()
    weird = f"../../{name}"
    client.post("/documents", json={"id": weird, "text": "Un article au nom étrange."}).raise_for_status()
    assert client.get(f"/documents/..%2F..%2F{name}").json()["id"] == weird
    assert weird in {d["id"] for d in client.get("/documents").json()["documents"]}
    assert not list(tmp_path.parent.rglob(f"*{name}*"))  # nothing named after it in this session's folders


# -- auth -------------------------------------------------------------------------------
PROTECTED = [
    ("get", "/ready", None),
    ("get", "/info", None),
    ("post", "/search", {"question": QUESTION}),
    ("post", "/ask", {"question": QUESTION}),
    ("post", "/ask/stream", {"question": QUESTION}),
    ("get", "/documents", None),
    ("get", "/documents/nope", None),
    ("post", "/documents", {"id": "z", "text": "Un article."}),
    ("delete", "/documents/nope", None),
]


@pytest.mark.parametrize(("method", "route", "body"), PROTECTED)
def test_token_is_required_everywhere_but_health(secured, method, route, body):
    call = getattr(secured, method)
    kwargs = {"json": body} if body else {}
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}, {"Authorization": f"Basic {TOKEN}"}):
        r = call(route, headers=headers, **kwargs)
        assert_error(r, 401, "unauthorized", "Bearer")
        assert r.headers["www-authenticate"] == "Bearer"
    wait_ready(secured, {"Authorization": f"Bearer {TOKEN}"})
    r = call(route, headers={"Authorization": f"Bearer {TOKEN}"}, **kwargs)
    assert r.status_code in (200, 404), r.text
    assert secured.get("/health").status_code == 200


def test_without_a_token_every_route_is_open(client):
    wait_ready(client)
    for method, route, body in PROTECTED:
        r = getattr(client, method)(route, **({"json": body} if body else {}))
        assert r.status_code in (200, 404), (route, r.text)


# -- start-up and concurrency -----------------------------------------------------------
def test_ready_is_false_until_the_index_opens(tmp_path, backend, monkeypatch):
    import qa.http.service

    gate = threading.Event()
    real_open = qa.http.service.open_kb

    def slow_open(settings):
        gate.wait(30)
        return real_open(settings)

    monkeypatch.setattr(qa.http.service, "open_kb", slow_open)
    monkeypatch.setattr("qa.kb.make_embedder", lambda *a, **k: FakeEmbedder())
    settings = load_settings(index_dir=tmp_path / "idx", **backend)
    with TestClient(create_app(settings=settings)) as c:
        assert c.get("/health").status_code == 200
        r = c.get("/ready")
        assert r.status_code == 503 and r.json()["ready"] is False
        assert_error(c.post("/search", json={"question": QUESTION}), 503, "not_ready", "GET /ready")
        gate.set()
        wait_ready(c)
        assert c.post("/search", json={"question": QUESTION}).json() == []


def test_a_broken_index_is_reported_by_ready(api_kb, monkeypatch):
    monkeypatch.setattr("qa.kb.make_embedder", lambda *a, **k: type("Other", (FakeEmbedder,), {"model_id": "other"})())
    with TestClient(create_app(settings=api_kb.settings)) as c:
        deadline = time.monotonic() + 30
        while (r := c.get("/ready")).json()["detail"].startswith("starting") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert r.status_code == 503 and "was built with embedding model" in r.json()["detail"]
        assert_error(c.get("/info"), 503, "not_ready", "QA_EMBEDDING_MODEL")


class SlowEmbedder(FakeEmbedder):
    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds

    def embed_documents(self, texts):
        time.sleep(self.seconds)
        return super().embed_documents(texts)


@pytest.mark.stress
def test_writes_do_not_block_readers_or_the_event_loop(tmp_path, backend):
    kb = KnowledgeBase.open(
        tmp_path / "index", embedder=SerialEmbedder(SlowEmbedder(0.5)), chunk_tokens=60, chunk_overlap=10, **backend
    )
    kb.ingest([SEED])
    with TestClient(create_app(kb, warm=False)) as c:
        batch = [{"id": f"slow{i}", "text": f"Article lent numéro {i} sur Almaty et Bruxelles."} for i in range(80)]
        results: dict[str, int] = {}
        writer = threading.Thread(target=lambda: results.update(status=c.post("/documents", json=batch).status_code))
        started = time.monotonic()
        writer.start()
        time.sleep(0.3)
        latencies = []
        while writer.is_alive() and len(latencies) < 8:  # search while the ingest runs (~5 s)
            t = time.monotonic()
            hits = c.post("/search", json={"question": QUESTION, "k": 10}).json()
            latencies.append(time.monotonic() - t)
            assert any(ALMATY in h["text"] for h in hits)
            assert c.get("/health").status_code == 200
        assert len(latencies) >= 3, "the write finished too soon to test anything"
        writer.join(60)
        assert results == {"status": 200} and time.monotonic() - started > 2
        assert max(latencies) < 1.5, latencies  # a reader waits at most for one embedding slice (0.5 s)
        assert c.get("/documents").json()["total"] == 81
    kb.close()


def test_concurrent_searches_and_writes_all_succeed(client):
    errors: list[str] = []

    def reader() -> None:
        for _ in range(10):
            r = client.post("/search", json={"question": QUESTION, "k": 3})
            if r.status_code != 200 or not r.json():
                errors.append(r.text)

    def writer(n: int) -> None:
        for i in range(5):
            r = client.post("/documents", json={"id": f"w{n}-{i}", "text": f"Texte {n} {i} sur le Kazakhstan."})
            if r.status_code != 200:
                errors.append(r.text)

    threads = [threading.Thread(target=reader) for _ in range(4)] + [threading.Thread(target=writer, args=(n,)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    assert client.get("/documents").json()["total"] == 11


# -- Chroma server mode and the command line -----------------------------------------------
@pytest.mark.server
def test_two_api_processes_share_one_chroma_server(tmp_path, chroma_server):
    """Two services over one `chroma run` server and one QA_INDEX_DIR see each other's writes."""
    settings = load_settings(index_dir=tmp_path / "shared", chroma_url=chroma_server.url, collection=unique_collection())
    one = KnowledgeBase.open(settings=settings, embedder=FakeEmbedder(), chunk_tokens=60, chunk_overlap=10)
    two = KnowledgeBase.open(settings=settings, embedder=FakeEmbedder(), chunk_tokens=60, chunk_overlap=10)
    with make_client(one) as a, make_client(two) as b:
        a.post("/documents", json=ARTICLE).raise_for_status()
        hits = b.post("/search", json={"question": "Nur-Sultan ministre", "k": 3}).json()
        assert hits[0]["doc_id"] == ARTICLE["id"]
        assert b.get("/info").json()["chunks"] == a.get("/info").json()["chunks"] >= 1
        b.delete(f"/documents/{ARTICLE['id']}").raise_for_status()
        assert a.post("/search", json={"question": "Nur-Sultan ministre"}).json() == []
    one.close()
    two.close()


@pytest.mark.server
def test_a_chroma_server_that_goes_away_gives_503(tmp_path):
    from chroma_server import ChromaServer

    with ChromaServer(tmp_path / "chroma") as server:
        kb = KnowledgeBase.open(
            tmp_path / "index", embedder=FakeEmbedder(), chroma_url=server.url, chunk_tokens=60, chunk_overlap=10
        )
        kb.ingest([SEED])
        with make_client(kb) as c:
            assert c.post("/search", json={"question": QUESTION}).status_code == 200
            server.stop()
            assert_error(c.post("/search", json={"question": QUESTION}), 503, "store_unavailable")
            assert c.get("/health").status_code == 200
    kb.close()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://127.0.0.1:1", "is not a URL: use http://host:port"),
        ("http://127.0.0.1:9", "cannot reach the Chroma server at http://127.0.0.1:9"),
    ],
)
def test_a_wrong_chroma_url_says_what_to_do(tmp_path, url, message):
    from qa import StoreError

    with pytest.raises(StoreError, match=message):
        KnowledgeBase.open(tmp_path / "index", embedder=FakeEmbedder(), chroma_url=url)


def test_qa_serve_builds_the_app_and_runs_uvicorn(monkeypatch, tmp_path):
    import uvicorn

    from qa.cli import main

    seen = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: seen.update(app=app, **kwargs))
    monkeypatch.setenv("QA_API_TOKEN", TOKEN)
    assert main(["serve", "--index", str(tmp_path / "idx"), "--port", "8765", "--threads", "2"]) == 0
    assert seen["host"] == "127.0.0.1" and seen["port"] == 8765
    service = seen["app"].state.service
    assert service.settings.index_dir == tmp_path / "idx" and service.threads == 2 and service.kb is None
    assert service.settings.api_token == TOKEN


@pytest.mark.slow
def test_the_real_model_answers_over_http(tmp_path, backend, real_embedder):
    kb = KnowledgeBase.open(tmp_path / "index", embedder=SerialEmbedder(real_embedder), **backend)
    kb.ingest([SEED])
    with TestClient(create_app(kb)) as c:
        wait_ready(c)
        hits = c.post("/search", json={"question": "When did the EU office open in Almaty?", "k": 2}).json()
        assert any(ALMATY in h["text"] for h in hits)
        answer = c.post("/ask", json={"question": QUESTION}).json()
        assert "novembre 1994" in answer["text"] and "Almaty" in answer["citations"][0]["quote"]
        [(event, streamed)] = sse_events(c.post("/ask/stream", json={"question": QUESTION}).text)
        assert event == "answer" and streamed["text"] == answer["text"]
    kb.close()


# -- the shared model -----------------------------------------------------------------------
class BatchingModel:
    """A stand-in sentence-transformers model: records batch sizes, takes 50 ms per call."""

    prompts = {"query": "query: "}

    def __init__(self, fake: FakeEmbedder) -> None:
        self.fake, self.batches = fake, []

    def encode(self, texts, prompt_name=None, **kwargs):
        assert prompt_name == "query"
        self.batches.append(len(texts))
        time.sleep(0.05)
        return self.fake.embed_documents(texts)


class ModelEmbedder(FakeEmbedder):
    def __init__(self) -> None:
        super().__init__()
        self.model = BatchingModel(FakeEmbedder())

    def embed_query(self, text):
        return self.model.encode([text], prompt_name="query")[0]


def test_concurrent_queries_are_batched_and_each_gets_its_own_vector():
    inner = ModelEmbedder()
    shared = SerialEmbedder(inner)
    questions = [f"question numéro {i} sur Almaty" for i in range(24)]
    results: dict[str, object] = {}
    threads = [threading.Thread(target=lambda q=q: results.update({q: shared.embed_query(q)})) for q in questions]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    for q in questions:
        assert (results[q] == FakeEmbedder().embed_query(q)).all()
    assert sum(inner.model.batches) == len(questions) and max(inner.model.batches) > 1
    assert len(inner.model.batches) < len(questions)


def test_a_failed_batch_fails_every_query_in_it():
    inner = ModelEmbedder()
    inner.model.encode = lambda *a, **k: (_ for _ in ()).throw(RuntimeError("model broke"))
    with pytest.raises(RuntimeError, match="model broke"):
        SerialEmbedder(inner).embed_query("Quand ?")


@pytest.mark.slow
def test_batched_query_vectors_match_single_ones(real_embedder):
    import numpy as np

    shared = SerialEmbedder(real_embedder)
    questions = [QUESTION, "Qui est le président du Kazakhstan ?", "When did the EU office open in Almaty?"]
    batched = shared._encode_queries(questions)
    for q, v in zip(questions, batched, strict=True):
        assert float(np.dot(v, real_embedder.embed_query(q))) > 0.9999
