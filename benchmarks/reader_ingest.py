"""What storing the reader's sentence vectors costs an ingest: reader off, reader on, reader on with
``QA_READER_VECTORS=off``, interleaved, each in a fresh process on a fresh index.

    .venv/bin/python benchmarks/reader_ingest.py [--articles 150] [--rounds 2]

The first ``--articles`` PIAF paragraphs (or corpus/ without PIAF) through ``kb.add_articles``, the models loaded
before the clock starts. Prints seconds and chunks per run.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

RUN = r"""
import sys, tempfile, time
sys.path.insert(0, {here!r})
from common import load_corpus
from qa import KnowledgeBase
articles, _, _ = load_corpus(None, {n})
kb = KnowledgeBase.open(tempfile.mkdtemp(prefix="qa-reader-ingest-"))
kb.embedder.embed_documents(["passage: warm"])
if kb.settings.reader == "on":
    kb.answerer().load()
t = time.perf_counter()
kb.add_articles(articles)
print(f"{{time.perf_counter() - t:.1f}} s, {{kb.stats()['chunks']}} chunks")
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--articles", type=int, default=150)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    code = RUN.format(here=str(Path(__file__).resolve().parent), n=args.articles)
    for _ in range(args.rounds):
        for reader, vectors in (("off", "on"), ("on", "on"), ("on", "off")):
            env = dict(os.environ, QA_READER=reader, QA_READER_VECTORS=vectors, HF_HUB_OFFLINE="1")
            done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
            got = done.stdout.strip() if done.returncode == 0 else "failed: " + done.stderr.strip()[-300:]
            print(f"QA_READER={reader} QA_READER_VECTORS={vectors}: {got}", flush=True)


if __name__ == "__main__":
    main()
