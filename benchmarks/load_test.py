"""Load test of the HTTP API: N concurrent clients asking for a fixed time, on loopback only.

    python benchmarks/load_test.py                       # 1, 8, 32 clients × search, ask; 15 s each
    python benchmarks/load_test.py --clients 4 --duration 5 --endpoints search
    python benchmarks/load_test.py --url http://127.0.0.1:8000   # a server you started (`qa serve`)

Unless given ``--url``, it indexes ``--corpus`` (default ``corpus/``) into a fresh temporary
index with ``qa ingest``, starts ``qa serve`` on a free 127.0.0.1 port, waits for ``/ready``, runs
every (endpoint, clients) pair for ``--duration`` seconds, stops the server and exits. Each
client is an asyncio task sending one request at a time. Questions rotate through a fixed
French list; each gets a request number appended (``--no-unique`` to turn that off) so the
server's query-embedding cache does not turn the test into a cache benchmark.

It prints a table (throughput, p50/p95/p99 latency, errors) and writes JSON into
``benchmarks/results/``. ``QA_API_TOKEN``, ``QA_EMBEDDING_MODEL`` etc. are honoured.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlparse

import httpx

ROOT = Path(__file__).resolve().parent.parent
QUESTIONS = [
    "Quand le bureau de l'UE a-t-il ouvert à Almaty ?",
    "Quand le Kazakhstan a-t-il ouvert son bureau à Bruxelles ?",
    "Qui est le président du Kazakhstan ?",
    "Quand les relations diplomatiques entre l'UE et le Kazakhstan ont-elles été établies ?",
    "Qui a visité Nur-Sultan le 7 février ?",
    "Qui est le représentant spécial de l'UE pour l'Asie centrale ?",
    "Qui est le président du Conseil européen ?",
    "Quand les pourparlers virtuels ont-ils eu lieu ?",
    "Qui a été chargé de mener une enquête sur les événements de janvier ?",
    "Quels plans le président kazakh a-t-il présentés ?",
    "When did the EU delegation start working in Almaty?",
    "Quel est le PIB du Kazakhstan en 2021 ?",
]


REQUESTS = itertools.count(1)
"""Request numbers, unique across runs: no run reuses a question another one embedded."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


class Server:
    """``qa serve`` on 127.0.0.1 over a fresh index of the corpus."""

    def __init__(self, corpus: Path, index: Path | None, threads: int) -> None:
        self.corpus, self.threads = corpus, threads
        self.index = index or Path(tempfile.mkdtemp(prefix="qa-load-")) / "index"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None
        self.log = self.index.parent / "serve.log"

    def start(self, timeout: float = 600) -> None:
        qa = [sys.executable, "-m", "qa.cli", "--index", str(self.index)]
        started = time.perf_counter()
        subprocess.run([*qa, "ingest", "-q", str(self.corpus)], check=True, stdout=subprocess.DEVNULL)
        print(f"indexed {self.corpus} in {time.perf_counter() - started:.1f}s", file=sys.stderr)
        self.index.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("wb") as log:
            command = [*qa, "serve", "--host", "127.0.0.1", "--port", str(self.port), "--threads", str(self.threads)]
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"qa serve exited with {self.process.returncode}: {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/ready", headers=auth_headers(), timeout=2).status_code == 200:
                    print(f"qa serve ready after {time.perf_counter() - started:.1f}s", file=sys.stderr)
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        self.stop()
        raise SystemExit(f"qa serve was not ready after {timeout:.0f}s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def auth_headers() -> dict[str, str]:
    token = os.environ.get("QA_API_TOKEN")
    return {"Authorization": f"Bearer {token}"} if token else {}


async def run_load(url: str, endpoint: str, clients: int, duration: float, unique: bool, k: int) -> dict:
    """``clients`` tasks, each sending one request at a time for ``duration`` seconds."""
    latencies: list[float] = []
    errors: dict[str, int] = {}
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, headers=auth_headers(), limits=limits, timeout=60) as http:
        stop = time.perf_counter() + duration

        async def client() -> None:
            while time.perf_counter() < stop:
                n = next(REQUESTS)
                question = QUESTIONS[n % len(QUESTIONS)]
                if unique:
                    question = f"{question} #{n}"
                started = time.perf_counter()
                try:
                    r = await http.post(f"/{endpoint}", json={"question": question, "k": k})
                    if r.status_code != 200:
                        errors[str(r.status_code)] = errors.get(str(r.status_code), 0) + 1
                        continue
                except httpx.HTTPError as exc:
                    errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                    continue
                latencies.append(time.perf_counter() - started)

        began = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(clients)))
        elapsed = time.perf_counter() - began
    ms = [x * 1000 for x in latencies]
    return {
        "endpoint": endpoint,
        "clients": clients,
        "seconds": round(elapsed, 2),
        "requests": len(ms),
        "errors": sum(errors.values()),
        "error_kinds": errors,
        "throughput_rps": round(len(ms) / elapsed, 2),
        "p50_ms": round(percentile(ms, 0.50), 1),
        "p95_ms": round(percentile(ms, 0.95), 1),
        "p99_ms": round(percentile(ms, 0.99), 1),
        "max_ms": round(max(ms), 1) if ms else None,
    }


