"""Hybrid search through ``qa serve`` at scale, on both backends: SQLite + embedded Chroma, and PostgreSQL + a
``chroma run`` server.

    .venv/bin/python benchmarks/serve_scale.py --chunks 2000                # a smoke run (a minute)
    .venv/bin/python benchmarks/serve_scale.py --chunks 100000              # the issue's 100k point
    .venv/bin/python benchmarks/serve_scale.py --chunks 100000 --keep /tmp/qa-scale   # keep the indexes, reuse them

The issue's target: hybrid search through ``qa serve`` at 1M chunks, or the most this machine builds in an hour
(synthetic vectors, real-text term statistics), with 8 clients: p50 and p95 reported for both backends; at 100k
chunks p50 <= 60 ms on the Postgres backend.

**Corpus** (real French text, read from ../shared/data, never copied into the repository), one chunk per article
or so: the PIAF v1.0 paragraphs (761 articles, whose 3,835 questions are the queries), then the orangesum news
articles cut into pieces of whole sentences (40 to 150 words, title, date and source kept), then, once orangesum
is used up, "filler" articles of 3 to 8 orangesum sentences drawn at random (seeded): every word of the index is
real French, so BM25 sees real term statistics at every size.

**Vectors**: the deterministic ``FakeEmbedder`` of ``tests/helpers.py`` (a hashed bag of accent-folded words, 256
dimensions, no model): building costs no inference, and a query's vector is lexically meaningful, so the dense half
of hybrid search does real work on a real HNSW index. Chunks of ``--chunk-tokens`` 200 (the default), 40 of overlap,
counted in words.

**Build**: ``KnowledgeBase.open(..., embedder=FakeEmbedder()).add_articles(batch)`` in batches of ``--batch``
articles, with a tqdm bar, until the index holds ``--chunks`` chunks or ``--max-build-minutes`` ran out (then the
size reached is reported): (a) ``sqlite`` a plain index folder; (b) ``postgres`` a fresh PostgreSQL
(``tests/postgres_server.py``) + ``chroma run`` (``tests/chroma_server.py``). Each build is timed.

**Serve**: one fake-embedder replica per backend (uvicorn on ``create_app``, as ``benchmarks/failover.py`` and
``tests/test_postgres_processes.py`` start it; ``--threads`` reader threads, 4 as ``qa serve``), both up at once. For
each ``--clients`` level, the load alternates between the backends in ``--rounds`` slices (A B, then B A, ...) so
that both see the same machine; each backend gets ``--duration`` seconds per level in all, after a ``--warmup``
of the same load (not timed). Each client sends one ``POST /search`` (``mode: hybrid``, k=5) at a time, a different
PIAF question each time. Reported per backend and level: requests, errors, throughput, p50/p95/p99, and hit@5
(the question's own PIAF paragraph among the 5: a sanity check that search finds things at that size).

**CPU per request**: the CPU seconds (``/proc``) the replica, PostgreSQL (the server and its backends), ``chroma
run`` and the clients (this process) spend during the timed slices, divided by the requests: what one search costs
the machine, part by part. With 8 clients the 2 cores are the limit, so p50 ≈ 8 × total / 2 cores.

Prints Markdown tables and writes benchmarks/results/serve_scale-<chunks>.json and .md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gzip
import itertools
import json
import os
import random
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from common import PIAF, RESULTS, ROOT, LeanHttp, machine, peak_rss_mb, percentile, table, write_json

sys.path.insert(0, str(ROOT / "tests"))

ORANGESUM = ROOT.parent / "shared" / "data" / "orangesum-12k.jsonl.gz"
MIN_WORDS, MAX_WORDS = 40, 150
SENTENCE_END = re.compile(r"(?<=[.!?…])\s+")
BACKENDS = ("sqlite", "postgres")


# -- the corpus ------------------------------------------------------------------------------------------------------
def piaf() -> tuple[list[Any], list[dict[str, str]]]:
    """PIAF v1.0's paragraphs as articles, and its questions (text, doc id)."""
    from qa.evaluation import load_squad

    articles, questions = load_squad(PIAF)
    return articles, [{"text": q.text, "doc_id": q.doc_id} for q in questions]


