"""Ingest workers over the shared backend (PostgreSQL + a ``chroma run`` server): how they scale, and that a batch
is written exactly once when workers are SIGKILLed mid-ingest (issue 22).

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/workers.py --exactly-once --scaling 300   # ~12 min on 2 cores
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/workers.py --scaling 2000 --rounds 1     # the issue's full run
    .venv/bin/python benchmarks/workers.py --exactly-once --seed 7                        # a few seconds

The script starts its own PostgreSQL (``tests/postgres_server.py``) and Chroma server (``tests/chroma_server.py``);
every run takes a fresh database and collection.

``--scaling N``: the first N articles of orangesum (../shared/data/orangesum-12k.jsonl.gz) with the real model
(the default embedder and chunking), enqueued as one job; then 1 worker process, and (a fresh database and
collection) 2 worker processes at once, drain the queue. Each worker is this script's ``_worker`` subcommand
(``run_worker(..., until_empty=True)``, as ``qa worker --until-empty``) with one thread (OMP_NUM_THREADS=1,
MKL_NUM_THREADS=1): it loads and warms the model, says ready, and starts on a line on stdin sent to all workers
at once, so the time measured runs from the first claim to the last batch marked done (no model load). Rounds
alternate which configuration goes first (1-2, 2-1, ...). The machine's other load is recorded beside each run
(cores busy, load average), and chunks per worker CPU-second, which other processes' load does not change.
Claims take ``--batch-articles`` articles (default 32: with the library's 256 articles / 200,000 characters a claim
holds ~100 orangesum articles, and 300 articles would be 3 batches that 2 workers cannot share evenly).

``--exactly-once``: 500 small articles (``tests/helpers.write_corpus``), the deterministic ``FakeEmbedder``,
chunks of 60 tokens with 10 of overlap, claims of 32 articles, a 5 s lease; 2 worker processes, killed 4 times in
a seeded order: ``QA_TEST_CRASH_AT=chunks:K`` (after the Chroma write, before the commit), ``commit:K`` (after the
commit, before the replaced chunks are deleted and the rows marked done), ``batch:K`` (after the batch, before the
rows are marked done) and an external SIGKILL a seeded delay after the worker's K-th claim. A dead worker is
replaced at once (a worker waits by itself while a dead one's rows are under a live lease; one that leaves while
rows are open is started again after a short pause). Then the index is compared with a single-process ingest of the
same file into a fresh SQLite index: the manifest ``{doc_id: (content_hash, chunk_ids)}``, Chroma's ids (no
orphans, none missing, no duplicates), each chunk's text and vector, the lexical rows, ``qa check``, and the
queue (every row done, none failed).

Prints Markdown tables and writes benchmarks/results/workers.json and workers.md.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
from common import RESULTS, ROOT, machine, median, table, write_json

sys.path.insert(0, str(ROOT / "tests"))

ORANGESUM = ROOT.parent / "shared" / "data" / "orangesum-12k.jsonl.gz"
FAKE_CHUNK_TOKENS = 60
FAKE_CHUNK_OVERLAP = 10
EXACTLY_ONCE_ARTICLES = 500
EXACTLY_ONCE_BATCH = 32
EXACTLY_ONCE_LEASE = 5.0
RESTART_PAUSE = 0.5
"""Seconds before a worker that left with rows still open is started again (their lease may not have run out)."""
VECTOR_TOLERANCE = 1e-6
"""Largest difference allowed between a chunk's vector here and in the single-process run (float32 through HTTP)."""
SECRET_ENV = ("QA_DATABASE_URL", "QA_CHROMA_URL", "QA_COLLECTION", "QA_INDEX_DIR", "QA_TEST_CRASH_AT")


# -- the worker process ------------------------------------------------------------------------------------------------
def emit(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, "t": time.time(), **fields}), flush=True)


