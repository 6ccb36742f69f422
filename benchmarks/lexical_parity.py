"""Lexical parity and speed: PostgreSQL BM25 (``PgLexical``) against SQLite FTS5 (``SqliteLexical``), same rows, same questions.

    .venv/bin/python benchmarks/lexical_parity.py --piaf ../shared/data/piaf-v1.0.json --synthetic 100000

``--piaf``: every PIAF paragraph is one chunk (title = its page title, doc_id = its page, source = the page's
category; the dates are made up, one per page and a tenth undated, only so that a date filter has something to
filter). Every question is searched (top 10) on both backends: the share of questions whose top 10 is the same
list (same chunks, same order) and the same set, the largest score difference on a chunk both return, p50/p95
latency per backend. Then filtered parity on a sample: the question's own page left out, one category, a date range.

``--synthetic N``: N chunks with real news term statistics: the OrangeSum articles cut by the product's chunker
(``qa.chunking.chunk_text``, ~200 tokens), topped up to N with filler articles of OrangeSum sentences shuffled
(source ``filler``, random dates), loaded into both backends through ``add()`` in batches (timed), then
``--questions`` of the news question set (benchmarks/data/news-questions.jsonl, their articles are in the corpus)
are searched on both: latency and parity, unfiltered and filtered.

Both backends run in this process on one connection each, as the product does; the script starts its own
PostgreSQL (tests/postgres_server.py: ``initdb`` with the default settings, ``fsync=off``) and stops it at the end.
Each question is searched on both backends in turn (the first one alternating) after ``--warm`` untimed questions.
Prints Markdown tables; writes benchmarks/results/lexical_parity.json and .md.
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import random
import shutil
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from common import PIAF, RESULTS, ROOT, machine, percentile, table, write_json
from tqdm import tqdm

ORANGESUM = ROOT.parent / "shared" / "data" / "orangesum-12k.jsonl.gz"
NEWS_QUESTIONS = ROOT / "benchmarks" / "data" / "news-questions.jsonl"
K = 10
TARGET_PG_P50_MS = 60.0  # the issue's bound: Postgres lexical p50 at 100k chunks
REL_TIE = 1e-9  # scores this close (relative) are a tie: their order is floating-point noise


# -- corpora -----------------------------------------------------------------------------------------------------------
def piaf_corpus(path: Path) -> tuple[list[Any], list[dict[str, Any]]]:
    """The PIAF paragraphs as lexical rows and the questions (text, the page id) in file order."""
    from qa.index.lexical import LexicalRow
    from qa.schema import ArticleMeta

    rng = random.Random(0)
    rows, questions = [], []
    for a, entry in enumerate(json.loads(path.read_text(encoding="utf-8"))["data"]):
        doc_id = f"piaf-{a}"
        day = "" if rng.random() < 0.1 else (date(2015, 1, 1) + timedelta(days=rng.randrange(3650))).isoformat()
        meta = ArticleMeta(doc_id, entry.get("title", ""), entry.get("categorie", ""), "", day)
        for p, paragraph in enumerate(entry["paragraphs"]):
            rows.append(LexicalRow(f"{doc_id}-{p}", paragraph["context"], meta))
            questions += [{"text": q["question"], "doc_id": doc_id} for q in paragraph["qas"] if not q.get("is_impossible")]
    return rows, questions


def _count_tokens(texts: Sequence[str]) -> list[int]:
    return [int(len(t.split()) * 1.5) + 1 for t in texts]  # ~1.5 e5 tokens per French word (as benchmarks/query.py)


def synthetic_corpus(n: int, path: Path) -> tuple[list[Any], dict[str, int]]:
    """``n`` rows: OrangeSum articles chunked as the product chunks them, then filler articles of shuffled sentences."""
    from qa.chunking import chunk_text, split_sentences
    from qa.index.lexical import LexicalRow
    from qa.schema import ArticleMeta

    articles = [json.loads(line) for line in gzip.open(path, "rt", encoding="utf-8")]
    rows: list[Any] = []
    real_articles = 0
    for article in tqdm(articles, desc="chunking OrangeSum", unit="art", mininterval=2):
        if len(rows) >= n:
            break
        meta = ArticleMeta(article["id"], article.get("title", ""), article.get("source", ""), "", article.get("date", "")[:10])
        chunks = chunk_text(article["text"], _count_tokens)
        rows += [LexicalRow(f"{article['id']}#{c.index}", c.text, meta) for c in chunks[: n - len(rows)]]
        real_articles += 1
    real_rows = len(rows)
    sentences = [
        s
        for article in articles
        for s in (article["text"][a:b] for a, b in split_sentences(article["text"]))
        if len(s.split()) > 4
    ]
    rng = random.Random(0)
    serial = 0
    with tqdm(total=n, initial=len(rows), desc="filler chunks", unit="chunk", mininterval=2) as bar:
        while len(rows) < n:
            serial += 1
            text = " ".join(rng.choice(sentences) for _ in range(rng.randint(15, 30)))
            day = "" if rng.random() < 0.05 else (date(2010, 1, 1) + timedelta(days=rng.randrange(4018))).isoformat()
            meta = ArticleMeta(f"filler-{serial}", f"Dépêche {serial}", "filler", "", day)
            chunks = chunk_text(text, _count_tokens)[: n - len(rows)]
            rows += [LexicalRow(f"filler-{serial}#{c.index}", c.text, meta) for c in chunks]
            bar.update(len(chunks))
    words = sum(len(r.text.split()) for r in rows)
    info = {"orangesum_articles": real_articles, "orangesum_chunks": real_rows, "filler_articles": serial,
            "filler_chunks": len(rows) - real_rows, "mean_words_per_chunk": round(words / max(1, len(rows)), 1)}  # fmt: skip
    return rows, info


def news_questions(n: int) -> list[dict[str, Any]]:
    qs = [json.loads(line) for line in NEWS_QUESTIONS.read_text(encoding="utf-8").splitlines() if line.strip()]
    qs = random.Random(0).sample(qs, min(n, len(qs)))
    return [{"text": q["question"], "doc_id": q["article"]} for q in qs]


# -- the two backends ----------------------------------------------------------------------------------------------------
class Backends:
    """SQLite FTS5 in a file of its own and PostgreSQL in a fresh database of the benchmark's server."""

    def __init__(self, work: Path, pg_url: str) -> None:
        from qa.index.lexical import SqliteLexical
        from qa.index.postgres import open_parts
        from qa.index.sqlite import SqliteDatabase

        self.sqlite_db = SqliteDatabase(work / "lexical.sqlite3")
        self.sqlite = SqliteLexical(self.sqlite_db)
        self.parts = open_parts(pg_url)
        self.pg = self.parts.lexical
        self.pg_db = self.parts.manifest.db

    def search(self, name: str) -> Callable[..., list[tuple[str, float]]]:
        return self.sqlite.search if name == "fts5" else self.pg.search

    def load(self, rows: Sequence[Any], batch: int) -> dict[str, float]:
        """``add()`` in batches of ``batch`` rows, one transaction each (as the writer commits), per backend."""
        from qa.index.postgres.lexical import PgLexicalIndex

        seconds = {}
        t = time.perf_counter()
        for i in tqdm(range(0, len(rows), batch), desc="load fts5", unit="batch", mininterval=2):
            with self.sqlite_db.transaction():
                self.sqlite.index.add(rows[i : i + batch])
        seconds["fts5"] = time.perf_counter() - t
        t = time.perf_counter()
        for i in tqdm(range(0, len(rows), batch), desc="load postgres", unit="batch", mininterval=2):
            with self.pg_db.transaction() as conn:
                PgLexicalIndex(conn).add(rows[i : i + batch])
        seconds["postgres"] = time.perf_counter() - t
        return {k: round(v, 1) for k, v in seconds.items()}

    def vacuum_analyze(self) -> float:
        t = time.perf_counter()
        with self.pg_db.read() as conn:  # autocommit: VACUUM runs outside a transaction
            conn.execute("VACUUM ANALYZE lexical_chunks, lexical_postings, lexical_terms, lexical_stats")
        return round(time.perf_counter() - t, 1)

    def sizes(self) -> dict[str, Any]:
        with self.pg_db.read() as conn:
            pg = {
                table: round(conn.execute("SELECT pg_total_relation_size(%s)", (table,)).fetchone()[0] / 2**20, 1)
                for table in ("lexical_chunks", "lexical_postings", "lexical_terms")
            }
            postings = conn.execute("SELECT count(*) FROM lexical_postings").fetchone()[0]
        self.sqlite_db.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        fts5_mb = round(self.sqlite_db.path.stat().st_size / 2**20, 1)
        return {"fts5_file_mb": fts5_mb, "postgres_mb": pg, "postgres_postings": postings}

    def diagnose(self, query: str) -> dict[str, Any]:
        """What each backend makes of the query: its terms after pruning (FTS5) / tokens after pruning (Postgres)."""
        from qa.index.lexical import prune_terms, query_terms
        from qa.index.postgres.lexical import _TOKEN, PgLexicalIndex, search_tokens

        terms = query_terms(query)
        with self.sqlite_db.lock:
            fts_df = self.sqlite.index.doc_freq(terms)
        tokens = search_tokens(query)
        with self.pg_db.read() as conn:
            pg_df = PgLexicalIndex(conn).doc_freq(tokens)
        return {
            "fts5_terms": prune_terms(terms, fts_df),
            "pg_tokens": [t for t in prune_terms(tokens, pg_df) if pg_df.get(t)],
            "multi_token_terms": [t for t in terms if _TOKEN.findall(t) != [t]],
        }

    def close(self) -> None:
        self.sqlite_db.close()
        self.pg_db.close()


