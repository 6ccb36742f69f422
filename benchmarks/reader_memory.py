"""What the reader and the span model add to a query process's memory, beside the embedder.

    .venv/bin/python benchmarks/reader_memory.py [--questions 40] [--cache DIR]

In one fresh process (``OMP_NUM_THREADS=1`` unless set): the embedder loads and embeds the questions; then the
reader scores and the span model reads the first 5 sentences of each question's PIAF paragraph (what the reading
answerer reads per question). Resident memory (``/proc/self/status``: anonymous and file-backed pages apart) after
each step, and the bytes of the reader's and the span model's own ONNX weights (what they hold beyond the embedder's
sessions). File-backed pages are mostly e5's word-table rows of the tokens read, shared with every process mapping
the file and reclaimable; anonymous pages are this process's own (ONNX Runtime's pre-packed weights, its arenas).
To compare with another commit, run it from that commit's worktree with its own ``--cache``. Writes
``benchmarks/results/reader_memory.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from common import PIAF, machine, write_json  # noqa: E402


def status() -> dict[str, int]:
    """VmRSS, RssAnon and RssFile of this process, in MB."""
    out: dict[str, int] = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key = line.split(":")[0]
        if key in ("VmRSS", "RssAnon", "RssFile"):
            out[key] = int(line.split()[1]) // 1024
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--questions", type=int, default=40)
    ap.add_argument("--cache", help="model cache (default: the configured one)")
    args = ap.parse_args()
    if not PIAF.exists():
        print(f"{PIAF} not found: this benchmark reads PIAF questions and paragraphs", file=sys.stderr)
        return 2
    from qa.answering.reading.reader import READER, Reader
    from qa.answering.reading.span import SPAN, SpanReader
    from qa.chunking import split_sentences
    from qa.config import load_settings
    from qa.embeddings.onnx import OnnxEmbedder

    cache = Path(args.cache) if args.cache else load_settings().model_cache
    pairs = [
        (p["qas"][0]["question"], p["context"])
        for a in json.loads(PIAF.read_text(encoding="utf-8"))["data"]
        for p in a["paragraphs"][:1]
        if p["qas"]
    ][: args.questions]
    steps = {"start": status()}
    embedder = OnnxEmbedder("multilingual-e5-small", cache).load()
    for question, _ in pairs:
        embedder.embed_query(question)
    steps["embedder"] = status()
    reader, spans = Reader(cache).load(), SpanReader(cache).load()
    for question, paragraph in pairs:
        sentences = [paragraph[s:e] for s, e in split_sentences(paragraph)][:5]
        reader.score(question, sentences)
        spans.read(question, sentences)
    steps["reader_and_span"] = status()
    own = {
        name: sum(f.stat().st_size for f in folder.glob("*.data"))
        for name, folder in (
            ("reader", READER.folder_for(reader.manifest, cache)),
            ("span", SPAN.folder_for(spans.manifest, cache)),
        )
    }
    added = {k: steps["reader_and_span"][k] - steps["embedder"][k] for k in steps["start"]}
    result = {"questions": len(pairs), "steps": steps, "added_by_reader_and_span_mb": added,
              "own_onnx_weights_mb": {k: round(v / 2**20, 1) for k, v in own.items()}, "machine": machine()}  # fmt: skip
    print(json.dumps(result, indent=2))
    write_json("reader_memory.json", result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