def worker_main(argv: list[str]) -> int:
    """One queue worker (``python benchmarks/workers.py _worker ...``): JSON lines on stdout (ready, claim, batch,
    end); ``--go`` waits for a line on stdin before it claims anything."""
    ap = argparse.ArgumentParser(prog="workers.py _worker")
    ap.add_argument("--index", required=True)
    ap.add_argument("--database-url", required=True)
    ap.add_argument("--chroma-url", required=True)
    ap.add_argument("--collection", required=True)
    ap.add_argument("--embedder", choices=("real", "fake"), default="real")
    ap.add_argument("--lease", type=float, default=60.0)
    ap.add_argument("--batch-articles", type=int, default=32)
    ap.add_argument("--go", action="store_true")
    args = ap.parse_args(argv)

    from qa import KnowledgeBase
    from qa.index.worker import run_worker

    where = {"database_url": args.database_url, "chroma_url": args.chroma_url, "collection": args.collection}
    if args.embedder == "fake":
        from helpers import FakeEmbedder

        kb = KnowledgeBase.open(
            args.index, embedder=FakeEmbedder(), chunk_tokens=FAKE_CHUNK_TOKENS, chunk_overlap=FAKE_CHUNK_OVERLAP, **where
        )
    else:
        kb = KnowledgeBase.open(args.index, **where)
        # load and run the model once: the time measured is the queue's, not the model's load
        kb.embedder.count_tokens(["Échauffement du modèle."])
        kb.embedder.embed_documents(["Échauffement du modèle, une phrase courte.", "Une autre phrase pour le modèle."])
    stages = time_stages(kb)
    emit("ready", pid=os.getpid())
    if args.go:
        sys.stdin.readline()
    queue = kb.index.queue
    claim = queue.claim
    first_claim: list[float] = []

    def claim_and_tell(*a: Any, **k: Any) -> Any:
        asked = time.time()
        claimed = claim(*a, **k)
        if claimed is not None:
            first_claim[:] = first_claim or [asked]
            emit("claim", articles=len(claimed.ids), rows=claimed.ids)
        return claimed

    queue.claim = claim_and_tell  # type: ignore[method-assign]
    last_batch: list[float] = []

    def on_batch(stats: Any) -> None:
        last_batch[:] = [time.time()]
        emit("batch", batches=stats.batches, articles=stats.articles, chunks=stats.chunks)

    started, cpu = time.time(), time.process_time()
    stats = run_worker(
        kb.writer, queue, lease=args.lease, batch_articles=args.batch_articles, until_empty=True, on_batch=on_batch
    )
    emit(
        "end",
        batches=stats.batches,
        articles=stats.articles,
        chunks=stats.chunks,
        failed_batches=stats.failed_batches,
        started=started,
        first_claim=first_claim[0] if first_claim else None,
        last_batch=last_batch[0] if last_batch else None,
        cpu_seconds=time.process_time() - cpu,
        stages={k: round(v, 3) for k, v in stages.items()},
    )
    kb.close()
    return 0


def time_stages(kb: Any) -> dict[str, float]:
    """Wall seconds the worker spends in each stage of a batch (wrapped where the writer and the worker call them)."""
    seconds: dict[str, float] = {}

    def wrap(owner: Any, attr: str, stage: str) -> None:
        fn = getattr(owner, attr)

        def timed(*a: Any, **k: Any) -> Any:
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                seconds[stage] = seconds.get(stage, 0.0) + time.perf_counter() - t

        setattr(owner, attr, timed)

    def wrap_enter(owner: Any, attr: str, stage: str) -> None:
        hold = getattr(owner, attr)

        @contextlib.contextmanager
        def timed(*a: Any, **k: Any) -> Any:
            t = time.perf_counter()
            with hold(*a, **k):
                seconds[stage] = seconds.get(stage, 0.0) + time.perf_counter() - t
                yield

        setattr(owner, attr, timed)

    writer = kb.writer
    wrap(writer.embedder, "embed_documents", "embed")
    wrap(writer.embedder, "count_tokens", "count tokens")
    wrap(writer.store, "upsert", "chroma upsert")
    wrap(writer.store, "delete", "chroma delete")
    wrap(writer.manifest, "journal", "journal")
    wrap(writer.manifest, "put_many", "commit (manifest + BM25)")
    wrap_enter(writer.commit_lock, "exclusive", "wait for the commit lock")
    wrap(kb.index.queue, "claim", "claim")
    wrap(kb.index.queue, "complete", "complete")
    return seconds