# -- measuring ---------------------------------------------------------------------------------------------------------------
def _tie_only(a: list[tuple[str, float]], b: list[tuple[str, float]]) -> bool:
    """The two lists differ only in the order (or the cut at k) of equal scores."""
    if len(a) != len(b):
        return False
    return all(math.isclose(x[1], y[1], rel_tol=REL_TIE, abs_tol=1e-12) for x, y in zip(a, b, strict=True))


def run_questions(
    backends: Backends, questions: list[dict[str, Any]], label: str, make_filters: Callable[[dict[str, Any]], Any], warm: int
) -> dict[str, Any]:
    """Search every question on both backends (alternating which goes first); parity and latency."""
    for q in questions[:warm]:
        for name in ("fts5", "postgres"):
            backends.search(name)(q["text"], K, make_filters(q))
    ms: dict[str, list[float]] = {"fts5": [], "postgres": []}
    same_order = same_set = empty = 0
    max_diff = max_rel = 0.0
    mismatches: list[dict[str, Any]] = []
    kinds: dict[str, int] = {}
    for i, q in enumerate(tqdm(questions, desc=label, unit="q", mininterval=2)):
        filters = make_filters(q)
        hits = {}
        for name in ("fts5", "postgres") if i % 2 == 0 else ("postgres", "fts5"):
            t = time.perf_counter()
            hits[name] = backends.search(name)(q["text"], K, filters)
            ms[name].append((time.perf_counter() - t) * 1000)
        a, b = hits["fts5"], hits["postgres"]
        empty += not a and not b
        ids_a, ids_b = [c for c, _ in a], [c for c, _ in b]
        same_order += ids_a == ids_b
        same_set += set(ids_a) == set(ids_b)
        score_b = dict(b)
        for chunk, s in a:
            if chunk in score_b:
                max_diff = max(max_diff, abs(s - score_b[chunk]))
                max_rel = max(max_rel, abs(s - score_b[chunk]) / max(abs(s), 1e-12))
        if ids_a != ids_b:
            d = backends.diagnose(q["text"])
            kind = (
                "tie order"
                if _tie_only(a, b)
                else "multi-token term"
                if d["multi_token_terms"]
                else "pruning"
                if d["fts5_terms"] != d["pg_tokens"]
                else "other"
            )
            kinds[kind] = kinds.get(kind, 0) + 1
            if len(mismatches) < 10:
                mismatches.append({"question": q["text"], "kind": kind, **d, "fts5": a, "postgres": b})
    n = len(questions)
    return {
        "questions": n,
        "no_hits_either": empty,
        "same_order_pct": round(100 * same_order / n, 2),
        "same_set_pct": round(100 * same_set / n, 2),
        "max_score_diff": max_diff,
        "max_score_rel_diff": max_rel,
        "mismatch_kinds": kinds,
        "fts5_ms_p50": round(percentile(ms["fts5"], 0.5), 2),
        "fts5_ms_p95": round(percentile(ms["fts5"], 0.95), 2),
        "postgres_ms_p50": round(percentile(ms["postgres"], 0.5), 2),
        "postgres_ms_p95": round(percentile(ms["postgres"], 0.95), 2),
        "mismatches": mismatches,
    }


