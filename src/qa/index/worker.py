"""Ingest workers: claim batches of articles from the queue, embed, write, commit (``qa worker``, and ``qa ingest``
over the shared backend when no worker is running).

A worker is stateless: any number run on any machines (a GPU box too) over the same PostgreSQL and Chroma server.
Each batch is claimed under a lease that a keep-alive thread renews while the batch is written; a worker killed
mid-batch loses nothing: its lease runs out, another worker claims the rows again, and since chunk ids are
deterministic and unchanged articles are skipped, every chunk is written once
(:meth:`qa.index.writer.IndexWriter.write_claimed`).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from qa.documents import Article
from qa.errors import ClaimLostError, IndexBusyError, StoreError
from qa.index import writer as writing
from qa.index.writer import IndexWriter, take_input
from qa.schema import IngestReport, Skipped

if TYPE_CHECKING:
    from qa.index.postgres.queue import Claimed, PgQueue

logger = logging.getLogger(__name__)

LEASE_SECONDS = 60.0
"""How long a claim holds its rows without a renewal (renewed every third of it while the batch runs)."""
IDLE_POLL = 0.5
"""Seconds between looks at an empty queue."""
MAX_BACKOFF = 30.0
"""Longest wait between tries while a backend does not answer."""
HEARTBEAT_SECONDS = 5.0
"""How often a worker tells the queue it is alive (``qa ingest`` works the queue itself when none is)."""


@dataclass
class WorkerStats:
    batches: int = 0
    articles: int = 0
    chunks: int = 0
    failed_batches: int = 0


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident() % 100000}"


class _KeepAlive:
    """Renews a claim's lease until stopped (a thread: the batch's embedding holds the caller)."""

    def __init__(self, queue: PgQueue, claimed: Claimed, lease: float, name: str) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(queue, claimed, lease, name), name="qa-lease", daemon=True)
        self._thread.start()

    def _run(self, queue: PgQueue, claimed: Claimed, lease: float, name: str) -> None:
        while not self._stop.wait(min(lease / 3, HEARTBEAT_SECONDS)):
            try:
                queue.heartbeat(name)  # the worker is alive while its batch embeds
                if not queue.extend(claimed, lease):
                    logger.warning("lost the lease of a batch (%d articles): another worker took it over", len(claimed.ids))
                    return
            except Exception:  # noqa: BLE001 - the database is away; the claim may lapse and be retried elsewhere
                logger.warning("could not renew a lease", exc_info=True)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def run_worker(
    writer: IndexWriter,
    queue: PgQueue,
    *,
    name: str | None = None,
    batch_articles: int | None = None,
    batch_chars: int | None = None,
    lease: float | None = None,
    stop: threading.Event | None = None,
    until_empty: bool = False,
    on_batch: Callable[[WorkerStats], object] | None = None,
) -> WorkerStats:
    """Work the queue: claim a batch, write it, mark it done; until ``stop`` is set, or (``until_empty``) until no
    row is open (rows claimed by another worker count: if it dies, they come back when its lease runs out). A batch
    that fails on its articles is given back with its error and retried, up to
    :data:`qa.index.postgres.queue.MAX_ATTEMPTS` times; one that fails because a backend is away (the database,
    the Chroma server) goes back without counting, and the worker waits longer each time (up to
    :data:`MAX_BACKOFF`) until the backend answers. A batch whose lease ran out and was taken over is not
    committed (:class:`~qa.errors.ClaimLostError`)."""
    from qa.index.postgres.queue import new_token

    lease = LEASE_SECONDS if lease is None else lease
    batch_articles = writing.BATCH_ARTICLES if batch_articles is None else batch_articles  # read now: tests set them
    batch_chars = writing.BATCH_CHARS if batch_chars is None else batch_chars
    name = name or worker_name()
    stats = WorkerStats()
    wait = stop.wait if stop is not None else time.sleep
    beat = 0.0
    backoff = 0.0
    try:
        while stop is None or not stop.is_set():
            if backoff:  # the database or the vector store did not answer: try again a little later
                wait(backoff)
            try:
                now = time.monotonic()
                if now - beat > HEARTBEAT_SECONDS:
                    queue.heartbeat(name)
                    beat = now
                claimed = queue.claim(new_token(), limit=batch_articles, max_chars=batch_chars, lease_seconds=lease)
                if claimed is None:
                    _settle(writer)
                    if until_empty and queue.open_count() == 0:  # rows another worker holds may come back
                        break
                    backoff = 0.0
                    wait(IDLE_POLL)
                    continue
                backoff = 0.0 if _work(writer, queue, claimed, lease, name, stats) else _longer(backoff)
            except StoreError as exc:
                backoff = _longer(backoff)
                logger.warning("%s (worker %s retries in %.0fs)", exc, name, backoff)
            if on_batch and stats.batches:
                on_batch(stats)
    finally:
        try:
            queue.leave(name)
        except Exception:  # noqa: BLE001 - the heartbeat lapses by itself
            logger.debug("could not unregister worker %s", name, exc_info=True)
    return stats


def _longer(backoff: float) -> float:
    return min(max(backoff * 2, 1.0), MAX_BACKOFF)


def _transient(exc: BaseException) -> bool:
    """An error of a backend (the database, the Chroma server), not of the articles: the batch is retried later
    without counting an attempt against it."""
    return isinstance(exc, (StoreError, ConnectionError, TimeoutError)) or type(exc).__module__.split(".")[0] in (
        "chromadb",
        "httpx",
        "httpcore",
        "psycopg",
    )


def _work(writer: IndexWriter, queue: PgQueue, claimed: Claimed, lease: float, name: str, stats: WorkerStats) -> bool:
    """Write one claimed batch and mark it done; False when a backend failed (the rows go back to the queue)."""
    keep = _KeepAlive(queue, claimed, lease, name)
    try:
        report = writer.write_claimed(claimed.articles, claimed.token)
    except ClaimLostError as exc:  # the other worker writes these rows; nothing of ours was committed
        keep.stop()
        logger.warning("%s", exc)
        return True
    except Exception as exc:  # noqa: BLE001 - the rows go back to the queue with the reason
        keep.stop()
        transient = _transient(exc)
        logger.warning("a batch of %d articles failed%s: %s", len(claimed.ids), " (retried later)" * transient, exc)
        queue.fail(claimed, f"{type(exc).__name__}: {exc}", count=not transient)
        stats.failed_batches += 1
        return not transient
    keep.stop()
    outcome = {doc_id: kind for kind in ("added", "updated", "unchanged") for doc_id in getattr(report, kind)}
    if queue.complete(claimed, outcome, report.chunks_written, worker=name):
        stats.batches += 1
        stats.articles += len(claimed.ids)
        stats.chunks += report.chunks_written
    return True


def _settle(writer: IndexWriter) -> None:
    """When the queue is idle: finish what dead workers left journaled (chunks written to Chroma by a batch whose
    lease ran out and which nobody retried, replaced chunks not yet deleted), if another writer is not at it."""
    if not writer.manifest.pending():
        return
    try:
        with writer.writer_lock.hold(wait=False):
            writer.recover()
    except IndexBusyError:
        logger.debug("another writer holds the lock: it recovers")
    except Exception as exc:  # noqa: BLE001 - a backend away: the next idle turn tries again
        if not _transient(exc):
            raise
        logger.warning("could not finish an interrupted write yet: %s", exc)


ENQUEUE_BATCH = 256
"""Articles per enqueue transaction."""
WAIT_POLL = 0.5


def ingest_queued(
    writer: IndexWriter,
    queue: PgQueue,
    paths: Sequence[str | Path],
    *,
    progress: Callable[[IngestReport, int], None] | None = None,
    prune: bool = False,
    wait: bool = True,
    rebuild: bool = False,
    lease: float | None = None,
) -> IngestReport:
    """``qa ingest`` over the shared backend: read the files here, enqueue their articles as one job, then (``wait``)
    follow the job until every article is done or failed, working the queue in this process while no worker is
    running. ``wait=False`` returns once enqueued (``report.job`` says which job; ``qa info`` shows the queue).
    Load errors are reported here; ``prune`` and ``rebuild`` run here under the writer lock."""
    from qa.documents import iter_inputs

    started = time.perf_counter()
    report = IngestReport()
    if rebuild:
        writer.rebuild()
    if prune:
        with writer.writer_lock.hold():
            gone = writer.prune_candidates(paths)
        for doc_id, _ in gone:
            writer.delete(doc_id)
        report.pruned.extend(doc_id for doc_id, _ in gone)
    job = queue.new_job()
    report.job = job
    seen: dict[str, str] = {}
    batch: list[Article] = []
    inputs = 0
    for item in iter_inputs(paths, writer.max_file_bytes):
        inputs += 1
        article = take_input(item, seen, report)
        if article is not None:
            batch.append(article)
            if len(batch) >= ENQUEUE_BATCH:
                queue.enqueue(batch, job)
                report.queued += len(batch)
                batch = []
    if batch:
        queue.enqueue(batch, job)
        report.queued += len(batch)
    if not wait:
        report.seconds = time.perf_counter() - started
        return report

    def follow(_: object = None) -> int:
        """The job's progress into the report and the progress bar; how many of its articles are still open."""
        status = queue.job(job)
        _fill(report, status)
        report.seconds = time.perf_counter() - started
        if progress:
            progress(report, inputs - status["open"])
        return int(status["open"])

    while follow():
        if not queue.live_workers():  # nobody works the queue: this process does (the bar moves per batch)
            run_worker(writer, queue, lease=lease, until_empty=True, on_batch=follow if progress else None)
        else:
            time.sleep(WAIT_POLL)
    for problem in report.errors:
        logger.warning("skipped %s", problem)
    return report


def _fill(report: IngestReport, status: dict[str, object]) -> None:
    """The job's outcomes into the report (load errors and skips found here stay)."""
    report.added = list(status["added"])  # type: ignore[call-overload]
    report.updated = list(status["updated"])  # type: ignore[call-overload]
    report.unchanged = list(status["unchanged"])  # type: ignore[call-overload]
    report.chunks_written = int(status["chunks"])  # type: ignore[call-overload]
    loaded = [e for e in report.errors if not e.reason.startswith("ingest failed: ")]
    failed = [Skipped(doc_id, f"ingest failed: {error}") for doc_id, error in status["failed"]]  # type: ignore[attr-defined]
    report.errors = loaded + failed
