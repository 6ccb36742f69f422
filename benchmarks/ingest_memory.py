"""Peak memory of ingesting N synthetic articles: it should not grow with the corpus.

    python benchmarks/ingest_memory.py 500 5000            # fake hashing embedder (fast), one fresh process per size
    python benchmarks/ingest_memory.py --real 50 200       # the real multilingual-e5-small

Each size runs in a fresh process (peak RSS, ``ru_maxrss``, is per process): it writes N
articles of ~150 words as JSON Lines, ingests them into a fresh index and prints the peak RSS
before and after the ingest, the chunk count and the time. The fake embedder hashes words
into 384 dimensions, so what is measured is qa + Chroma + SQLite, not a model.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

WORDS = (
    "le la les un une des port ville président gouvernement économie accord sommet réforme élection budget ministre "
    "Marseille Almaty Bruxelles Provence lavande trafic record croissance inflation grève syndicat tribunal enquête"
).split()


class HashEmbedder:
    model_id = "bench/hash-384"
    dimension = 384

    def _vector(self, text: str) -> np.ndarray:
        v = np.zeros(self.dimension, dtype=np.float32)
        for word in re.findall(r"\w+", text.lower()):
            h = int.from_bytes(hashlib.md5(word.encode()).digest()[:4], "little")
            v[h % self.dimension] += 1.0
        return v / (np.linalg.norm(v) or 1.0)

    def embed_documents(self, texts):
        return np.stack([self._vector(t) for t in texts]) if texts else np.zeros((0, self.dimension), np.float32)

    def embed_query(self, text):
        return self._vector(text)

    def count_tokens(self, texts):
        return [len(t.split()) for t in texts]


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def write_corpus(path: Path, n: int) -> None:
    rng = random.Random(n)
    with path.open("w", encoding="utf-8") as fh:
        for i in range(n):
            sentences = [" ".join(rng.choice(WORDS) for _ in range(15)).capitalize() + "." for _ in range(10)]
            fh.write(json.dumps({"id": f"a{i}", "title": f"Article {i}", "text": " ".join(sentences)}, ensure_ascii=False) + "\n")


def one(n: int, real: bool) -> dict:
    from qa import KnowledgeBase

    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus.jsonl"
        write_corpus(corpus, n)
        embedder = None if real else HashEmbedder()
        with KnowledgeBase.open(Path(tmp) / "index", embedder=embedder) as kb:
            if real:
                kb.warm()
            before = peak_mb()
            started = time.perf_counter()
            report = kb.ingest([corpus])
            seconds = time.perf_counter() - started
            stats = kb.stats()
        return {
            "articles": n,
            "chunks": stats["chunks"],
            "embedder": "multilingual-e5-small" if real else "hash (fake)",
            "seconds": round(seconds, 1),
            "peak_rss_mb_before_ingest": round(before, 1),
            "peak_rss_mb": round(peak_mb(), 1),
            "errors": len(report.errors),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sizes", nargs="*", type=int, default=[500, 5000])
    parser.add_argument("--real", action="store_true", help="use the real embedding model")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(args.one, args.real)))
        return
    print("| articles | chunks | embedder | ingest s | peak RSS before ingest (MB) | peak RSS (MB) |")
    print("|---|---|---|---|---|---|")
    for n in args.sizes:
        cmd = [sys.executable, __file__, "--one", str(n)] + (["--real"] if args.real else [])
        r = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1])
        print(
            f"| {r['articles']} | {r['chunks']} | {r['embedder']} | {r['seconds']} | "
            f"{r['peak_rss_mb_before_ingest']} | {r['peak_rss_mb']} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