def filter_runs(
    backends: Backends, questions: list[dict[str, Any]], sample: int, source: str, date_range: tuple[str, str], warm: int
) -> dict[str, dict[str, Any]]:
    from qa.filters import Filters

    picked = random.Random(1).sample(questions, min(sample, len(questions)))
    runs = {
        "exclude own article": lambda q: Filters.of(exclude=[q["doc_id"]]),
        f"source = {source}": lambda q: Filters.of(source=source),
        f"date {date_range[0]}..{date_range[1]}": lambda q: Filters.of(date_from=date_range[0], date_to=date_range[1]),
    }
    return {name: run_questions(backends, picked, name, make, warm) for name, make in runs.items()}


def measure_corpus(
    name: str, backends: Backends, rows: list[Any], questions: list[dict[str, Any]], args: argparse.Namespace, filters: dict
) -> dict[str, Any]:
    from qa.filters import NO_FILTERS

    print(f"\n## {name}: {len(rows)} chunks, {len(questions)} questions", flush=True)
    result: dict[str, Any] = {"chunks": len(rows), "load_s": backends.load(rows, args.batch)}
    print(f"loaded in {result['load_s']} s", flush=True)
    before = run_questions(backends, questions[: args.cold], "postgres before ANALYZE", lambda q: NO_FILTERS, 3)
    result["postgres_before_analyze"] = {k: before[k] for k in ("questions", "postgres_ms_p50", "postgres_ms_p95")}
    result["vacuum_analyze_s"] = backends.vacuum_analyze()
    result["sizes"] = backends.sizes()
    result["unfiltered"] = run_questions(backends, questions, "unfiltered", lambda q: NO_FILTERS, args.warm)
    result["filtered"] = filter_runs(backends, questions, args.filter_sample, filters["source"], filters["dates"], args.warm)
    return result