# -- the harness's side of a worker ------------------------------------------------------------------------------------
class Worker:
    """A ``_worker`` subprocess and the events it printed (read on a thread)."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log: Path) -> None:
        self.name = name
        self.events: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._log = log.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "_worker", *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            env=env,
            cwd=ROOT,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue
            with self._lock:
                self.events.append(event)

    def count(self, event: str) -> int:
        with self._lock:
            return sum(1 for e in self.events if e["event"] == event)

    def all(self, event: str) -> list[dict[str, Any]]:
        with self._lock:
            return [e for e in self.events if e["event"] == event]

    def last(self, event: str) -> dict[str, Any] | None:
        found = self.all(event)
        return found[-1] if found else None

    def go(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write("go\n")
        self.process.stdin.flush()

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not self.count("ready"):
            if self.process.poll() is not None:
                raise RuntimeError(f"worker {self.name} exited with {self.process.returncode} before it was ready")
            if time.monotonic() > deadline:
                raise RuntimeError(f"worker {self.name} not ready after {timeout:.0f}s")
            time.sleep(0.05)

    def finish(self, timeout: float | None = None) -> int:
        rc = self.process.wait(timeout=timeout)
        self._reader.join(timeout=10)
        self._log.close()
        return rc

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGKILL)


def worker_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SECRET_ENV}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")]))
    env.update(
        HF_HUB_OFFLINE="1",
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        OPENBLAS_NUM_THREADS="1",
        TOKENIZERS_PARALLELISM="false",
        ANONYMIZED_TELEMETRY="False",
        **extra,
    )
    return env


def worker_args(index: Path, url: str, chroma_url: str, collection: str, **options: Any) -> list[str]:
    args = ["--index", str(index), "--database-url", url, "--chroma-url", chroma_url, "--collection", collection]
    for key, value in options.items():
        if value is True:
            args.append(f"--{key.replace('_', '-')}")
        elif value is not None and value is not False:
            args += [f"--{key.replace('_', '-')}", str(value)]
    return args


def queue_rows(url: str) -> list[tuple[Any, ...]]:
    """``(id, doc_id, state, outcome, attempts, error)`` of every queue row."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute("SELECT id, doc_id, state, outcome, attempts, error FROM ingest_queue ORDER BY id").fetchall()


# -- part 1: scaling with the real model -------------------------------------------------------------------------------
def orangesum_jsonl(n: int, out: Path) -> Path:
    """The first ``n`` orangesum articles as JSON Lines (a temporary file: the text never enters the repository)."""
    with gzip.open(ORANGESUM, "rt", encoding="utf-8") as src, out.open("w", encoding="utf-8") as dst:
        for i, line in enumerate(src):
            if i >= n:
                break
            dst.write(line if line.endswith("\n") else line + "\n")
    return out


