"""Failover of ``qa serve`` replicas over the shared backend (PostgreSQL + a ``chroma run`` server), under load.

    .venv/bin/python benchmarks/failover.py --duration 40            # the issue's run: kill B at 15 s, restart at 25 s
    .venv/bin/python benchmarks/failover.py --duration 12 --kill-at 4 --restart-at 8   # a quick look

The issue's target: 2 replicas under a 40 s load, one SIGKILLed at 15 s and restarted at 25 s, while a writer
updates and deletes articles: 0 wrong or half-written answers; with one client retry, 0 errors seen; p95 in the
10 s after the kill <= 2x steady state.

The script starts its own PostgreSQL (``tests/postgres_server.py``) and Chroma server (``tests/chroma_server.py``),
takes a fresh database and collection, and starts two replicas A and B as separate processes: uvicorn on
``create_app(settings=load_settings())`` with ``qa.http.service.open_kb`` opening the index with the deterministic
``FakeEmbedder`` of ``tests/helpers.py`` (chunks of 60 tokens, 10 of overlap), as ``tests/test_postgres_processes.py``
does; ``QA_READER=off`` (the lexical answerer). It seeds ``--docs`` articles through A's ``POST /documents``: each
version of article ``docN`` is ``tests/ingest_driver.versioned_text`` (3 paragraphs, one chunk each, each naming
the article, the version and the part).

Then, after ``--warmup`` seconds (default 5) of the same load, not timed (the first 4 s of load on fresh replicas
measured 3-5 times slower than the rest on this machine), for
``--duration`` seconds (t = 0 is the end of the warm-up):

* ``--clients`` asyncio clients send one request at a time, alternating between the replicas: ``POST /search``
  (k=30, "docN partie", modes hybrid / lexical / dense in turn) and every ``--ask-every``-th request ``POST /ask``
  ("Que contient la partie pP de l'article docN ?": answered, with citations).
  A request that fails (connection refused or reset, a timeout, a 5xx) is sent once more to the other replica; an
  error counts only when that retry fails too. Latency is what the client sees: the first try plus the retry.
* a writer (one more asyncio task) posts a new version of one article after another through A and B in turn, and
  deletes an article every ``--delete-every``-th write (it comes back with its next version); a failed write is
  tried once on the other replica. Every version is recorded as written *before* it is sent.
* at ``--kill-at`` s replica B is SIGKILLed (unless ``--no-kill-mid-write``: at the writer's next ``POST /documents``
  through B, 20-120 ms after it left, so that B dies mid-write); at ``--restart-at`` s it is started again on the
  same port. An interrupted write is finished or undone by the next write (the replicas' logs say so).

Every answer is checked. ``/search`` (k=30 covers every chunk of the 10 articles): for each (article, version)
seen, all 3 parts, one version per article (else *mixed*); a passage whose text is not part of a version ever
written for its article (or that names another article) is *wrong*. A version seen with parts missing is checked at
once with ``GET /documents/{id}`` on the same replica: still that version, whole (3 chunks), it was committed whole
before the search too (a version's chunks commit in one transaction), so the search missed committed chunks — a
*retrieval miss*, reported apart (Chroma's approximate nearest-neighbour query, in ``dense`` mode, was seen to leave
out a live vector: ``query(n_results=46)`` gave 29 ids while ``count()`` was 30); otherwise it counts as *partial*
(half an article shown). ``/ask``: every passage and
every citation's passage must be right in the same sense, every quote a substring of its passage, and a version
named in the answer's text one ever written.

The checks and the error counts cover the warm-up too. Latency windows by the time a request started:
steady = [0, kill-at), after kill = [kill-at, kill-at + 10) (the issue's window), B down = [kill-at, restart-at),
after restart = [restart-at, end). Prints Markdown tables and writes
benchmarks/results/failover.json and failover.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from common import RESULTS, ROOT, machine, percentile, table, write_json

sys.path.insert(0, str(ROOT / "tests"))

PARTS = 3
CHUNK_TOKENS = 60
CHUNK_OVERLAP = 10
KEYS = ("requests", "retried", "p50_ms", "p95_ms", "writes", "write_p50_ms", "write_p95_ms")
FOUND = re.compile(r"Article (doc\d+) version v(\d+) partie p(\d+)")

SERVE = """\
import sys, uvicorn
sys.path.insert(0, sys.argv[2])
from helpers import FakeEmbedder
from qa.config import load_settings
from qa.http.app import create_app
import qa.http.service as service
from qa import KnowledgeBase
tokens, overlap, threads = int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
service.open_kb = lambda settings: KnowledgeBase.open(
    settings=settings, embedder=FakeEmbedder(), chunk_tokens=tokens, chunk_overlap=overlap
)
uvicorn.run(create_app(settings=load_settings(), threads=threads), host="127.0.0.1", port=int(sys.argv[1]),
            log_level="warning")