def orangesum() -> Iterator[dict[str, Any]]:
    with gzip.open(ORANGESUM, "rt", encoding="utf-8") as fh:
        for line in fh:
            yield json.loads(line)


def groups(sentences: list[str]) -> Iterator[str]:
    """Consecutive sentences, ``MIN_WORDS`` to ``MAX_WORDS`` words a piece (a longer sentence is a piece alone)."""
    piece: list[str] = []
    words = 0
    for s in sentences:
        n = len(s.split())
        if piece and words + n > MAX_WORDS:
            if words >= MIN_WORDS:
                yield " ".join(piece)
            piece, words = [], 0
        piece.append(s)
        words += n
    if words >= MIN_WORDS:
        yield " ".join(piece)


def corpus(seed: int = 0) -> Iterator[Any]:
    """PIAF paragraphs, then orangesum in pieces, then filler articles of random orangesum sentences (forever)."""
    from qa.documents import Article

    yield from piaf()[0]
    pool: list[str] = []
    for record in orangesum():
        sentences = [s for s in SENTENCE_END.split(" ".join(record["text"].split())) if s]
        pool.extend(s for s in sentences if 4 <= len(s.split()) <= 60)
        title = " ".join(record.get("title", "").split())
        for j, text in enumerate(groups(sentences)):
            yield Article(id=f"{record['id']}-{j}", text=text, title=title, date=record.get("date") or "", source="orangesum")
    rng = random.Random(seed)
    for serial in itertools.count(1):
        text = " ".join(rng.choice(pool) for _ in range(rng.randint(3, 8)))
        yield Article(id=f"filler-{serial}", text=text, title=f"Dépêche {serial}", source="filler")


# -- the builds ------------------------------------------------------------------------------------------------------
def du_mb(path: Path) -> float:
    return round(sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6, 1)


def build(kb: Any, label: str, target: int, batch: int, max_seconds: float) -> dict[str, Any]:
    """Add articles to ``kb`` until it holds ``target`` chunks or ``max_seconds`` ran out."""
    from tqdm import tqdm

    stream = corpus()
    chunks = articles = 0
    started = time.perf_counter()
    with tqdm(total=target, unit="chunk", desc=f"build {label}", mininterval=5, smoothing=0.1) as bar:
        while chunks < target:
            if time.perf_counter() - started > max_seconds:
                bar.write(f"{label}: --max-build-minutes reached at {chunks} chunks")
                break
            size = max(1, min(batch, int((target - chunks) / 1.2)))  # ~1.1 chunks an article: do not overshoot much
            articles_in = list(itertools.islice(stream, size))
            report = kb.add_articles(articles_in)
            if report.errors:
                raise RuntimeError(f"{label}: {report.errors[:3]}")
            chunks += report.chunks_written
            articles += len(report.added) + len(report.updated)
            bar.update(report.chunks_written)
    seconds = time.perf_counter() - started
    stats = kb.stats()
    return {
        "backend": label,
        "articles": stats["articles"],
        "chunks": stats["chunks"],
        "build_s": round(seconds, 1),
        "chunks_per_s": round(chunks / seconds, 1) if seconds else None,
        "complete": stats["chunks"] >= target,
        "build_peak_rss_mb": round(peak_rss_mb()),
    }


def open_kb(backend: str, where: dict[str, Any], chunk_tokens: int, chunk_overlap: int) -> Any:
    from qa import KnowledgeBase

    from helpers import FakeEmbedder

    options: dict[str, Any] = {"chunk_tokens": chunk_tokens, "chunk_overlap": chunk_overlap, "reader": "off"}
    if backend == "postgres":
        options |= {"database_url": where["database_url"], "chroma_url": where["chroma_url"], "collection": "scale"}
    return KnowledgeBase.open(where["index_dir"], embedder=FakeEmbedder(), **options)