def cpu_jiffies() -> tuple[int, int]:
    """``(busy, total)`` jiffies of the whole machine so far (/proc/stat; zeros where there is none)."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError, IndexError):
        return 0, 0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # guest time is already counted in user
    return total - idle, total


def scaling_run(workers: int, corpus: Path, n: int, pg: Any, chroma_url: str, work: Path, batch_articles: int, tag: str) -> dict:
    from qa import KnowledgeBase

    url, collection = pg.new_database(), f"scaling-{tag}-{uuid.uuid4().hex[:8]}"
    index = work / f"index-{tag}"
    with KnowledgeBase.open(index, database_url=url, chroma_url=chroma_url, collection=collection) as kb:
        report = kb.ingest([corpus], wait=False)
    assert report.queued == n, f"enqueued {report.queued} articles, not {n}: {report.errors[:3]}"
    env = worker_env()
    procs = [
        Worker(
            f"{tag}-w{i}",
            worker_args(index, url, chroma_url, collection, embedder="real", batch_articles=batch_articles, go=True),
            env,
            work / f"{tag}-w{i}.log",
        )
        for i in range(workers)
    ]
    try:
        for p in procs:
            p.wait_ready(timeout=600)
        busy0, total0 = cpu_jiffies()
        for p in procs:
            p.go()
        rcs = [p.finish(timeout=7200) for p in procs]
        busy1, total1 = cpu_jiffies()
    finally:
        for p in procs:
            if p.process.poll() is None:
                p.kill()
    ends = [p.last("end") for p in procs]
    if any(rc != 0 for rc in rcs) or any(e is None for e in ends):
        raise RuntimeError(f"scaling run {tag}: workers exited with {rcs}; see {work}/{tag}-w*.log")
    with KnowledgeBase.open(index, database_url=url, chroma_url=chroma_url, collection=collection) as kb:
        queue = kb.stats()["queue"]
        stored = kb.store.count()
    starts = [e["first_claim"] for e in ends if e["first_claim"] is not None]
    # drained when the last batch was marked done (a worker without a batch left saw the queue empty, at its end)
    first, last = min(starts), max(e["last_batch"] or e["t"] for e in ends)
    chunks = sum(e["chunks"] for e in ends)
    seconds = last - first
    per_worker = []
    for e in ends:
        busy = (e["last_batch"] or e["t"]) - (e["first_claim"] or e["t"])
        per_worker.append(
            {
                "batches": e["batches"],
                "articles": e["articles"],
                "chunks": e["chunks"],
                "busy_s": round(busy, 2),
                "chunks_per_s": round(e["chunks"] / busy, 3) if busy > 0 else None,
                "cpu_per_wall": round(e["cpu_seconds"] / max(e["t"] - e["started"], 1e-9), 3),
                "stages_s": e["stages"],
            }
        )
    return {
        "workers": workers,
        "articles": n,
        "chunks": chunks,
        "chroma_count": stored,
        "queue": {k: queue[k] for k in ("queued", "claimed", "done", "failed")},
        "seconds": round(seconds, 2),
        "chunks_per_s": round(chunks / seconds, 3),
        "per_worker": per_worker,
        "workers_cpu_cores": round(sum(e["cpu_seconds"] for e in ends) / seconds, 2),
        "chunks_per_cpu_s": round(chunks / max(sum(e["cpu_seconds"] for e in ends), 1e-9), 3),
        "machine_busy_cores": round((os.cpu_count() or 1) * (busy1 - busy0) / max(total1 - total0, 1), 2),
        "load_average_1min": round(os.getloadavg()[0], 2),
    }


def scaling(n: int, rounds: int, batch_articles: int, pg: Any, chroma_url: str, work: Path) -> dict:
    corpus = orangesum_jsonl(n, work / f"orangesum-{n}.jsonl")
    runs: list[dict] = []
    for r in range(rounds):
        order = (1, 2) if r % 2 == 0 else (2, 1)
        for workers in order:
            started = time.perf_counter()
            run = scaling_run(workers, corpus, n, pg, chroma_url, work, batch_articles, f"r{r}-{workers}w")
            run["round"] = r
            run["wall_s_with_model_load"] = round(time.perf_counter() - started, 1)
            runs.append(run)
            print(
                f"  round {r}, {workers} worker(s): {run['chunks']} chunks in {run['seconds']:.1f}s = "
                f"{run['chunks_per_s']:.2f} chunks/s  (workers: "
                + ", ".join(f"{w['chunks']} chunks {w['chunks_per_s']}/s cpu/wall {w['cpu_per_wall']}" for w in run["per_worker"])
                + f"); cores busy: workers {run['workers_cpu_cores']}, machine {run['machine_busy_cores']}",
                flush=True,
            )
    one = [r["chunks_per_s"] for r in runs if r["workers"] == 1]
    two = [r["chunks_per_s"] for r in runs if r["workers"] == 2]
    ratios = [
        next(x["chunks_per_s"] for x in runs if x["round"] == r and x["workers"] == 2)
        / next(x["chunks_per_s"] for x in runs if x["round"] == r and x["workers"] == 1)
        for r in range(rounds)
    ]
    stages: dict[str, float] = {}
    busy = 0.0
    for run in runs:
        for w in run["per_worker"]:
            busy += w["busy_s"]
            for stage, seconds in w["stages_s"].items():
                stages[stage] = stages.get(stage, 0.0) + seconds
    return {
        "articles": n,
        "rounds": rounds,
        "stage_share": {k: round(v / busy, 4) for k, v in sorted(stages.items(), key=lambda kv: -kv[1])},
        "batch_articles": batch_articles,
        "runs": runs,
        "one_worker_chunks_per_s": round(median(one), 3),
        "two_workers_chunks_per_s": round(median(two), 3),
        "ratio_per_round": [round(x, 3) for x in ratios],
        "ratio_of_medians": round(median(two) / median(one), 3),
        "cpu_efficiency_ratio": round(
            median([r["chunks_per_cpu_s"] for r in runs if r["workers"] == 2])
            / median([r["chunks_per_cpu_s"] for r in runs if r["workers"] == 1]),
            3,
        ),
        "target": 1.7,
    }


# -- part 2: exactly once under SIGKILLs (FakeEmbedder) ----------------------------------------------------------------
def plan_kills(seed: int) -> list[dict]:
    """Four kills, one of each kind, in a seeded order; K (which batch or claim of the process) seeded too."""
    rng = random.Random(seed)
    kinds = ["chunks", "commit", "batch", "external"]
    rng.shuffle(kinds)
    plan = []
    for kind in kinds:
        k = rng.randint(1, 2)
        step = {"kind": kind, "k": k}
        if kind == "external":
            step["delay_s"] = round(rng.uniform(0.0, 0.15), 3)
        plan.append(step)
    return plan


def fake_kb(index: Path, **where: Any) -> Any:
    from qa import KnowledgeBase

    from helpers import FakeEmbedder

    return KnowledgeBase.open(
        index, embedder=FakeEmbedder(), chunk_tokens=FAKE_CHUNK_TOKENS, chunk_overlap=FAKE_CHUNK_OVERLAP, **where
    )


def snapshot(kb: Any) -> dict:
    """Manifest, Chroma's ids (as listed: duplicates would show), texts and vectors, lexical rows, check."""
    manifest = {}
    for doc_id in kb.manifest.doc_ids():
        record = kb.manifest.get(doc_id)
        manifest[doc_id] = (record.content_hash, list(record.chunk_ids))
    col = kb.store._existing()  # the raw collection: ids as Chroma lists them, with texts and vectors
    ids: list[str] = []
    texts: dict[str, str] = {}
    vectors: dict[str, Any] = {}
    offset = 0
    while col is not None:
        got = col.get(include=["documents", "embeddings"], limit=1000, offset=offset)
        for cid, text, vector in zip(got["ids"], got["documents"], got["embeddings"], strict=True):
            ids.append(cid)
            texts[cid] = text
            vectors[cid] = np.asarray(vector, dtype=np.float32)
        if len(got["ids"]) < 1000:
            break
        offset += 1000
    check = kb.check()
    return {
        "manifest": manifest,
        "chroma_ids": ids,
        "chroma_count": kb.store.count(),
        "texts": texts,
        "vectors": vectors,
        "lexical": sorted(kb.manifest.chunk_map()),
        "lexical_rows": kb.index.lexical.count(),
        "check_ok": check.ok,
        "check": {"pending": len(check.pending), "orphans": len(check.orphans), "missing": len(check.missing)},
        "problems": check.problems(),
    }