"""


def versioned_text(doc: int, version: int) -> str:
    """As ``tests/ingest_driver.versioned_text``: 3 paragraphs of ~40 words naming the article and the version."""
    filler = " ".join(f"mot{j}" for j in range(35))
    return "\n\n".join(f"Article doc{doc} version v{version} partie p{p} {filler}." for p in range(PARTS))


def replica_env(**extra: str) -> dict[str, str]:
    """This process's environment without any QA_* setting of the developer, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("QA_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")]))
    env.update(HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", QA_READER="off", **extra)
    return env


class Replica:
    """A fake-embedder ``qa serve`` (uvicorn on ``create_app``) as a separate process on a fixed port."""

    def __init__(
        self,
        name: str,
        env: dict[str, str],
        port: int,
        log: Path,
        *,
        chunk_tokens: int = CHUNK_TOKENS,
        chunk_overlap: int = CHUNK_OVERLAP,
        threads: int = 4,
    ) -> None:
        self.name, self.env, self.port, self.log = name, env, port, log
        self.args = [str(chunk_tokens), str(chunk_overlap), str(threads)]
        self.url = f"http://127.0.0.1:{port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Replica:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-c", SERVE, str(self.port), str(ROOT / "tests"), *self.args],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        return self

    def wait_ready(self, timeout: float = 120) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"replica {self.name} exited with {self.process.returncode}: {self.log.read_text()[-2000:]}")
            with contextlib.suppress(httpx.HTTPError):
                r = httpx.get(f"{self.url}/ready", timeout=2)
                if r.status_code == 200:
                    return r.json()
            if time.monotonic() > deadline:
                raise RuntimeError(f"replica {self.name} not ready in {timeout:.0f}s: {self.log.read_text()[-2000:]}")
            time.sleep(0.1)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=30)


@dataclass
class Stats:
    """What the clients and the writer saw."""

    requests: list[dict[str, Any]] = field(default_factory=list)  # one per client request: t, ms, ok, retried, ...
    error_kinds: dict[str, int] = field(default_factory=dict)  # every failed try, retried or not
    final_errors: list[str] = field(default_factory=list)
    partial: int = 0
    missed: int = 0  # partial in a result, but the version was whole before and after: a retrieval miss
    mixed: int = 0
    wrong: int = 0
    hits: int = 0
    asks: int = 0
    abstained: int = 0
    citations: int = 0
    examples: list[str] = field(default_factory=list)
    writes: int = 0
    deletes: int = 0
    write_retries: int = 0
    write_errors: list[str] = field(default_factory=list)
    write_first_failures: list[str] = field(default_factory=list)  # the writer's failed first tries (then retried)
    write_ms: list[tuple[float, float, str, str]] = field(default_factory=list)  # t, ms, replica, method
    events: list[dict[str, Any]] = field(default_factory=list)

    def note(self, what: str) -> None:
        if len(self.examples) < 20:
            self.examples.append(what[:1500])