# -- output --------------------------------------------------------------------------------------------------------------------
def markdown(results: dict[str, Any]) -> str:
    parity_rows, load_rows = [], []
    for corpus, r in results["corpora"].items():
        runs = {"no filter": r["unfiltered"], **r["filtered"]}
        for label, m in runs.items():
            parity_rows.append([corpus, r["chunks"], label, m["questions"], m["same_order_pct"], m["same_set_pct"],
                                f"{m['max_score_diff']:.1e}", m["fts5_ms_p50"], m["fts5_ms_p95"], m["postgres_ms_p50"],
                                m["postgres_ms_p95"]])  # fmt: skip
        s = r["sizes"]
        load_rows.append([corpus, r["chunks"], r["load_s"]["fts5"], r["load_s"]["postgres"], r["vacuum_analyze_s"],
                          r["postgres_before_analyze"]["postgres_ms_p50"], s["fts5_file_mb"],
                          round(sum(s["postgres_mb"].values()), 1), s["postgres_postings"]])  # fmt: skip
    headers = ["corpus", "chunks", "filter", "questions", "same top-10 %", "same set %", "max score diff",
               "FTS5 p50 ms", "FTS5 p95 ms", "PG p50 ms", "PG p95 ms"]  # fmt: skip
    load_headers = ["corpus", "chunks", "FTS5 load s", "PG load s", "PG VACUUM ANALYZE s", "PG p50 ms before ANALYZE",
                    "FTS5 file MB", "PG tables MB", "PG postings"]  # fmt: skip
    text = table(headers, parity_rows) + "\n\n" + table(load_headers, load_rows)
    checks = [f"- {c}" for c in results["checks"]]
    return text + ("\n\n" + "\n".join(checks) if checks else "")


