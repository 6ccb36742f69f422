"""Shared helpers for the benchmark scripts (not tests): corpora, timing, tables, machine info."""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
PIAF = ROOT.parent / "shared" / "data" / "piaf-v1.0.json"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def dev_split_arguments(ap: Any) -> None:
    """The options of the benchmarks that read the trained models on the PIAF dev split (reader.py, span.py)."""
    ap.add_argument("--artifact", default=str(ROOT / "src" / "qa" / "answering" / "reading" / "models"))
    ap.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--cache-dir", default=os.environ.get("QA_MODEL_CACHE") or str(Path.home() / ".cache" / "qa" / "models"))
    ap.add_argument("--limit", type=int, default=0, help="first N dev questions only")


def load_corpus(path: str | Path | None, limit: int | None = None) -> tuple[list[Any], list[Any], str]:
    """Articles (and questions, for SQuAD files) from a SQuAD JSON file, a folder or files; PIAF if it is there."""
    from qa.documents import Article, iter_inputs
    from qa.evaluation import load_squad

    source = Path(path) if path else (PIAF if PIAF.exists() else ROOT / "corpus")
    if source.suffix == ".json":
        articles, questions = load_squad(source)
    else:
        articles = [a for a in iter_inputs([source], 50_000_000) if isinstance(a, Article)]
        questions = []
    if limit:
        articles = articles[:limit]
        keep = {a.id for a in articles}
        questions = [q for q in questions if q.doc_id in keep]
    return articles, questions, str(source)


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (MB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float:
    """Resident memory of this process now (MB), from /proc (0 where there is none)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def machine() -> dict[str, Any]:
    import torch

    return {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "when": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def write_json(name: str, data: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / name
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


class LeanHttp:
    """One keep-alive HTTP/1.1 connection that POSTs JSON: a load generator that costs little CPU.

    The benchmarks that run their clients on the machine under test (2 cores shared with the server, the database and
    Chroma) would otherwise measure their own HTTP client too: httpx's ``AsyncClient`` took 1.65 ms of CPU per
    ``/search``. Status code and parsed body; the connection is reopened after an error."""

    def __init__(self, url: str) -> None:
        from urllib.parse import urlsplit

        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self._reader: Any = None
        self._writer: Any = None

    async def post(self, path: str, body: Any) -> tuple[int, Any]:
        import asyncio

        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        data = json.dumps(body).encode()
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
        )
        try:
            self._writer.write(head.encode() + data)
            header = await self._reader.readuntil(b"\r\n\r\n")
            lines = header.decode("latin-1").split("\r\n")
            status = int(lines[0].split()[1])
            fields = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
            if "content-length" not in fields:
                raise ConnectionError(f"no Content-Length in the response to POST {path}")
            payload = await self._reader.readexactly(int(fields["content-length"]))
            if fields.get("connection", "").lower() == "close":
                await self.close()
        except BaseException:
            await self.close()
            raise
        return status, json.loads(payload) if payload else None

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer, self._reader = None, None