class Checker:
    """The versions ever written, and the checks of an answer against them."""

    def __init__(self) -> None:
        self.texts: dict[str, dict[int, str]] = {}  # doc id -> version -> text

    def written(self, doc: int, version: int) -> str:
        text = versioned_text(doc, version)
        self.texts.setdefault(f"doc{doc}", {})[version] = text
        return text

    def wrong(self, passage: dict[str, Any]) -> str | None:
        """Why this passage is not part of a version ever written for its article (None: it is)."""
        doc_id, text = passage.get("doc_id", ""), passage.get("text", "")
        m = FOUND.search(text)
        if m is None:
            return f"{doc_id}: unknown text {text[:80]!r}"
        if m.group(1) != doc_id:
            return f"{doc_id}: names {m.group(1)}"
        versions = self.texts.get(doc_id, {})
        version = int(m.group(2))
        if version not in versions:
            return f"{doc_id}: version v{version} never written"
        if text.strip() not in versions[version]:
            return f"{doc_id} v{version}: text is not a part of that version: {text[:80]!r}"
        return None

    def search(self, hits: list[dict[str, Any]], stats: Stats, where: str = "") -> list[tuple[str, int, str]]:
        """Count wrong passages and mixed articles; return the partial ones: (doc id, version, what was seen)."""
        versions: dict[str, set[str]] = {}
        parts: dict[tuple[str, str], set[str]] = {}
        for h in hits:
            stats.hits += 1
            why = self.wrong(h)
            if why is not None:
                stats.wrong += 1
                stats.note(f"{where}wrong: {why}")
                continue
            m = FOUND.search(h["text"])
            assert m is not None
            versions.setdefault(h["doc_id"], set()).add(m.group(2))
            parts.setdefault((h["doc_id"], m.group(2)), set()).add(m.group(3))
        listed = " ".join(":".join(m.groups()) if (m := FOUND.search(h["text"])) else "?" for h in hits)
        for doc_id, seen in versions.items():
            if len(seen) > 1:
                stats.mixed += 1
                stats.note(f"{where}mixed: {doc_id} versions {sorted(seen)}; the {len(hits)} hits (doc:version:part): {listed}")
        return [
            (doc_id, int(version), f"{where}{doc_id} v{version} parts {sorted(seen)}; the {len(hits)} hits: {listed}")
            for (doc_id, version), seen in parts.items()
            if len(seen) != PARTS
        ]

    def whole(self, document: dict[str, Any], doc_id: str, version: int) -> bool:
        """Whether ``GET /documents/{doc_id}`` shows that version, whole (all its chunks)."""
        return document.get("text") == self.texts.get(doc_id, {}).get(version) and document.get("chunks") == PARTS

    def ask(self, answer: dict[str, Any], stats: Stats) -> None:
        stats.asks += 1
        stats.abstained += bool(answer.get("abstained"))
        for p in answer.get("passages", []):
            stats.hits += 1
            if (why := self.wrong(p)) is not None:
                stats.wrong += 1
                stats.note(f"wrong (ask passage): {why}")
        for m in FOUND.finditer(answer.get("text", "")):  # an answer naming a version must name a written one
            if int(m.group(2)) not in self.texts.get(m.group(1), {}):
                stats.wrong += 1
                stats.note(f"wrong (answer text): {m.group(0)} never written")
        for c in answer.get("citations", []):
            stats.citations += 1
            why = self.wrong(c["passage"])
            if why is None and c["quote"] not in c["passage"]["text"]:
                why = f"quote {c['quote'][:60]!r} not in its passage"
            if why is not None:
                stats.wrong += 1
                stats.note(f"wrong (citation): {why}")


def failed(r: httpx.Response | None, exc: BaseException | None) -> str | None:
    """Why a try failed (None: it did not)."""
    if exc is not None:
        return type(exc).__name__
    assert r is not None
    if r.status_code >= 500:
        with contextlib.suppress(ValueError, KeyError, TypeError):
            return f"{r.status_code} {r.json()['error']}"
        return str(r.status_code)
    return None


async def call(http: httpx.AsyncClient, method: str, url: str, **kw: Any) -> tuple[httpx.Response | None, str | None]:
    try:
        r = await http.request(method, url, **kw)
    except httpx.HTTPError as exc:
        return None, failed(None, exc)
    return r, failed(r, None)