def exactly_once(seed: int, pg: Any, chroma_url: str, work: Path, timeout: float = 600.0) -> dict:
    from helpers import write_corpus

    corpus = write_corpus(work / "corpus-500.jsonl", EXACTLY_ONCE_ARTICLES, seed=seed)
    url, collection = pg.new_database(), f"exactly-once-{uuid.uuid4().hex[:8]}"
    index = work / "index-exactly-once"
    where = {"database_url": url, "chroma_url": chroma_url, "collection": collection}
    with fake_kb(index, **where) as kb:
        report = kb.ingest([corpus], wait=False)
    assert report.queued == EXACTLY_ONCE_ARTICLES, report.errors[:3]

    plan = plan_kills(seed)
    todo = list(plan)
    kills: list[dict] = []
    exits: list[dict] = []
    started_workers = 0
    slots: list[dict | None] = [None, None]
    restart_at = [0.0, 0.0]
    t0 = time.monotonic()

    def start(slot: int) -> None:
        nonlocal started_workers
        step = todo.pop(0) if todo else None
        extra = {"QA_TEST_CRASH_AT": f"{step['kind']}:{step['k']}"} if step and step["kind"] != "external" else {}
        name = f"eo-{started_workers}"
        started_workers += 1
        args = worker_args(
            index, url, chroma_url, collection, embedder="fake", lease=EXACTLY_ONCE_LEASE, batch_articles=EXACTLY_ONCE_BATCH
        )
        worker = Worker(name, args, worker_env(**extra), work / f"{name}.log")
        slots[slot] = {"worker": worker, "step": step, "killed_at": None, "mid_batch": None}

    def open_rows() -> int:
        return sum(1 for row in queue_rows(url) if row[2] in ("queued", "claimed"))

    start(0)
    start(1)
    while True:
        if time.monotonic() - t0 > timeout:
            for s in slots:
                if s is not None:
                    s["worker"].kill()
            raise RuntimeError(f"exactly-once: the queue was not drained in {timeout:.0f}s")
        for i, s in enumerate(slots):
            if s is None:
                continue
            w: Worker = s["worker"]
            step = s["step"]
            if step and step["kind"] == "external" and s["killed_at"] is None and w.process.poll() is None:
                claims = w.all("claim")
                if len(claims) >= step["k"] and time.time() >= claims[step["k"] - 1]["t"] + step["delay_s"]:
                    s["mid_batch"] = w.count("batch") < step["k"]
                    w.kill()
                    s["killed_at"] = time.time()
            rc = w.process.poll()
            if rc is None:
                continue
            w.finish()
            killed = rc == -signal.SIGKILL
            exit_info = {"worker": w.name, "rc": rc, "step": step, "claims": w.count("claim"), "batches": w.count("batch")}
            if rc not in (0, -signal.SIGKILL):  # a worker that failed by itself: keep why
                exit_info["stderr_tail"] = (work / f"{w.name}.log").read_text(errors="replace")[-2000:]
            exits.append(exit_info)
            if killed and step is not None:
                kills.append(
                    {**step, "worker": w.name, "claims": exit_info["claims"], "batches": exit_info["batches"]}
                    | ({"mid_batch": s["mid_batch"]} if step["kind"] == "external" else {})
                )
            elif step is not None:  # it left before its kill came: the next worker takes it
                todo.insert(0, step)
            slots[i] = None
            restart_at[i] = time.monotonic() + (0.0 if killed else RESTART_PAUSE)
        if all(s is None for s in slots) and open_rows() == 0:
            break
        for i, s in enumerate(slots):
            if s is None and time.monotonic() >= restart_at[i] and open_rows() > 0:
                start(i)
        time.sleep(0.05)
    seconds = time.monotonic() - t0

    rows = queue_rows(url)
    with fake_kb(index, **where) as kb:
        shared = snapshot(kb)
        queue = kb.stats()["queue"]
    with fake_kb(work / "index-reference") as ref_kb:
        ref_report = ref_kb.ingest([corpus])
        reference = snapshot(ref_kb)
    assert ref_report.ok, ref_report.errors

    manifest_ids = {c for _, chunk_ids in shared["manifest"].values() for c in chunk_ids}
    chroma = shared["chroma_ids"]
    differing_docs = sorted(
        d
        for d in set(shared["manifest"]) | set(reference["manifest"])
        if shared["manifest"].get(d) != reference["manifest"].get(d)
    )
    common_ids = set(shared["vectors"]) & set(reference["vectors"])
    vector_gap = max((float(np.abs(shared["vectors"][i] - reference["vectors"][i]).max()) for i in common_ids), default=0.0)
    if set(shared["vectors"]) != set(reference["vectors"]):
        vector_gap = float("inf")
    attempts: dict[int, int] = {}
    for row in rows:
        attempts[row[4]] = attempts.get(row[4], 0) + 1
    outcomes: dict[str, int] = {}
    for row in rows:
        outcomes[str(row[3])] = outcomes.get(str(row[3]), 0) + 1
    results = {
        "articles": EXACTLY_ONCE_ARTICLES,
        "seed": seed,
        "batch_articles": EXACTLY_ONCE_BATCH,
        "lease_s": EXACTLY_ONCE_LEASE,
        "plan": plan,
        "kills": kills,
        "kills_done": len(kills),
        "worker_processes": started_workers,
        "exits": exits,
        "seconds": round(seconds, 1),
        "queue": {k: queue[k] for k in ("queued", "claimed", "done", "failed")},
        "rows_retried": sum(n for a, n in attempts.items() if a > 1),
        "attempts_histogram": {str(a): n for a, n in sorted(attempts.items())},
        "outcomes": outcomes,
        "row_errors": sorted({str(r[5])[:200] for r in rows if r[5]}),
        "manifest_equal": shared["manifest"] == reference["manifest"],
        "manifest_docs": len(shared["manifest"]),
        "manifest_chunks": len(manifest_ids),
        "differing_docs": differing_docs[:20],
        "chroma_ids_listed": len(chroma),
        "chroma_count": shared["chroma_count"],
        "chroma_duplicates": len(chroma) - len(set(chroma)),
        "orphans": len(set(chroma) - manifest_ids),
        "missing": len(manifest_ids - set(chroma)),
        "chroma_ids_equal_reference": sorted(set(chroma)) == sorted(set(reference["chroma_ids"])),
        "texts_equal_reference": shared["texts"] == reference["texts"],
        "vectors_equal_reference": vector_gap < VECTOR_TOLERANCE,
        "vectors_max_abs_diff": float(vector_gap),
        "lexical_equal_manifest": shared["lexical"] == sorted(manifest_ids) and shared["lexical_rows"] == len(manifest_ids),
        "check_ok": shared["check_ok"],
        "check": shared["check"],
        "problems": shared["problems"][:10],
        "reference_check_ok": reference["check_ok"],
        "reference_chunks": len(reference["chroma_ids"]),
    }
    results["passed"] = bool(
        results["kills_done"] == 4
        and results["manifest_equal"]
        and results["chroma_duplicates"] == 0
        and results["chroma_count"] == len(manifest_ids)
        and results["orphans"] == 0
        and results["missing"] == 0
        and results["chroma_ids_equal_reference"]
        and results["texts_equal_reference"]
        and results["vectors_equal_reference"]
        and results["lexical_equal_manifest"]
        and results["check_ok"]
        and results["reference_check_ok"]
        and results["queue"]["done"] == EXACTLY_ONCE_ARTICLES
        and results["queue"]["failed"] == 0
        and results["queue"]["queued"] == 0
        and results["queue"]["claimed"] == 0
    )
    return results


