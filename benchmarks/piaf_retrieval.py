"""Retrieval on a SQuAD-format file (PIAF v1.0 by default): ingest rate, search latency, recall@k, MRR@10.

    .venv/bin/python benchmarks/piaf_retrieval.py ../shared/data/piaf-v1.0.json [--limit N] [--index DIR]

Each paragraph is ingested as one article into a fresh index (unless --index names
an existing one); every question is searched once. Prints a table and writes JSON
to benchmarks/results/.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

from tqdm import tqdm

from qa import KnowledgeBase
from qa.evaluation import first_relevant_rank, load_squad, mrr_at, recall_at


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("file", nargs="?", default="../shared/data/piaf-v1.0.json")
    parser.add_argument("--index", help="index folder (default: a fresh temporary one)")
    parser.add_argument("--limit", type=int, help="only the first N questions")
    parser.add_argument("--modes", default="dense,lexical,hybrid", help="retrieval modes to compare")
    parser.add_argument("--out", default="benchmarks/results/piaf_retrieval.json")
    args = parser.parse_args()

    articles, questions = load_squad(args.file)
    questions = questions[: args.limit] if args.limit else questions
    index = Path(args.index or tempfile.mkdtemp(prefix="qa-piaf-"))
    kb = KnowledgeBase.open(index)

    t0 = time.perf_counter()
    kb.warm()
    load_s = time.perf_counter() - t0
    report = kb.add_articles(tqdm(articles, desc="ingest", unit=" articles"))
    ingest_s = report.seconds

    stats = kb.stats()
    result: dict = {
        "file": str(args.file),
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}, python {platform.python_version()}",
        "model": stats["model"],
        "articles": len(articles),
        "chunks": stats["chunks"],
        "questions": len(questions),
        "model_load_s": round(load_s, 2),
        "ingest_s": round(ingest_s, 2),
        "ingest_chunks_per_s": round(report.chunks_written / ingest_s, 1) if report.chunks_written else None,
        "ingest_articles_per_s": round(len(report.added) / ingest_s, 1) if report.added else None,
        "modes": {},
    }
    for mode in args.modes.split(","):
        ranks: list[int | None] = []
        latencies: list[float] = []
        for q in tqdm(questions, desc=f"search ({mode})", unit=" questions"):
            t = time.perf_counter()
            hits = kb.search(q.text, k=20, mode=mode)
            latencies.append((time.perf_counter() - t) * 1000)
            ranks.append(first_relevant_rank([h.doc_id for h in hits], q.doc_id))
        result["modes"][mode] = {
            "search_ms_p50": round(statistics.median(latencies), 1),
            "search_ms_p95": round(statistics.quantiles(latencies, n=20)[18], 1) if len(latencies) > 20 else None,
            "recall@1": round(recall_at(ranks, 1), 4),
            "recall@5": round(recall_at(ranks, 5), 4),
            "recall@10": round(recall_at(ranks, 10), 4),
            "mrr@10": round(mrr_at(ranks, 10), 4),
        }
    for key, value in result.items():
        if key != "modes":
            print(f"{key:>22}  {value}")
    columns = ["recall@1", "recall@5", "recall@10", "mrr@10", "search_ms_p50", "search_ms_p95"]
    print("\n| mode | " + " | ".join(columns) + " |\n|---|" + "---|" * len(columns))
    for mode, row in result["modes"].items():
        print(f"| {mode} | " + " | ".join(str(row[c]) for c in columns) + " |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
