"""Shared test helpers (plain code, no fixtures): paths of the repository, the deterministic fake
embedder, a file writer, and the subprocess driver of the crash and concurrency tests.

Test modules import from here (``from helpers import SEED, FakeEmbedder``), never from ``conftest``
or from another ``test_*`` module; ``conftest.py`` keeps the fixtures. ``ingest_driver.py`` (a
separate process) imports :class:`FakeEmbedder` from here too.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import subprocess
import sys
import unicodedata
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from qa.index.lexical import LexicalRow
from qa.schema import ArticleMeta

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "corpus"
SEED = CORPUS / "ue-kazakhstan.txt"
# the real model is built once into the user's cache (or QA_MODEL_CACHE) and reused across runs
MODEL_CACHE = Path(os.environ.get("QA_MODEL_CACHE") or Path.home() / ".cache" / "qa" / "models")


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
        n = float(np.linalg.norm(v))
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


def write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


# -- the crash and concurrency tests: ingest_driver.py in a subprocess ---------------------------------------------------

DRIVER = Path(__file__).resolve().parent / "ingest_driver.py"
WORDS = "le la les un port ville président gouvernement économie accord sommet réforme élection budget ministre".split()


def driver_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "QA_TEST_CRASH_AT"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")]))
    env.update(HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", **extra)
    return env


def run_driver(*args: str, **extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(DRIVER), *args], capture_output=True, text=True, env=driver_env(**extra), timeout=300, check=False
    )


def dump(index: Path) -> dict:
    result = run_driver("dump", str(index))
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def write_corpus(path: Path, n: int, seed: int, changed: int = 0) -> Path:
    """``n`` small articles (3 to 9 sentences: one to three chunks) as JSON Lines; the first
    ``changed`` ones get a new text (an update)."""
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8") as fh:
        for i in range(n):
            sentences = [
                f"Phrase {j} de l'article {i} : " + " ".join(rng.choice(WORDS) for _ in range(12)) + "."
                for j in range(rng.randint(3, 9))
            ]
            if i < changed:
                sentences.append(f"Mise à jour numéro {seed} de l'article {i}.")
            record = {"id": f"a{i:05d}", "title": f"Article {i}", "text": " ".join(sentences), "source": "AFP"}
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
    return path


def lexical_row(chunk_id: str, doc_id: str, text: str, title: str = "", source: str = "", date: str = "") -> LexicalRow:
    """A chunk for the lexical indexes (SQLite FTS5 and PostgreSQL), its metadata given flat."""
    return LexicalRow(chunk_id, text, ArticleMeta(doc_id, title, source, "", date))