# -- report ------------------------------------------------------------------------------------------------------------
def scaling_markdown(s: dict) -> str:
    rows = [
        [
            r["round"],
            r["workers"],
            r["chunks"],
            f"{r['seconds']:.1f}",
            f"{r['chunks_per_s']:.2f}",
            " / ".join(f"{w['chunks']} ({w['chunks_per_s']}/s, cpu {w['cpu_per_wall']})" for w in r["per_worker"]),
            f"{r['workers_cpu_cores']:.2f} / {r['machine_busy_cores']:.2f}",
            f"{r['chunks_per_cpu_s']:.2f}",
            r["load_average_1min"],
            r["wall_s_with_model_load"],
        ]
        for r in s["runs"]
    ]
    out = [
        f"### Scaling: {s['articles']} orangesum articles, real model, claims of {s['batch_articles']} articles",
        "",
        table(
            [
                "round",
                "workers",
                "chunks",
                "first claim → drained (s)",
                "chunks/s",
                "per worker: chunks (chunks/s, cpu/wall)",
                "cores used: workers / whole machine",
                "chunks per worker CPU-s",
                "load avg",
                "wall with model load (s)",
            ],
            rows,
        ),
        "",
        f"1 worker: {s['one_worker_chunks_per_s']:.2f} chunks/s, 2 workers: {s['two_workers_chunks_per_s']:.2f} chunks/s "
        f"(medians); ratio {s['ratio_of_medians']:.2f} (per round: {', '.join(f'{x:.2f}' for x in s['ratio_per_round'])}); "
        f"target ≥ {s['target']}.",
        f"Chunks per worker CPU-second, 2 workers / 1 worker: {s['cpu_efficiency_ratio']:.2f} (1.0: a second worker costs "
        "nothing in coordination; the chunks/s ratio is then bounded by the cores the machine leaves to the workers).",
        "",
        "Share of the workers' busy time by stage: "
        + ", ".join(f"{stage} {share:.1%}" for stage, share in s["stage_share"].items() if share >= 0.0005)
        + ".",
    ]
    return "\n".join(out)


