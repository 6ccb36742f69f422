"""The ingest queue in PostgreSQL: ``qa ingest`` enqueues articles, ``qa worker`` processes on any machine claim them.

- ``ingest_jobs``: one row per ``qa ingest`` (what it enqueued, what came of it: added, updated, unchanged,
  failed), so the command (``--wait``) and ``/stats`` show the progress of a distributed ingest;
- ``ingest_queue``: one row per article (its text and metadata as JSON), ``queued`` → ``claimed`` (by a worker's
  token, with a lease) → ``done`` or ``failed``. A worker claims a batch with ``FOR UPDATE SKIP LOCKED``, so two
  workers never take the same rows; rows whose lease ran out (a worker killed mid-batch) are claimed again, and
  since chunk ids are deterministic and unchanged articles are skipped, a retried batch writes each chunk once.
  Versions of one article are written one at a time, in the order enqueued (the last one enqueued wins);
- ``ingest_workers``: a heartbeat per worker, so ``qa ingest`` knows whether anyone is working the queue (if
  not, it works the queue itself).

The writer journals a batch's chunk ids under the worker's token (``pending.owner``): recovery only touches the
ids of owners whose lease has expired, never those of a batch in flight.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import uuid
from dataclasses import dataclass
from typing import Any

from qa.documents import Article
from qa.index.postgres.database import PgDatabase

SCHEMA = [
    """CREATE TABLE IF NOT EXISTS ingest_jobs (
        id bigserial PRIMARY KEY,
        created timestamptz NOT NULL DEFAULT now(),
        chunks integer NOT NULL DEFAULT 0
    )""",
    """CREATE TABLE IF NOT EXISTS ingest_queue (
        id bigserial PRIMARY KEY,
        job bigint NOT NULL REFERENCES ingest_jobs(id) ON DELETE CASCADE,
        doc_id text NOT NULL,
        article jsonb NOT NULL,
        chars integer NOT NULL,
        state text NOT NULL DEFAULT 'queued',
        outcome text,
        token text,
        lease_until timestamptz,
        attempts integer NOT NULL DEFAULT 0,
        error text
    )""",
    "CREATE INDEX IF NOT EXISTS ingest_queue_open ON ingest_queue(id) WHERE state IN ('queued', 'claimed')",
    "CREATE INDEX IF NOT EXISTS ingest_queue_token ON ingest_queue(token) WHERE state = 'claimed'",
    "CREATE INDEX IF NOT EXISTS ingest_queue_job ON ingest_queue(job)",
    "CREATE INDEX IF NOT EXISTS ingest_queue_doc ON ingest_queue(doc_id, id) WHERE state IN ('queued', 'claimed')",
    """CREATE TABLE IF NOT EXISTS ingest_workers (
        name text PRIMARY KEY,
        seen timestamptz NOT NULL DEFAULT now(),
        batches integer NOT NULL DEFAULT 0,
        chunks integer NOT NULL DEFAULT 0
    )""",
]

MAX_ATTEMPTS = 5
"""A row claimed this many times without completing is marked failed (its error kept)."""
LIVE_SECONDS = 15.0
"""A worker whose heartbeat is older than this is not counted as running."""
LIVE_OWNERS = (
    "SELECT DISTINCT token FROM ingest_queue WHERE state = 'claimed' AND lease_until > clock_timestamp() AND token IS NOT NULL"
)
"""The tokens of batches in flight (their journaled chunk ids are not recovery's to delete)."""


@dataclass
class Claimed:
    """A batch a worker holds: its token, the queue rows and their articles (in queue order)."""

    token: str
    ids: list[int]
    articles: list[Article]
    jobs: dict[int, int]
    """Queue row id → its job."""


def new_token() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


def article_json(article: Article) -> str:
    return json.dumps(dataclasses.asdict(article), ensure_ascii=False)


class PgQueue:
    """The queue's operations (each one transaction)."""

    def __init__(self, db: PgDatabase) -> None:
        self.db = db

    def enqueue(self, articles: list[Article], job: int | None = None) -> int:
        """Add articles to ``job`` (a new job when None); returns the job id."""
        with self.db.transaction() as conn:
            if job is None:
                job = int(conn.execute("INSERT INTO ingest_jobs DEFAULT VALUES RETURNING id").fetchone()[0])
            if articles:
                with conn.cursor() as cur:
                    cur.executemany(
                        "INSERT INTO ingest_queue (job, doc_id, article, chars) VALUES (%s, %s, %s::jsonb, %s)",
                        [(job, a.id, article_json(a), len(a.text)) for a in articles],
                    )
        return job

    def new_job(self) -> int:
        return self.enqueue([])

    def claim(self, token: str, *, limit: int, max_chars: int, lease_seconds: float) -> Claimed | None:
        """Take up to ``limit`` open rows (queued, or claimed under a lease that ran out), at most ``max_chars`` of
        text beyond the first, and hold them under ``token`` for ``lease_seconds``. None when nothing is open."""
        while True:
            taken, exhausted = self._claim_once(token, limit, max_chars, lease_seconds)
            if taken or not exhausted:  # rows that ran out of attempts were marked failed: look past them
                break
        if not taken:
            return None
        ids = [t[0] for t in taken]
        return Claimed(token, ids, [Article(**a) for _, _, a in taken], {row_id: job for row_id, job, _ in taken})

    def _claim_once(
        self, token: str, limit: int, max_chars: int, lease_seconds: float
    ) -> tuple[list[tuple[int, int, dict[str, Any]]], bool]:
        """One claim transaction: the rows taken, and whether some rows were marked failed instead."""
        with self.db.transaction() as conn:
            rows = conn.execute(
                "SELECT id, job, article, chars, attempts FROM ingest_queue q "
                "WHERE (state = 'queued' OR (state = 'claimed' AND lease_until < clock_timestamp())) "
                # one version of an article at a time, in the order they were enqueued: the last one enqueued wins
                "AND NOT EXISTS (SELECT 1 FROM ingest_queue e WHERE e.doc_id = q.doc_id AND e.id < q.id "
                "AND e.state IN ('queued', 'claimed')) "
                "ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED",
                (limit,),
            ).fetchall()
            taken: list[tuple[int, int, dict[str, Any]]] = []
            exhausted = False
            chars = 0
            for row_id, job, article, size, attempts in rows:
                if taken and chars + size > max_chars:
                    break
                if attempts >= MAX_ATTEMPTS:
                    conn.execute(
                        "UPDATE ingest_queue SET state = 'failed', error = COALESCE(error, %s) WHERE id = %s",
                        (f"claimed {attempts} times without completing (a worker died on it each time?)", row_id),
                    )
                    exhausted = True
                    continue
                taken.append((row_id, job, article))
                chars += size
            if taken:
                conn.execute(
                    "UPDATE ingest_queue SET state = 'claimed', token = %s, attempts = attempts + 1, "
                    "lease_until = clock_timestamp() + make_interval(secs => %s) WHERE id = ANY(%s)",
                    (token, float(lease_seconds), [t[0] for t in taken]),
                )
        return taken, exhausted

    def extend(self, claimed: Claimed, lease_seconds: float) -> bool:
        """Renew the lease of a batch still in progress; False if it was lost (another worker took it over)."""
        with self.db.transaction() as conn:
            cur = conn.execute(
                "UPDATE ingest_queue SET lease_until = clock_timestamp() + make_interval(secs => %s) "
                "WHERE id = ANY(%s) AND token = %s AND state = 'claimed'",
                (float(lease_seconds), claimed.ids, claimed.token),
            )
            return cur.rowcount == len(claimed.ids)

    def complete(self, claimed: Claimed, outcome: dict[str, str], chunks: int, worker: str = "") -> bool:
        """Mark the batch done, each row with its outcome (``outcome``: doc_id → added/updated/unchanged); False if
        the lease had run out and another worker holds the rows now (it will mark them)."""
        rows = [(row_id, outcome.get(a.id, "unchanged")) for row_id, a in zip(claimed.ids, claimed.articles, strict=True)]
        with self.db.transaction() as conn:
            owned = conn.execute(
                "SELECT id FROM ingest_queue WHERE id = ANY(%s) AND token = %s AND state = 'claimed' FOR UPDATE",
                (claimed.ids, claimed.token),
            ).fetchall()
            if len(owned) != len(claimed.ids):
                return False
            with conn.cursor() as cur:
                cur.executemany(
                    "UPDATE ingest_queue SET state = 'done', outcome = %s, article = '{}'::jsonb, lease_until = NULL "
                    "WHERE id = %s",
                    [(result, row_id) for row_id, result in rows],
                )
            conn.execute("UPDATE ingest_jobs SET chunks = chunks + %s WHERE id = %s", (chunks, claimed.jobs[claimed.ids[0]]))
            if worker:
                conn.execute(
                    "UPDATE ingest_workers SET batches = batches + 1, chunks = chunks + %s WHERE name = %s", (chunks, worker)
                )
        return True

    def fail(self, claimed: Claimed, error: str, *, count: bool = True) -> None:
        """Give the batch back after an error: each row is retried (up to ``MAX_ATTEMPTS``), its error kept.
        ``count=False``: a backend failed, not the articles; the claim does not count as an attempt."""
        with self.db.transaction() as conn:
            conn.execute(
                "UPDATE ingest_queue SET state = 'queued', token = NULL, lease_until = NULL, error = %s, "
                "attempts = attempts - %s WHERE id = ANY(%s) AND token = %s AND state = 'claimed'",
                (error[:2000], 0 if count else 1, claimed.ids, claimed.token),
            )

    def job(self, job: int) -> dict[str, Any]:
        """A job's progress: ``total`` rows, ``open`` (queued or claimed), ``failed``, the doc ids by outcome
        (``added``, ``updated``, ``unchanged``), ``chunks`` written and the failures ``(doc_id, error)``."""
        with self.db.read() as conn:
            row = conn.execute("SELECT chunks FROM ingest_jobs WHERE id = %s", (job,)).fetchone()
            if row is None:
                return {}
            rows = conn.execute(
                "SELECT doc_id, state, outcome, error FROM ingest_queue WHERE job = %s ORDER BY id", (job,)
            ).fetchall()
        out: dict[str, Any] = {"total": len(rows), "open": 0, "chunks": int(row[0]), "added": [], "updated": [], "unchanged": []}
        failures = []
        for doc_id, state, outcome, error in rows:
            if state in ("queued", "claimed"):
                out["open"] += 1
            elif state == "failed":
                failures.append((doc_id, error or "failed"))
            elif outcome in ("added", "updated", "unchanged"):
                out[outcome].append(doc_id)
        out["failed"] = failures
        return out

    def open_count(self) -> int:
        """Rows not done nor failed (queued, or claimed by a worker: done soon, or claimed again when its lease ends)."""
        with self.db.read() as conn:
            return int(conn.execute("SELECT COUNT(*) FROM ingest_queue WHERE state IN ('queued', 'claimed')").fetchone()[0])

    def heartbeat(self, name: str) -> None:
        with self.db.transaction() as conn:
            conn.execute("INSERT INTO ingest_workers (name) VALUES (%s) ON CONFLICT (name) DO UPDATE SET seen = now()", (name,))

    def leave(self, name: str) -> None:
        with self.db.transaction() as conn:
            conn.execute("DELETE FROM ingest_workers WHERE name = %s", (name,))

    def live_workers(self) -> list[str]:
        with self.db.read() as conn:
            rows = conn.execute(
                "SELECT name FROM ingest_workers WHERE seen > now() - make_interval(secs => %s) ORDER BY name",
                (LIVE_SECONDS,),
            )
            return [r[0] for r in rows]

    def stats(self) -> dict[str, Any]:
        """The queue by state, and the live workers (``/stats``, ``qa info``)."""
        with self.db.read() as conn:
            states = dict(conn.execute("SELECT state, COUNT(*) FROM ingest_queue GROUP BY state").fetchall())
        return {
            "queued": int(states.get("queued", 0)),
            "claimed": int(states.get("claimed", 0)),
            "done": int(states.get("done", 0)),
            "failed": int(states.get("failed", 0)),
            "workers": self.live_workers(),
        }