def postgres_database(pg: Any, name: str) -> str:
    """``name`` on the server (created if missing): its URL."""
    import psycopg

    with psycopg.connect(pg.url, autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is None:
            conn.execute(f"CREATE DATABASE {name}")
    return pg.url.rsplit("/", 1)[0] + f"/{name}"


def database_mb(url: str) -> float:
    import psycopg

    with psycopg.connect(url) as conn:
        return round(conn.execute("SELECT pg_database_size(current_database())").fetchone()[0] / 1e6, 1)


# -- the load --------------------------------------------------------------------------------------------------------
async def load(
    url: str, questions: list[dict[str, str]], counter: Iterator[int], clients: int, seconds: float, k: int
) -> dict[str, Any]:
    """``clients`` tasks, one ``POST /search`` (hybrid) at a time each, for ``seconds``, each on its own keep-alive
    connection (:class:`common.LeanHttp`: the clients share the machine with what they measure)."""
    latencies: list[float] = []
    found: list[bool] = []
    errors: dict[str, int] = {}
    loop = asyncio.get_running_loop()
    stop = loop.time() + seconds

    async def client() -> None:
        http = LeanHttp(url)
        try:
            while loop.time() < stop:
                q = questions[next(counter) % len(questions)]
                t0 = loop.time()
                try:
                    status, body = await http.post("/search", {"question": q["text"], "k": k, "mode": "hybrid"})
                except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                    errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                    continue
                if status != 200:
                    errors[str(status)] = errors.get(str(status), 0) + 1
                    continue
                latencies.append((loop.time() - t0) * 1000)
                found.append(q["doc_id"] in {p["doc_id"] for p in body})
        finally:
            await http.close()

    began = loop.time()
    await asyncio.gather(*(client() for _ in range(clients)))
    elapsed = loop.time() - began
    return {"ms": latencies, "found": found, "errors": errors, "seconds": elapsed}


def summarise(backend: str, clients: int, parts: list[dict[str, Any]]) -> dict[str, Any]:
    ms = [x for p in parts for x in p["ms"]]
    found = [x for p in parts for x in p["found"]]
    errors: dict[str, int] = {}
    for p in parts:
        for kind, n in p["errors"].items():
            errors[kind] = errors.get(kind, 0) + n
    seconds = sum(p["seconds"] for p in parts)
    return {
        "backend": backend,
        "clients": clients,
        "seconds": round(seconds, 1),
        "requests": len(ms),
        "errors": sum(errors.values()),
        "error_kinds": errors,
        "throughput_rps": round(len(ms) / seconds, 1) if seconds else None,
        "p50_ms": round(percentile(ms, 0.5), 1) if ms else None,
        "p95_ms": round(percentile(ms, 0.95), 1) if ms else None,
        "p99_ms": round(percentile(ms, 0.99), 1) if ms else None,
        "hit@5": round(sum(found) / len(found), 3) if found else None,
    }


# -- CPU per request ---------------------------------------------------------------------------------------------------
def _stat(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (PostgreSQL's backends, Chroma's workers)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat(int(entry.name))) is not None:
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        out.append(todo.pop())
        todo.extend(children.get(out[-1], []))
    return out


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of ``pids`` (Linux /proc; 0 for those gone)."""
    ticks = os.sysconf("SC_CLK_TCK")
    return sum((int(f[11]) + int(f[12])) / ticks for f in map(_stat, pids) if f is not None)


class CpuMeter:
    """CPU seconds spent by each part (the replica, PostgreSQL, Chroma, the clients: this process) during the timed
    slices of a backend's load: what one search costs the machine, part by part."""

    def __init__(self, parts: dict[str, int], alone: frozenset[str] = frozenset({"clients"})) -> None:
        self.parts = parts  # name -> root pid: the process and its descendants, but only the process for ``alone``
        self.alone = alone  # (this process: the replicas and `chroma run` are its children)
        self.spent = dict.fromkeys(parts, 0.0)
        self._start: dict[str, float] = {}

    def _pids(self, name: str) -> list[int]:
        return [self.parts[name]] if name in self.alone else process_tree(self.parts[name])

    def __enter__(self) -> CpuMeter:
        self._start = {name: cpu_seconds(self._pids(name)) for name in self.parts}
        return self

    def __exit__(self, *exc: object) -> None:
        for name in self.parts:  # processes started meanwhile (a new PostgreSQL backend) count from 0
            self.spent[name] += cpu_seconds(self._pids(name)) - self._start[name]


def first_request_ms(url: str, question: str) -> float:
    t0 = time.perf_counter()
    httpx.post(f"{url}/search", json={"question": question, "k": 5, "mode": "hybrid"}, timeout=300).raise_for_status()
    return round((time.perf_counter() - t0) * 1000, 1)


def markdown(result: dict[str, Any]) -> str:
    builds, rows = result["builds"], result["load"]
    lines = [
        f"# Hybrid search through `qa serve` at {result['config']['chunks']} chunks: SQLite vs PostgreSQL",
        "",
        f"`{result['command']}` — {result['machine']['cores']} cores, {result['machine']['when']}; FakeEmbedder vectors "
        f"(256 d), real French text (PIAF + orangesum); replica threads {result['config']['threads']}.",
        "",
        table(
            [
                "backend",
                "articles",
                "chunks",
                "build s",
                "chunks/s",
                "complete",
                "on disk MB",
                "replica ready s",
                "first search ms",
            ],  # fmt: skip
            [
                [
                    b["backend"],
                    b["articles"],
                    b["chunks"],
                    b["build_s"],
                    b["chunks_per_s"],
                    b["complete"],
                    b["disk_mb"],
                    b.get("ready_s"),
                    b.get("first_search_ms"),
                ]  # fmt: skip
                for b in builds
            ],
        ),
        "",
        table(
            ["backend", "clients", "requests", "req/s", "p50 ms", "p95 ms", "p99 ms", "errors", "hit@5"],
            [
                [
                    r["backend"],
                    r["clients"],
                    r["requests"],
                    r["throughput_rps"],
                    r["p50_ms"],
                    r["p95_ms"],
                    r["p99_ms"],
                    r["errors"],
                    r["hit@5"],
                ]  # fmt: skip
                for r in rows
            ],
        ),
    ]
    lines += [
        "",
        "CPU per request (ms, from /proc: what one search costs the machine, part by part; the clients are this process)",
        "",
        table(
            ["backend", "clients", "replica", "postgres", "chroma", "clients (load)", "total", "2 cores / total = req/s"],
            [
                [
                    r["backend"],
                    r["clients"],
                    *(r.get("cpu_ms_per_request", {}).get(n, "–") for n in ("replica", "postgres", "chroma", "clients")),
                    r.get("cpu_ms_per_request", {}).get("total"),
                    round(2000 / r["cpu_ms_per_request"]["total"]) if r.get("cpu_ms_per_request", {}).get("total") else None,
                ]
                for r in rows
            ],
        ),
    ]
    if result.get("ratios"):
        lines += ["", "postgres / sqlite, same run: " + "; ".join(f"{k}: {v}" for k, v in result["ratios"].items())]
    if result.get("target"):
        lines += ["", result["target"]]
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--chunks", type=int, default=100_000, help="chunks per index (default 100000)")
    ap.add_argument("--backends", default="sqlite,postgres", help="comma-separated: sqlite, postgres")
    ap.add_argument("--batch", type=int, default=2000, help="articles per add_articles call (default 2000)")
    ap.add_argument("--max-build-minutes", type=float, default=15.0, help="per backend; then the size reached is served")
    ap.add_argument("--chunk-tokens", type=int, default=200)
    ap.add_argument("--chunk-overlap", type=int, default=40)
    ap.add_argument("--clients", default="8", help="comma-separated concurrency levels (default 8)")
    ap.add_argument("--duration", type=float, default=20.0, help="timed seconds per backend and level (default 20)")
    ap.add_argument("--rounds", type=int, default=2, help="slices the duration is cut into, alternating the backends")
    ap.add_argument("--warmup", type=float, default=3.0, help="seconds of untimed load per backend and level")
    ap.add_argument("-k", type=int, default=5)
    ap.add_argument("--threads", type=int, default=4, help="each replica's reader threads (qa serve's default: 4)")
    ap.add_argument("--keep", type=Path, help="build into (and reuse) this folder; default: a temporary one, removed")
    args = ap.parse_args()
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    if not set(backends) <= set(BACKENDS):
        ap.error(f"--backends: {', '.join(BACKENDS)}")
    levels = [int(c) for c in args.clients.split(",")]
    for name in [n for n in os.environ if n.startswith("QA_")]:  # no setting of the developer's leaks in
        del os.environ[name]
    os.environ["QA_READER"] = "off"

    from failover import Replica, replica_env

    from chroma_server import ChromaServer, free_port
    from postgres_server import PostgresServer

    work = args.keep or Path(tempfile.mkdtemp(prefix="qa-serve-scale-"))
    work = work / f"chunks-{args.chunks}"
    work.mkdir(parents=True, exist_ok=True)
    for folder in (work.parent, work):  # PostgreSQL runs as the postgres user when this runs as root: let it in
        folder.chmod(0o755)
    questions = piaf()[1]
    random.Random(1).shuffle(questions)
    builds: list[dict[str, Any]] = []
    rows: list[dict[str, Any]] = []
    replicas: dict[str, Replica] = {}
    with contextlib.ExitStack() as stack:
        where: dict[str, dict[str, Any]] = {}
        envs: dict[str, dict[str, str]] = {}
        if "sqlite" in backends:
            where["sqlite"] = {"index_dir": str(work / "sqlite")}
            envs["sqlite"] = replica_env(QA_INDEX_DIR=where["sqlite"]["index_dir"])
        if "postgres" in backends:
            pg = PostgresServer(work / "pg")
            stack.callback(pg.stop)
            pg.start()
            chroma = stack.enter_context(ChromaServer(work / "chroma-server"))
            url = postgres_database(pg, "qa_scale")
            where["postgres"] = {"index_dir": str(work / "pg-index"), "database_url": url, "chroma_url": chroma.url}
            envs["postgres"] = replica_env(
                QA_INDEX_DIR=str(work / "pg-index"), QA_DATABASE_URL=url, QA_CHROMA_URL=chroma.url, QA_COLLECTION="scale"
            )
        for backend in backends:
            done = work / f"{backend}-build.json"
            if done.exists():  # --keep: built by an earlier run (complete or not)
                built = json.loads(done.read_text()) | {"reused": True}
                print(f"{backend}: reusing the index built before ({built['chunks']} chunks)", flush=True)
            else:
                kb = open_kb(backend, where[backend], args.chunk_tokens, args.chunk_overlap)
                try:
                    built = build(kb, backend, args.chunks, args.batch, args.max_build_minutes * 60)
                finally:
                    kb.close()
                done.write_text(json.dumps(built))
            if backend == "sqlite":
                built["disk_mb"] = du_mb(work / "sqlite")
            else:
                built["disk_mb"] = round(du_mb(work / "chroma-server") + database_mb(where["postgres"]["database_url"]), 1)
            builds.append(built)
            print(f"built: {built}", flush=True)

        for backend in backends:
            log = work / f"replica-{backend}.log"
            replica = Replica(
                backend,
                envs[backend],
                free_port(),
                log,
                chunk_tokens=args.chunk_tokens,
                chunk_overlap=args.chunk_overlap,
                threads=args.threads,
            ).start()
            stack.callback(replica.stop)
            replicas[backend] = replica
            t = time.perf_counter()
            replica.wait_ready(timeout=900)
            built = next(b for b in builds if b["backend"] == backend)
            built["ready_s"] = round(time.perf_counter() - t, 1)
            built["first_search_ms"] = first_request_ms(replica.url, questions[-1]["text"])
            print(f"{backend} replica ready in {built['ready_s']} s; first search {built['first_search_ms']} ms", flush=True)

        counter = itertools.count()
        roots: dict[str, dict[str, int]] = {}
        for backend, replica in replicas.items():
            assert replica.process is not None
            roots[backend] = {"replica": replica.process.pid, "clients": os.getpid()}
            if backend == "postgres":
                roots[backend]["postgres"] = int((work / "pg" / "data" / "postmaster.pid").read_text().split()[0])
                assert chroma.process is not None
                roots[backend]["chroma"] = chroma.process.pid
        for clients in levels:
            parts: dict[str, list[dict[str, Any]]] = {b: [] for b in backends}
            meters = {b: CpuMeter(roots[b]) for b in backends}
            for backend in backends:  # warm-up, untimed
                asyncio.run(load(replicas[backend].url, questions, counter, clients, args.warmup, args.k))
            for r in range(args.rounds):
                for backend in backends if r % 2 == 0 else backends[::-1]:
                    with meters[backend]:
                        part = asyncio.run(
                            load(replicas[backend].url, questions, counter, clients, args.duration / args.rounds, args.k)
                        )
                    parts[backend].append(part)
                    print(
                        f"{backend} × {clients} round {r + 1}: {len(part['ms'])} requests, "
                        f"p50 {percentile(part['ms'], 0.5) if part['ms'] else None:.0f} ms",
                        flush=True,
                    )
            for b in backends:
                row = summarise(b, clients, parts[b])
                row["cpu_ms_per_request"] = {
                    name: round(1000 * spent / max(1, row["requests"]), 2) for name, spent in meters[b].spent.items()
                }
                row["cpu_ms_per_request"]["total"] = round(sum(row["cpu_ms_per_request"].values()), 2)
                rows.append(row)
        for replica in replicas.values():
            replica.stop()
        logs = {b: r.log.read_text(errors="replace")[-2000:] for b, r in replicas.items()}

    ratios: dict[str, Any] = {}
    for clients in levels:
        got = {r["backend"]: r for r in rows if r["clients"] == clients}
        if len(got) == 2 and got["sqlite"]["p50_ms"] and got["postgres"]["p50_ms"]:
            ratios[f"p50 × {clients} clients"] = round(got["postgres"]["p50_ms"] / got["sqlite"]["p50_ms"], 2)
            ratios[f"p95 × {clients} clients"] = round(got["postgres"]["p95_ms"] / got["sqlite"]["p95_ms"], 2)
    target = ""
    pg_rows = [r for r in rows if r["backend"] == "postgres" and r["clients"] == 8]
    pg_build = next((b for b in builds if b["backend"] == "postgres"), None)
    if pg_rows and pg_build:
        p50 = pg_rows[0]["p50_ms"]
        verdict = "met" if p50 is not None and p50 <= 60 else "NOT met"
        target = (
            f"Target (at 100k chunks, 8 clients, Postgres backend, p50 <= 60 ms): p50 {p50} ms at "
            f"{pg_build['chunks']} chunks — {verdict}"
            + ("" if pg_build["chunks"] >= 100_000 else " (this index is smaller than 100k: not the target's size)")
        )
    result = {
        "command": " ".join([".venv/bin/python", "benchmarks/serve_scale.py", *sys.argv[1:]]),
        "machine": machine(),
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "builds": builds,
        "load": rows,
        "ratios": ratios,
        "target": target,
        "replica_log_tails": logs,
    }
    md = markdown(result)
    print("\n" + md)
    name = f"serve_scale-{args.chunks}"
    write_json(f"{name}.json", result)
    (RESULTS / f"{name}.md").write_text(md, encoding="utf-8")
    print(f"wrote {RESULTS / name}.json and .md")
    if args.keep is None:
        shutil.rmtree(work.parent, ignore_errors=True)
    return 0 if all(r["errors"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