def exactly_once_markdown(e: dict) -> str:
    kills = table(
        ["kind", "K", "worker", "claims", "batches done", "note"],
        [
            [
                k["kind"],
                k["k"],
                k["worker"],
                k["claims"],
                k["batches"],
                (f"+{k['delay_s']}s after claim, mid-batch: {k['mid_batch']}" if k["kind"] == "external" else ""),
            ]
            for k in e["kills"]
        ],
    )
    checks = table(
        ["check", "result"],
        [
            ["kills done", f"{e['kills_done']} / 4"],
            ["worker processes started", e["worker_processes"]],
            ["queue (queued/claimed/done/failed)", "/".join(str(e["queue"][k]) for k in ("queued", "claimed", "done", "failed"))],
            ["rows retried (attempts > 1)", f"{e['rows_retried']} (attempts: {e['attempts_histogram']})"],
            ["row outcomes", e["outcomes"]],
            ["manifest == single-process SQLite run", e["manifest_equal"]],
            [
                "Chroma ids listed / count / manifest chunks",
                f"{e['chroma_ids_listed']} / {e['chroma_count']} / {e['manifest_chunks']}",
            ],
            ["duplicates / orphans / missing", f"{e['chroma_duplicates']} / {e['orphans']} / {e['missing']}"],
            [
                "Chroma ids, texts, vectors == reference",
                f"{e['chroma_ids_equal_reference']}, {e['texts_equal_reference']}, {e['vectors_equal_reference']}",
            ],
            ["lexical rows == manifest chunks", e["lexical_equal_manifest"]],
            [
                "qa check ok (pending/orphans/missing)",
                f"{e['check_ok']} ({e['check']['pending']}/{e['check']['orphans']}/{e['check']['missing']})",
            ],
            ["seconds", e["seconds"]],
            ["passed", e["passed"]],
        ],
    )
    return "\n".join(
        [
            f"### Exactly once: {e['articles']} articles, 2 workers, seed {e['seed']}, claims of {e['batch_articles']}, "
            f"lease {e['lease_s']:.0f}s",
            "",
            kills,
            "",
            checks,
        ]
    )


