"""Query speed and memory at 1k, 10k and 100k chunks: `search` and `ask` latency p50/p95, peak RSS.

    .venv/bin/python benchmarks/query.py [--sizes 1000 10000 100000] [--questions 200]

The index holds real PIAF paragraphs embedded with the real model (their questions are the ones
measured), topped up with filler articles to each size: French sentences from the other PIAF
paragraphs shuffled into new articles, with vectors mixed from real ones plus noise, ingested
through `KnowledgeBase.add_articles` like any article. Each size is measured in a fresh process
(model loaded and warmed first; the query-vector cache is cleared before each call, so every
call embeds its question). Prints a table and writes benchmarks/results/query.json.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from common import PIAF, current_rss_mb, load_corpus, machine, peak_rss_mb, percentile, table, write_json

REAL_ARTICLES = 200


class FillerEmbedder:
    """Vectors for filler chunks: a mix of two real chunk vectors plus noise (no model run)."""

    def __init__(self, model_id: str, real: np.ndarray, seed: int = 0) -> None:
        self.model_id = model_id
        self.dimension = real.shape[1]
        self.real = real
        self.rng = np.random.default_rng(seed)

    def embed_documents(self, texts: list[str]) -> np.ndarray:
        n = len(texts)
        a = self.real[self.rng.integers(len(self.real), size=n)]
        b = self.real[self.rng.integers(len(self.real), size=n)]
        w = self.rng.uniform(0.3, 0.7, size=(n, 1))
        v = w * a + (1 - w) * b + self.rng.normal(0, 0.02, size=(n, self.dimension))
        return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)

    def embed_query(self, text: str) -> np.ndarray:  # pragma: no cover - never queried
        raise NotImplementedError

    def count_tokens(self, texts: list[str]) -> list[int]:
        return [int(len(t.split()) * 1.5) + 1 for t in texts]  # ~1.5 tokens per French word for e5


def build(root: Path, sizes: list[int], questions_n: int, real_n: int) -> Iterator[tuple[int, Path, list[dict[str, Any]]]]:
    """Yield (size, index, questions) as the index grows through ``sizes``.

    Each size is kept as a snapshot folder (``root/size-N``), and so are the real articles
    (``root/real``): a second run with the same ``--index`` measures again without rebuilding.
    """
    from qa import KnowledgeBase
    from qa.documents import Article
    from qa.embeddings.torch import SentenceTransformerEmbedder

    articles, questions, _ = load_corpus(PIAF, None)
    real, rest = articles[:real_n], articles[real_n:]
    keep = {a.id for a in real}
    qs = [{"text": q.text, "doc_id": q.doc_id} for q in questions if q.doc_id in keep][:questions_n]
    index = root / "building"
    if not (root / "real").exists():
        embedder = SentenceTransformerEmbedder("multilingual-e5-small", _cache())
        t = time.perf_counter()
        with KnowledgeBase.open(root / "real", embedder=embedder) as kb:
            kb.add_articles(real)
            chunks = kb.stats()["chunks"]
        print(f"real: {len(real)} articles, {chunks} chunks embedded in {time.perf_counter() - t:.0f} s", flush=True)
    shutil.rmtree(index, ignore_errors=True)
    shutil.copytree(root / "real", index)
    with KnowledgeBase.open(index, embedder=_Reader()) as kb:
        got = kb.store._existing().get(include=["embeddings"])  # noqa: SLF001
        model_id = kb.store.spec()["embedding_model"]
    filler = FillerEmbedder(model_id, np.asarray(got["embeddings"], dtype=np.float32))
    sentences = [s for a in rest for s in re.split(r"(?<=[.!?])\s+", a.text) if len(s.split()) > 4]
    rng = random.Random(0)
    serial = 0
    for size in sizes:
        snapshot = root / f"size-{size}"
        if snapshot.exists():
            with KnowledgeBase.open(snapshot, embedder=_Reader(model_id)) as kb:
                chunks = kb.stats()["chunks"]
            shutil.rmtree(index)
            shutil.copytree(snapshot, index)
            yield chunks, snapshot, qs
            continue
        t = time.perf_counter()
        with KnowledgeBase.open(index, embedder=filler, reader_vectors="off") as kb:
            while (chunks := kb.stats()["chunks"]) < size:
                batch = []
                for _ in range(min(2000, max(1, (size - chunks) // 6))):
                    serial += 1
                    text = " ".join(rng.choice(sentences) for _ in range(rng.randint(15, 30)))
                    batch.append(Article(id=f"filler-{serial}", text=text, title=f"Dépêche {serial}", source="filler"))
                kb.add_articles(batch)
                print(f"  {kb.stats()['chunks']} chunks", flush=True)
        print(f"size {size}: built in {time.perf_counter() - t:.0f} s", flush=True)
        shutil.copytree(index, snapshot)
        yield chunks, snapshot, qs


class _Reader:
    """Stands in for the embedder when an index is only opened to be read or copied."""

    def __init__(self, model_id: str = "") -> None:
        self.model_id = model_id or "intfloat/multilingual-e5-small"


def _cache() -> Path:
    from qa.config import load_settings

    return load_settings().model_cache


def measure(index: Path, questions: list[dict[str, Any]], k: int, backend: str) -> dict[str, Any]:
    """In a fresh process: warm, then time search and ask for each question.

    The snapshots hold torch fp32 vectors; another backend's query encoder (``onnx-int8``: cosine
    0.997 to fp32) is timed against them under the snapshot's model id, so recall@k is then a
    mixed-vector figure; latency is what this measures."""
    from qa import KnowledgeBase
    from qa.config import load_settings
    from qa.embeddings import make_embedder

    t = time.perf_counter()
    settings = load_settings()
    embedder = make_embedder(settings.embedding_model, settings.model_cache, backend=backend)
    with KnowledgeBase.open(index, embedder=_Reader()) as kb:
        embedder._inner.model_id = kb.store.spec()["embedding_model"]  # noqa: SLF001 - see above
    kb = KnowledgeBase.open(index, embedder=embedder)
    kb.warm()
    for q in questions[:5]:  # first-call paths (HNSW load, SQLite pages)
        kb.ask(q["text"], k=k)
    warm_s = time.perf_counter() - t
    cache = kb.embedder._queries  # noqa: SLF001 - each measured call must embed its question
    reader = getattr(kb.answerer(), "reader", None)  # the trained reader (QA_READER on): reads every sentence anew
    search_ms, ask_ms, hits = [], [], 0
    for q in questions:
        cache.clear()
        t = time.perf_counter()
        found = kb.search(q["text"], k=k)
        search_ms.append((time.perf_counter() - t) * 1000)
        hits += q["doc_id"] in [p.doc_id for p in found]
        cache.clear()
        if reader is not None:
            reader.clear_cache()
        t = time.perf_counter()
        kb.ask(q["text"], k=k)
        ask_ms.append((time.perf_counter() - t) * 1000)
    stats = kb.stats()
    return {
        "answerer": getattr(kb.answerer(), "name", "?") + (" + reader" if reader is not None else ""),
        "chunks": stats["chunks"],
        "articles": stats["articles"],
        "questions": len(questions),
        "search_ms_p50": round(percentile(search_ms, 0.5), 1),
        "search_ms_p95": round(percentile(search_ms, 0.95), 1),
        "ask_ms_p50": round(percentile(ask_ms, 0.5), 1),
        "ask_ms_p95": round(percentile(ask_ms, 0.95), 1),
        "recall@k": round(hits / len(questions), 3),
        "open_and_warm_s": round(warm_s, 1),
        "peak_rss_mb": round(peak_rss_mb()),
        "rss_after_mb": round(current_rss_mb()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000, 100_000])
    parser.add_argument("--questions", type=int, default=200)
    parser.add_argument("-k", type=int, default=5)
    parser.add_argument("--real", type=int, default=REAL_ARTICLES, help="PIAF paragraphs embedded for real (default 200)")
    parser.add_argument("--index", help="where to build and keep the indexes (default: a temporary folder); reused if there")
    parser.add_argument("--backend", help="embedding backend timed (default: QA_EMBEDDING_BACKEND, auto = onnx for e5)")
    parser.add_argument("--measure", help=argparse.SUPPRESS)  # internal: measure this index in this process
    args = parser.parse_args()
    if args.backend is None:
        from qa.config import load_settings

        args.backend = load_settings().embedding_backend
    if args.measure:
        print(json.dumps(measure(Path(args.measure), json.loads(sys.stdin.read()), args.k, args.backend)))
        return
    if not PIAF.exists():
        sys.exit(f"{PIAF} not found: the query benchmark needs PIAF v1.0 for real questions")
    root = Path(args.index or tempfile.mkdtemp(prefix="qa-bench-query-"))
    rows, results = [], []
    for size, path, questions in build(root, sorted(args.sizes), args.questions, args.real):
        proc = subprocess.run(
            [sys.executable, __file__, "--measure", str(path), "-k", str(args.k), "--backend", args.backend],
            input=json.dumps(questions),
            capture_output=True,
            text=True,
            check=True,
        )
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        results.append(r)
        rows.append([r["chunks"], r["search_ms_p50"], r["search_ms_p95"], r["ask_ms_p50"], r["ask_ms_p95"], r["recall@k"],
                     r["peak_rss_mb"], r["rss_after_mb"]])  # fmt: skip
        print(f"measured {size}: {r}", flush=True)
    print()
    headers = ["chunks", "search p50 ms", "search p95 ms", "ask p50 ms", "ask p95 ms", f"recall@{args.k}"]
    headers += ["peak RSS MB", "RSS after MB"]
    print(f"query embedding: {args.backend}")
    print(table(headers, rows))
    print(f"\nwrote {write_json('query.json', {'machine': machine(), 'k': args.k, 'backend': args.backend, 'sizes': results})}")


if __name__ == "__main__":
    main()
