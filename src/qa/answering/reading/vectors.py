"""The reader's sentence vectors, stored: computed at ingest so that a question reads only its own.

The reader is a bi-encoder (:mod:`qa.answering.reading.reader`): a sentence's vector does not depend on the
question, so it can be computed once, when its article is ingested, instead of for every question that reads it
(5 candidate sentences of ~70 tokens each: ~45 % of the reading answerer's CPU per question). A
:class:`SentenceVectors` is a SQLite file beside the index (``sentence-vectors.sqlite3``) that maps
``(reader weights sha256, sha1 of the sentence)`` to its vector in float16 (768 bytes for e5-small's 384
dimensions). It is a cache: a vector is a pure function of the reader's weights and the sentence, so a sentence
whose vector is missing (an index ingested with the reader off, another machine's index, a retrained reader) is
computed when a question reads it and stored then; nothing in it is ever wrong, only missing, and deleting the
file loses nothing but time. Vectors are rounded to float16 whether they come from the file or were just
computed, so an answer never depends on which.

Several processes may read and write one file (SQLite WAL; a write waits up to :data:`BUSY_MS`).
"""

from __future__ import annotations

import hashlib
import logging
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

FILE = "sentence-vectors.sqlite3"
"""The store's file name in the index folder."""
BUSY_MS = 10_000
_SCHEMA = """
CREATE TABLE IF NOT EXISTS vectors (
    model TEXT NOT NULL,
    key BLOB NOT NULL,
    vec BLOB NOT NULL,
    PRIMARY KEY (model, key)
) WITHOUT ROWID
"""
_CHUNK = 500
"""Keys per ``IN (…)`` lookup (under SQLite's 999-parameter limit with the model name)."""


def key_of(sentence: str) -> bytes:
    """The sentence's key: the sha1 of its UTF-8 text (20 bytes)."""
    return hashlib.sha1(sentence.encode("utf-8")).digest()


def rounded(vectors: np.ndarray) -> np.ndarray:
    """``vectors`` as the store keeps them (float16), back in float32."""
    return np.asarray(vectors, dtype=np.float16).astype(np.float32)


class SentenceVectors:
    """One index's stored sentence vectors for one reader (``model``: its weights' sha256). Thread-safe."""

    def __init__(self, path: Path, model: str) -> None:
        self.path = Path(path)
        self.model = model
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self.broken = False
        """The file could not be read or written (:meth:`_broken`): no more tries in this process."""

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=BUSY_MS / 1000, check_same_thread=False, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute(_SCHEMA)
            self._conn = conn
        return self._conn

    def _broken(self, exc: Exception) -> None:
        """A file that is not a readable store (damaged, another kind of file): told once, then left alone; the
        questions compute their vectors as if it were empty."""
        if not self.broken:
            logger.warning("%s cannot be used (%s): delete it, it is rebuilt as questions come", self.path, exc)
        self.broken = True

    def get(self, sentences: Sequence[str]) -> list[np.ndarray | None]:
        """Each sentence's stored vector (float32), None where there is none (or the file is unusable)."""
        keys = [key_of(s) for s in sentences]
        if self.broken:
            return [None] * len(keys)
        try:
            return self._get(keys)
        except sqlite3.DatabaseError as exc:
            self._broken(exc)
            return [None] * len(keys)

    def _get(self, keys: list[bytes]) -> list[np.ndarray | None]:
        found: dict[bytes, np.ndarray] = {}
        with self._lock:
            db = self._db()
            unique = list(dict.fromkeys(keys))
            for i in range(0, len(unique), _CHUNK):
                part = unique[i : i + _CHUNK]
                marks = ",".join("?" * len(part))
                for key, blob in db.execute(
                    f"SELECT key, vec FROM vectors WHERE model = ? AND key IN ({marks})", [self.model, *part]
                ):
                    found[bytes(key)] = np.frombuffer(blob, dtype=np.float16).astype(np.float32)
        return [found.get(k) for k in keys]

    def missing(self, sentences: Iterable[str]) -> list[str]:
        """The distinct sentences of ``sentences`` with no stored vector, in their first order."""
        distinct = list(dict.fromkeys(sentences))
        return [s for s, v in zip(distinct, self.get(distinct), strict=True) if v is None]

    def put(self, vectors: dict[str, np.ndarray]) -> None:
        """Store the vectors of these sentences (float16; one transaction)."""
        if not vectors or self.broken:
            return
        try:
            self._put(vectors)
        except sqlite3.DatabaseError as exc:
            self._broken(exc)

    def _put(self, vectors: dict[str, np.ndarray]) -> None:
        rows = [(self.model, key_of(s), np.asarray(v, dtype=np.float16).tobytes()) for s, v in vectors.items()]
        with self._lock:
            db = self._db()
            db.execute("BEGIN IMMEDIATE")
            try:
                db.executemany("INSERT OR REPLACE INTO vectors (model, key, vec) VALUES (?, ?, ?)", rows)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def count(self) -> int:
        """How many vectors of this reader the file holds."""
        with self._lock:
            return int(self._db().execute("SELECT count(*) FROM vectors WHERE model = ?", [self.model]).fetchone()[0])

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