def previous_results() -> dict[str, Any]:
    """The parts of benchmarks/results/workers.json written by earlier runs (empty if none or unreadable)."""
    try:
        data = json.loads((RESULTS / "workers.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    parts = ("exactly_once", "scaling")
    return {part: data[part] for part in parts if isinstance(data.get(part), dict) and "machine" in data[part]}


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "_worker":
        return worker_main(sys.argv[2:])
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scaling", type=int, default=0, metavar="N", help="orangesum articles per scaling run (0: skip)")
    ap.add_argument(
        "--rounds", type=int, default=0, help="scaling rounds (1 and 2 workers each; default 2 up to 500 articles, else 1)"
    )
    ap.add_argument("--batch-articles", type=int, default=32, help="articles per claim in the scaling runs (default 32)")
    ap.add_argument("--exactly-once", action="store_true", help="the kill test with the FakeEmbedder")
    ap.add_argument("--seed", type=int, default=22)
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder (servers' data, worker logs)")
    args = ap.parse_args()
    if not args.scaling and not args.exactly_once:
        ap.error("nothing to do: pass --scaling N and/or --exactly-once")
    for key in SECRET_ENV:
        os.environ.pop(key, None)

    from chroma_server import ChromaServer
    from postgres_server import PostgresServer

    # a part run now replaces its own results; the other part's, from an earlier run, stay
    results = previous_results()
    run_info = {"machine": machine(), "command": " ".join(["benchmarks/workers.py", *sys.argv[1:]])}
    work = Path(tempfile.mkdtemp(prefix="qa-workers-"))
    ok = True
    try:
        with PostgresServer() as pg, ChromaServer(work / "chroma") as chroma:
            if args.exactly_once:
                print(f"exactly-once: {EXACTLY_ONCE_ARTICLES} articles, 2 workers, 4 kills (seed {args.seed}) ...", flush=True)
                e = exactly_once(args.seed, pg, chroma.url, work)
                results["exactly_once"] = {**e, **run_info}
                print(exactly_once_markdown(e) + "\n", flush=True)
                ok = ok and e["passed"]
            if args.scaling:
                rounds = args.rounds or (2 if args.scaling <= 500 else 1)
                print(f"scaling: {args.scaling} orangesum articles, {rounds} round(s) of 1 and 2 workers ...", flush=True)
                s = scaling(args.scaling, rounds, args.batch_articles, pg, chroma.url, work)
                results["scaling"] = {**s, **run_info}
                print(scaling_markdown(s) + "\n", flush=True)
    finally:
        if not args.keep:
            import shutil

            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"kept {work}")
    path = write_json("workers.json", results)
    sections = ["# Ingest workers over PostgreSQL + Chroma server"]
    for part, render in (("exactly_once", exactly_once_markdown), ("scaling", scaling_markdown)):
        if part in results:
            r = results[part]
            where = f"{r['machine']['when']}, {r['machine']['cores']} cores"
            sections.append(render(r) + f"\n\n`{r['command']}` ({where})")
    (RESULTS / "workers.md").write_text("\n\n".join(sections) + "\n", encoding="utf-8")
    print(f"wrote {path} and {RESULTS / 'workers.md'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