async def load(args: argparse.Namespace, a: Replica, b: Replica, checker: Checker, stats: Stats, version0: int) -> float:
    """The clients, the writer and the kill/restart of B; returns the seconds the load ran."""
    urls = [a.url, b.url]
    limits = httpx.Limits(max_connections=4 * args.clients, max_keepalive_connections=2 * args.clients)
    timeout = httpx.Timeout(args.timeout)
    loop = asyncio.get_running_loop()
    began = loop.time() + args.warmup  # t = 0: the end of the warm-up (the same load, not timed)
    stop = began + args.duration

    def now() -> float:
        return loop.time() - began

    posting_to_b = asyncio.Event()  # set while the writer's POST /documents through B is in flight
    rng = random.Random(args.seed)
    async with httpx.AsyncClient(limits=limits, timeout=timeout) as http:

        async def client(i: int) -> None:
            n = 0
            while loop.time() < stop:
                n += 1
                target = (i + n) % 2
                doc = (i * 7 + n) % args.docs
                asking = args.ask_every > 0 and n % args.ask_every == 0
                if asking:
                    question = f"Que contient la partie p{n % PARTS} de l'article doc{doc} ?"  # answered, with citations
                    path, body = "/ask", {"question": question, "k": 5}
                else:
                    mode = ("hybrid", "lexical", "dense")[n % 3]
                    path, body = "/search", {"question": f"doc{doc} partie", "k": 30, "mode": mode}
                t0 = loop.time()
                r, why = await call(http, "POST", urls[target] + path, json=body)
                retried = why is not None
                if retried:
                    stats.error_kinds[f"{'AB'[target]}: {why}"] = stats.error_kinds.get(f"{'AB'[target]}: {why}", 0) + 1
                    target = 1 - target
                    r, why = await call(http, "POST", urls[target] + path, json=body)
                    if why is not None:
                        stats.error_kinds[f"{'AB'[target]} (retry): {why}"] = (
                            stats.error_kinds.get(f"{'AB'[target]} (retry): {why}", 0) + 1
                        )
                ms = (loop.time() - t0) * 1000
                ok = why is None and r is not None and r.status_code == 200
                if why is None and r is not None and r.status_code != 200:
                    why = f"{r.status_code}: {r.text[:200]}"
                stats.requests.append(
                    {"t": t0 - began, "ms": ms, "ok": ok, "retried": retried, "served_by": "AB"[target], "path": path}
                )
                if not ok:
                    stats.final_errors.append(f"{now():.1f}s {path}: {why}")
                    continue
                assert r is not None
                if asking:
                    checker.ask(r.json(), stats)
                else:
                    where = f"t={t0 - began:.2f}s /search {body['mode']} via {'AB'[target]} {body['question']!r}: "
                    for doc_id, version, what in checker.search(r.json(), stats, where):
                        # still that version, whole, after the search: it was committed whole before the search
                        # began too (versions commit at once), so the search missed committed chunks (a retrieval
                        # miss), it did not show half an article; anything else counts as partial
                        got, _ = await call(http, "GET", f"{urls[target]}/documents/{doc_id}")
                        if got is not None and got.status_code == 200 and checker.whole(got.json(), doc_id, version):
                            stats.missed += 1
                            stats.note(f"retrieval miss (the article whole before and after): {what}")
                        else:
                            stats.partial += 1
                            stats.note(f"partial: {what}")

        async def writer() -> None:
            n = 0
            version = version0
            while loop.time() < stop:
                n += 1
                doc = n % args.docs
                # A and B in turn, and each article through both (n % 2 alone would write even articles through A only)
                target = (n + n // args.docs) % 2 if args.write_via == "both" else "AB".index(args.write_via)
                if args.delete_every > 0 and n % args.delete_every == 0:
                    doc = (n // args.delete_every * 3) % args.docs  # every article in turn, not only n % docs
                    method, url, body = "DELETE", f"/documents/doc{doc}", None
                else:
                    version += 1
                    text = checker.written(doc, version)
                    method, url = "POST", "/documents"
                    body = {"id": f"doc{doc}", "title": f"Article {doc}", "text": text, "source": "bench"}
                t0 = loop.time()
                if target == 1 and method == "POST":
                    posting_to_b.set()
                r, why = await call(http, method, urls[target] + url, json=body)
                posting_to_b.clear()
                if why is not None:
                    stats.write_first_failures.append(f"{now():.2f}s {method} doc{doc} via {'AB'[target]}: {why}")
                if why is not None or (r is not None and r.status_code not in (200, 404)):
                    stats.write_retries += 1
                    r, why = await call(http, method, urls[1 - target] + url, json=body)
                    if why is not None or (r is not None and r.status_code not in (200, 404)):
                        code = why or (r.status_code if r is not None else "?")
                        stats.write_errors.append(f"{now():.1f}s {method} doc{doc}: {code}")
                stats.write_ms.append((t0 - began, (loop.time() - t0) * 1000, "AB"[target], method))  # with the retry
                if method == "DELETE":
                    stats.deletes += 1
                else:
                    stats.writes += 1
                await asyncio.sleep(max(0.0, min(args.write_pause, stop - loop.time())))

        async def chaos() -> None:
            await asyncio.sleep(max(0.0, began + args.kill_at - loop.time()))
            during = ""
            if args.kill_mid_write:  # the next POST /documents through B, a little after it went out
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(posting_to_b.wait(), 3.0)
                await asyncio.sleep(rng.uniform(0.02, 0.12))
                during = " while a POST /documents through it was in flight" if posting_to_b.is_set() else ""
            b.kill()
            stats.events.append({"t": round(now(), 2), "event": "B SIGKILLed" + during})
            await asyncio.sleep(max(0.0, began + args.restart_at - loop.time()))
            b.start()
            stats.events.append({"t": round(now(), 2), "event": "B restarted"})
            while loop.time() < stop:
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get(f"{b.url}/ready", timeout=2)).status_code == 200:
                        stats.events.append({"t": round(now(), 2), "event": "B ready again"})
                        return
                await asyncio.sleep(0.1)

        await asyncio.gather(*(client(i) for i in range(args.clients)), writer(), chaos())
    return loop.time() - began + args.warmup


def window(rows: list[dict[str, Any]], start: float, end: float, writes: list[tuple[float, float, str, str]]) -> dict[str, Any]:
    """Client latency (and the writer's) of the requests started in [start, end)."""
    ms = [r["ms"] for r in rows if start <= r["t"] < end and r["ok"]]
    wms = [w[1] for w in writes if start <= w[0] < end]
    return {
        "from_s": start,
        "to_s": end,
        "requests": sum(1 for r in rows if start <= r["t"] < end),
        "retried": sum(1 for r in rows if start <= r["t"] < end and r["retried"]),
        "throughput_rps": round(len(ms) / (end - start), 1) if end > start else None,
        "p50_ms": round(percentile(ms, 0.5), 1) if ms else None,
        "p95_ms": round(percentile(ms, 0.95), 1) if ms else None,
        "p99_ms": round(percentile(ms, 0.99), 1) if ms else None,
        "max_ms": round(max(ms), 1) if ms else None,
        "writes": len(wms),
        "write_p50_ms": round(percentile(wms, 0.5), 1) if wms else None,
        "write_p95_ms": round(percentile(wms, 0.95), 1) if wms else None,
    }


SUMMARY_COLUMNS = {
    "requests": "requests",
    "asks": "of them /ask",
    "retries": "retried",
    "errors_after_retry": "errors after retry",
    "partial": "partial",
    "retrieval_misses": "retrieval misses",
    "mixed": "mixed",
    "wrong": "wrong",
    "hits_checked": "passages checked",
    "citations_checked": "citations checked",
    "abstained": "asks abstained",
    "writes": "writes",
    "deletes": "deletes",
    "write_retries": "writes retried",
    "write_errors": "write errors",
}
WINDOW_COLUMNS = {
    "requests": "requests",
    "retried": "retried",
    "throughput_rps": "req/s",
    "p50_ms": "p50 ms",
    "p95_ms": "p95 ms",
    "p99_ms": "p99 ms",
    "max_ms": "max ms",
    "writes": "writes",
    "write_p50_ms": "write p50 ms",
    "write_p95_ms": "write p95 ms",
}


def markdown(result: dict[str, Any]) -> str:
    s, w, c = result["summary"], result["windows"], result["config"]
    events = ", ".join(f"{e['event']} at {e['t']} s" for e in result["events"])
    lines = [
        "# Failover: 2 `qa serve` replicas over PostgreSQL + `chroma run`, one SIGKILLed and restarted",
        "",
        f"`{result['command']}` — {result['machine']['cores']} cores, {result['machine']['when']}; {c['clients']} clients "
        f"after a {c['warmup']:g} s warm-up; {events}.",
        "",
        table(list(SUMMARY_COLUMNS.values()), [[s[k] for k in SUMMARY_COLUMNS]]),
        "",
        table(
            ["window", "from–to (s)", *WINDOW_COLUMNS.values()],
            [[name, f"{x['from_s']:g}–{x['to_s']:g}", *(x[k] for k in WINDOW_COLUMNS)] for name, x in w.items()],
        ),
        "",
        f"p95 in the 10 s after the kill / steady p95: **{s['p95_ratio_after_kill']}** (target <= 2); "
        f"verdict: {'PASS' if s['pass'] else 'FAIL'} ({'; '.join(s['failures']) or 'all targets met'})",
        "",
        "Failed tries (each was retried on the other replica): "
        + (", ".join(f"{k} × {v}" for k, v in sorted(result["error_kinds"].items())) or "none"),
    ]
    lines += [
        "",
        "The writer's failed first tries (each retried on the other replica): "
        + ("; ".join(result["write_first_failures"][:10]) or "none"),
        "",
        "Interrupted writes recovered (the replicas' logs): " + ("; ".join(result["recoveries_logged"][:10]) or "none"),
    ]
    if result["examples"]:
        lines += ["", "Examples of problems:", *(f"- {x}" for x in result["examples"])]
    if result["final_errors"]:
        lines += ["", "Errors after retry:", *(f"- {x}" for x in result["final_errors"][:20])]
    if result["write_errors"]:
        lines += ["", "Write errors after retry:", *(f"- {x}" for x in result["write_errors"][:20])]
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=40.0)
    ap.add_argument("--kill-at", type=float, default=15.0)
    ap.add_argument("--restart-at", type=float, default=25.0)
    ap.add_argument("--warmup", type=float, default=5.0, help="seconds of the same load before t = 0, not timed")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--docs", type=int, default=10, help="articles (k=30 must cover all their chunks: at most 10)")
    ap.add_argument("--ask-every", type=int, default=5, help="every N-th request of a client is /ask (0: none)")
    ap.add_argument("--delete-every", type=int, default=5, help="every N-th write is a delete (0: none)")
    ap.add_argument("--write-pause", type=float, default=0.05, help="seconds between two writes")
    ap.add_argument("--write-via", choices=["both", "A", "B"], default="both", help="the replicas the writer uses")
    ap.add_argument(
        "--no-kill-mid-write",
        dest="kill_mid_write",
        action="store_false",
        help="kill B at --kill-at sharp (default: at the next POST /documents through B, mid-request)",
    )
    ap.add_argument("--seed", type=int, default=0, help="when the kill lands inside the POST (20-120 ms after it left)")
    ap.add_argument("--threads", type=int, default=4, help="each replica's reader threads")
    ap.add_argument("--timeout", type=float, default=15.0, help="seconds before a try counts as failed")
    ap.add_argument("--out", default="failover", help="results name (benchmarks/results/NAME.json and .md)")
    args = ap.parse_args()
    if not args.kill_at < args.restart_at < args.duration:
        ap.error("need --kill-at < --restart-at < --duration")
    if args.docs * PARTS > 30:
        ap.error("--docs: k=30 must cover every chunk (at most 10 articles)")

    from chroma_server import ChromaServer, free_port
    from postgres_server import PostgresServer

    work = Path(tempfile.mkdtemp(prefix="qa-failover-"))
    checker, stats = Checker(), Stats()
    replicas: list[Replica] = []
    with PostgresServer() as pg, ChromaServer(work / "chroma") as chroma:
        env = replica_env(
            QA_DATABASE_URL=pg.new_database(),
            QA_CHROMA_URL=chroma.url,
            QA_COLLECTION=f"failover-{uuid.uuid4().hex[:8]}",
            QA_INDEX_DIR=str(work / "index"),
        )
        try:
            a = Replica("A", env, free_port(), work / "replica-a.log", threads=args.threads).start()
            b = Replica("B", env, free_port(), work / "replica-b.log", threads=args.threads).start()
            replicas = [a, b]
            t = time.perf_counter()
            ready = a.wait_ready()
            b.wait_ready()
            print(f"replicas ready in {time.perf_counter() - t:.1f}s: {ready['backends']}", flush=True)
            seed = [
                {"id": f"doc{d}", "title": f"Article {d}", "text": checker.written(d, 0), "source": "bench"}
                for d in range(args.docs)
            ]
            httpx.post(f"{a.url}/documents", json=seed, timeout=60).raise_for_status()
            first = httpx.post(f"{b.url}/search", json={"question": "doc0 partie", "k": 30}, timeout=30).json()
            print(f"seeded {args.docs} articles through A; B's first search: {len(first)} passages", flush=True)
            checker.search(first, Stats())
            seconds = asyncio.run(load(args, a, b, checker, stats, 0))
        finally:
            for r in replicas:
                r.stop()
        logs = {r.name: r.log.read_text(errors="replace") for r in replicas}
    recoveries = [f"{name}: {line.strip()}" for name, log in logs.items() for line in log.splitlines() if "interrupted" in line]
    shutil.rmtree(work, ignore_errors=True)

    rows = stats.requests
    kill, restart, end = args.kill_at, args.restart_at, args.duration
    windows = {
        "steady (before the kill)": window(rows, 0, kill, stats.write_ms),
        "10 s after the kill": window(rows, kill, min(kill + 10, end), stats.write_ms),
        "B down": window(rows, kill, restart, stats.write_ms),
        "after the restart": window(rows, restart, end, stats.write_ms),
        "whole run": window(rows, 0, end, stats.write_ms),
    }
    steady, after = windows["steady (before the kill)"]["p95_ms"], windows["10 s after the kill"]["p95_ms"]
    ratio = round(after / steady, 2) if steady and after else None
    summary = {
        "requests": sum(1 for r in rows if r["t"] >= 0),
        "warmup_requests": sum(1 for r in rows if r["t"] < 0),
        "asks": stats.asks,
        "retries": sum(r["retried"] for r in rows if r["t"] >= 0),
        "errors_after_retry": len(stats.final_errors),
        "partial": stats.partial,
        "retrieval_misses": stats.missed,
        "mixed": stats.mixed,
        "wrong": stats.wrong,
        "hits_checked": stats.hits,
        "abstained": stats.abstained,
        "citations_checked": stats.citations,
        "writes": stats.writes,
        "deletes": stats.deletes,
        "write_retries": stats.write_retries,
        "write_errors": len(stats.write_errors),
        "served_by_b_after_restart": sum(1 for r in rows if r["t"] >= restart and r["served_by"] == "B" and r["ok"]),
        "p95_ratio_after_kill": ratio,
        "seconds": round(seconds, 1),
    }
    failures = [f"{k} = {summary[k]}" for k in ("errors_after_retry", "partial", "mixed", "wrong") if summary[k]]
    if ratio is None or ratio > 2:
        failures.append(f"p95 ratio {ratio} > 2")
    summary["failures"], summary["pass"] = failures, not failures
    result = {
        "command": " ".join([".venv/bin/python", "benchmarks/failover.py", *sys.argv[1:]]),
        "machine": machine(),
        "config": vars(args),
        "events": stats.events,
        "summary": summary,
        "windows": windows,
        "error_kinds": stats.error_kinds,
        "final_errors": stats.final_errors[:50],
        "write_errors": stats.write_errors[:50],
        "examples": stats.examples,
        "latency_by_second": [
            {"second": s, **{k: v for k, v in window(rows, s, s + 1, stats.write_ms).items() if k in KEYS}}
            for s in range(int(end))
        ],
        "write_first_failures": stats.write_first_failures[:50],
        "recoveries_logged": recoveries,
        "replica_log_tails": {name: log[-3000:] for name, log in logs.items()},
    }
    md = markdown(result)
    print("\n" + md)
    write_json(f"{args.out}.json", result)
    (RESULTS / f"{args.out}.md").write_text(md, encoding="utf-8")
    print(f"wrote {RESULTS / (args.out + '.json')} and .md")
    return 0 if summary["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