def checks(results: dict[str, Any]) -> list[str]:
    out = []
    if "piaf" in results["corpora"]:
        pct = results["corpora"]["piaf"]["unfiltered"]["same_order_pct"]
        out.append(f"PIAF top-10 parity {pct} % (need >= 99 %): {'PASS' if pct >= 99 else 'FAIL'}")
    for corpus, r in results["corpora"].items():
        if corpus.startswith("synthetic") and r["chunks"] >= 100_000:
            p50 = r["unfiltered"]["postgres_ms_p50"]
            verdict = "PASS" if p50 <= TARGET_PG_P50_MS else "FAIL"
            out.append(f"{corpus}: Postgres p50 {p50} ms (need <= {TARGET_PG_P50_MS:.0f} ms): {verdict}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--piaf", help=f"PIAF v1.0 (SQuAD JSON); the parity run (e.g. {PIAF})")
    parser.add_argument("--synthetic", type=int, help="chunks of the scale run (e.g. 100000)")
    parser.add_argument("--orangesum", default=str(ORANGESUM), help="OrangeSum JSON lines (.gz) for --synthetic")
    parser.add_argument("--questions", type=int, default=300, help="news questions searched at --synthetic (default 300)")
    parser.add_argument("--filter-sample", type=int, default=300, help="questions per filtered run (default 300)")
    parser.add_argument("--warm", type=int, default=20, help="untimed questions first (default 20)")
    parser.add_argument("--cold", type=int, default=30, help="questions timed on Postgres before VACUUM ANALYZE (default 30)")
    parser.add_argument("--batch", type=int, default=2000, help="rows per add() and transaction (default 2000)")
    args = parser.parse_args()
    if not args.piaf and not args.synthetic:
        parser.error("give --piaf PATH and/or --synthetic N")
    sys.path.insert(0, str(ROOT / "tests"))
    from postgres_server import PostgresServer

    work = Path(tempfile.mkdtemp(prefix="qa-bench-lexical-"))
    results: dict[str, Any] = {"machine": machine(), "command": " ".join(sys.argv), "k": K, "corpora": {}}
    results["sqlite"] = sqlite3.sqlite_version
    results["load_average_start"] = [round(x, 1) for x in os.getloadavg()]  # the other processes of a shared machine
    t0 = time.perf_counter()
    try:
        with PostgresServer() as server:
            import psycopg

            with psycopg.connect(server.url) as conn:
                settings = ("server_version", "shared_buffers", "work_mem", "effective_cache_size")
                results["postgres"] = {s: conn.execute(f"SHOW {s}").fetchone()[0] for s in settings}
            if args.piaf:
                rows, questions = piaf_corpus(Path(args.piaf))
                backends = Backends(work / "piaf", server.new_database())
                try:
                    results["corpora"]["piaf"] = measure_corpus(
                        "piaf", backends, rows, questions, args, {"source": "Histoire", "dates": ("2017-01-01", "2020-12-31")}
                    )
                finally:
                    backends.close()
            if args.synthetic:
                t = time.perf_counter()
                rows, info = synthetic_corpus(args.synthetic, Path(args.orangesum))
                print(f"built {len(rows)} rows in {time.perf_counter() - t:.0f} s: {info}", flush=True)
                source = next(r.source for r in rows if r.source != "filler")
                backends = Backends(work / "synthetic", server.new_database())
                try:
                    name = f"synthetic-{args.synthetic}"
                    results["corpora"][name] = measure_corpus(
                        name, backends, rows, news_questions(args.questions), args,
                        {"source": source, "dates": ("2015-01-01", "2017-12-31")},
                    )  # fmt: skip
                    results["corpora"][name]["corpus"] = info
                finally:
                    backends.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results["total_s"] = round(time.perf_counter() - t0)
    results["load_average_end"] = [round(x, 1) for x in os.getloadavg()]
    results["checks"] = checks(results)
    text = markdown(results)
    print("\n" + text)
    path = write_json("lexical_parity.json", results)
    md = RESULTS / "lexical_parity.md"
    md.write_text(f"# Lexical parity: PostgreSQL BM25 vs SQLite FTS5\n\n`{results['command']}` ({results['machine']['when']}, "
                  f"PostgreSQL {results['postgres']['server_version']}, SQLite {results['sqlite']}, top-{K})\n\n{text}\n",
                  encoding="utf-8")  # fmt: skip
    print(f"\nwrote {path} and {md}")


if __name__ == "__main__":
    main()