def table(rows: list[dict]) -> str:
    lines = [
        "| endpoint | clients | requests | throughput (req/s) | p50 (ms) | p95 (ms) | p99 (ms) | errors |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| /{r['endpoint']} | {r['clients']} | {r['requests']} | {r['throughput_rps']:.1f} | "
            f"{r['p50_ms']:.0f} | {r['p95_ms']:.0f} | {r['p99_ms']:.0f} | {r['errors']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", default="1,8,32", help="comma-separated concurrency levels (default 1,8,32)")
    parser.add_argument("--duration", type=float, default=15.0, help="seconds per (endpoint, clients) run (default 15)")
    parser.add_argument("--endpoints", default="search,ask", help="comma-separated: search, ask (default both)")
    parser.add_argument("--k", type=int, default=5, help="passages per request (default 5)")
    parser.add_argument("--url", help="an already running server (loopback only); default: start one")
    parser.add_argument("--corpus", type=Path, default=ROOT / "corpus", help="what the started server indexes (default corpus/)")
    parser.add_argument("--index", type=Path, help="index folder for the started server (default: a fresh temporary one)")
    parser.add_argument("--threads", type=int, default=4, help="the started server's worker threads (default 4)")
    parser.add_argument("--no-unique", dest="unique", action="store_false", help="repeat questions verbatim (query cache hits)")
    parser.add_argument("--out", type=Path, help="JSON results (default benchmarks/results/load-<time>.json)")
    args = parser.parse_args(argv)

    levels = [int(x) for x in args.clients.split(",")]
    endpoints = [e.strip() for e in args.endpoints.split(",")]
    if args.url and urlparse(args.url).hostname not in ("127.0.0.1", "localhost", "::1"):
        parser.error("--url must be a loopback address: this tool only loads servers on this machine")
    server = None if args.url else Server(args.corpus, args.index, args.threads)
    rows = []
    try:
        if server:
            server.start()
        url = args.url or server.url
        info = httpx.get(f"{url}/info", headers=auth_headers(), timeout=30).json()
        for endpoint in endpoints:
            for clients in levels:
                row = asyncio.run(run_load(url, endpoint, clients, args.duration, args.unique, args.k))
                rows.append(row)
                print(
                    f"/{endpoint} × {clients}: {row['throughput_rps']} req/s, p50 {row['p50_ms']} ms, "
                    f"p95 {row['p95_ms']} ms, {row['errors']} errors",
                    file=sys.stderr,
                )
    finally:
        if server:
            server.stop()
    print(table(rows))
    result = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "server": {"url": "started" if server else args.url, "threads": args.threads if server else None, "info": info},
        "duration_s": args.duration,
        "unique_questions": args.unique,
        "k": args.k,
        "results": rows,
    }
    out = args.out or ROOT / "benchmarks" / "results" / f"load-{datetime.now(UTC):%Y%m%d-%H%M%S}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {out}", file=sys.stderr)
    return 1 if any(r["errors"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
