"""The index's write path: ingest, delete, prune, rebuild, recover, re-index.

:class:`IndexWriter` is built from explicit parts (the manifest, the Chroma store, the embedder,
the committed view, the two locks, the chunking settings) and owns the write protocol that keeps
an index crash-safe and readers consistent:

1. journal the new chunk ids (the manifest's ``pending`` table);
2. embed the chunks and write them to Chroma (invisible: no committed article lists them yet);
3. under the commit lock (exclusive), ONE SQLite transaction flips the articles to their new
   chunks (manifest + BM25 rows; the replaced chunks enter the journal), then the replaced chunks
   are deleted from Chroma and the journal settled;
4. :meth:`IndexWriter.recover` finishes or undoes whatever a crash interrupted.

Locks: every public operation takes the writer lock once (one writer at a time, across
processes); the ``_unlocked`` helpers assume it is held. The commit lock is held exclusively
only while the committed state moves (never while embedding), so a reader that pins the
committed state (:meth:`qa.index.view.CommittedView.pinned`) waits for one commit, not for an ingest.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import signal
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from qa.chunking import chunk_text
from qa.documents import Article, iter_inputs, present_files
from qa.embeddings import Embedder
from qa.errors import DocumentError, NotFoundError
from qa.index.integrity import CheckReport, repair_index
from qa.index.lexical import LexicalRow
from qa.index.manifest import ArticleRecord
from qa.index.parts import ChunkPlace, CommitLockPart, IndexSpec, LexicalStore, ManifestStore, VectorStore, WriterLockPart
from qa.index.view import CommittedView
from qa.schema import IngestReport, Skipped

logger = logging.getLogger(__name__)

IngestProgress = Callable[[IngestReport, int], None]
"""Called after each batch with the running report and the number of inputs seen."""

BATCH_ARTICLES = 256
"""An ingest commits articles in batches of at most this many articles or ``BATCH_CHARS`` characters
of text (~250 chunks): the unit of crash recovery, and one embedding call, whose length-sorted batches
then pad little (32-article batches spent 16 % more time embedding the same chunks)."""
BATCH_CHARS = 200_000
"""A batch is written early when its articles hold this much text (bounded memory)."""
EMBED_SLICE = 256
"""Chunks embedded and written to Chroma per call."""
REINDEX_BATCH = 32
"""Articles per batch when :meth:`IndexWriter.reindex` re-indexes stored articles (repair)."""


def _crash_point(name: str) -> None:
    """Test hook: ``QA_TEST_CRASH_AT=name:N`` kills the process (SIGKILL) the N-th time ``name`` is reached."""
    spec = os.environ.get("QA_TEST_CRASH_AT")
    if not spec:
        return
    point, _, count = spec.partition(":")
    if point != name:
        return
    _CRASH_COUNTS[name] = _CRASH_COUNTS.get(name, 0) + 1
    if _CRASH_COUNTS[name] >= int(count or 1):
        os.kill(os.getpid(), signal.SIGKILL)


_CRASH_COUNTS: dict[str, int] = {}


def take_input(item: Article | DocumentError | Skipped, seen: dict[str, str], report: IngestReport) -> Article | None:
    """The article to write, or None when the input goes into ``report`` instead: skipped, a load error, or an id
    already seen in this ingest (``seen``: id → where it came from; the first one is kept)."""
    if isinstance(item, Skipped):
        report.skipped.append(item)
    elif isinstance(item, DocumentError):
        report.errors.append(Skipped(item.path, item.reason, item.line))
    elif item.id in seen:
        report.skipped.append(Skipped(item.path or item.id, f"same article id {item.id!r} as {seen[item.id]}; kept the first"))
    else:
        seen[item.id] = item.path or item.id
        return item
    return None


def chunk_id(doc_id: str, index: int, text: str, version: str = "") -> str:
    """Deterministic: the same article version always gives the same chunk ids.

    ``version`` (the article's content hash) makes every version's ids distinct, so a
    changed article's new chunks are written beside the old ones and never overwrite a
    chunk that readers may still be shown."""
    digest = hashlib.sha1((version + "\0" + text if version else text).encode("utf-8")).hexdigest()[:10]
    return f"{doc_id}#{index}-{digest}"


def embedding_input(title: str, text: str) -> str:
    """What is embedded for a chunk: its article's title, then the chunk."""
    return f"{title}\n{text}" if title else text


class IndexWriter:
    """Every change to an index goes through here (see the module's docstring for the protocol)."""

    def __init__(
        self,
        *,
        manifest: ManifestStore,
        lexical: LexicalStore,
        store: VectorStore,
        embedder: Embedder,
        view: CommittedView,
        writer_lock: WriterLockPart,
        commit_lock: CommitLockPart,
        chunk_tokens: int,
        chunk_overlap: int,
        max_file_bytes: int,
        batch_lock: CommitLockPart | None = None,
    ) -> None:
        self.manifest = manifest
        self.lexical = lexical
        self.store = store
        self.embedder = embedder
        self.view = view
        self.writer_lock = writer_lock
        self.commit_lock = commit_lock
        self.chunk_tokens = chunk_tokens
        self.chunk_overlap = chunk_overlap
        self.max_file_bytes = max_file_bytes
        self.batch_lock = batch_lock
        """Several machines (queue workers): shared by each batch from its journal to its commit, exclusive for
        recovery, so that recovery never deletes the chunks of a batch in flight. None on one machine."""
        self.after_write: Callable[[list[str]], Any] | None = None
        """Told the texts of the chunks each batch committed (the knowledge base computes the reader's sentence
        vectors there); what it raises is logged, never undoes the batch."""

    # -- public operations: each takes the writer lock once --------------------------------
    def ingest(
        self,
        paths: str | Path | Iterable[str | Path],
        *,
        progress: IngestProgress | None = None,
        prune: bool = False,
        wait: bool = True,
        rebuild: bool = False,
    ) -> IngestReport:
        """Index files and folders; ``prune`` also removes the articles whose files under them are gone;
        ``rebuild`` forgets the index first (under the same hold of the writer lock). ``wait=False`` raises
        :class:`~qa.errors.IndexBusyError` instead of queueing behind another writer."""
        paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
        with self.writer_lock.hold(wait=wait):
            if rebuild:
                self.rebuild()
            report = self._add_unlocked(iter_inputs(paths, self.max_file_bytes), progress)
            if prune:
                gone = self.prune_candidates(paths)
                for doc_id, _ in gone:
                    self._delete_unlocked(doc_id)
                report.pruned.extend(doc_id for doc_id, _ in gone)
        return report

    def add_articles(
        self, items: Iterable[Article | DocumentError | Skipped], *, progress: IngestProgress | None = None
    ) -> IngestReport:
        """Index articles given in memory (plus any load errors to report)."""
        with self.writer_lock.hold():
            return self._add_unlocked(items, progress)

    def recover(self) -> list[str]:
        """Finish what an interrupted write left: delete from Chroma the journaled chunk ids
        that no committed article lists (written before a crash, or replaced and not yet
        deleted). Returns them. Ingest, delete and repair run this first."""
        with self.writer_lock.hold():
            return self._recover_unlocked()

    def delete(self, doc_id: str) -> None:
        """Remove an article and all its chunks (invisible at once, then deleted from Chroma);
        :class:`~qa.errors.NotFoundError` if it is not indexed."""
        with self.writer_lock.hold():
            self._begin_unlocked()
            if not self._delete_unlocked(doc_id):
                raise NotFoundError(f"no article with id {doc_id!r} in the index: `qa info` lists what is there")

    def prune(self, paths: str | Path | Iterable[str | Path], *, dry_run: bool = False) -> list[tuple[str, str]]:
        """Remove the articles whose files under ``paths`` are gone; ``dry_run`` only lists them."""
        paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
        with self.writer_lock.hold():
            gone = self.prune_candidates(paths)
            if not dry_run:
                for doc_id, _ in gone:
                    self._delete_unlocked(doc_id)
        return gone

    def rebuild(self) -> None:
        """Forget everything indexed (the next ingest starts from scratch)."""
        with self.writer_lock.hold(), self.commit_lock.exclusive():
            self.manifest.clear()
            self.store.drop()
            self.view.seen()

    def reindex(self, articles: Iterable[Article]) -> None:
        """Index these articles again even if unchanged (repair re-embeds broken articles from their
        stored text), in batches of ``REINDEX_BATCH``; reports nothing."""
        articles = list(articles)
        with self.writer_lock.hold():
            for i in range(0, len(articles), REINDEX_BATCH):
                self._write_batch_unlocked(articles[i : i + REINDEX_BATCH], IngestReport(), force=True)

    def write_claimed(self, articles: list[Article], owner: str) -> IngestReport:
        """Index a batch claimed from the ingest queue (:mod:`qa.index.worker`), without the writer lock: workers on
        several machines embed at once and only their commits take turns (the commit lock). The batch's chunk ids are
        journaled under ``owner`` (the claim's token), so that recovery leaves them alone while the claim is live."""
        report = IngestReport()
        started = time.perf_counter()
        with self.batch_lock.shared() if self.batch_lock is not None else contextlib.nullcontext():
            self.view.sync()
            self._write_batch_unlocked(articles, report, owner=owner)
        report.seconds = time.perf_counter() - started
        return report

    def prune_candidates(self, paths: Iterable[str | Path]) -> list[tuple[str, str]]:
        """``(doc_id, path)`` of the articles loaded from files under the folders in ``paths``
        (or from those files) that no longer exist: what ``qa ingest --prune`` removes (reads only)."""
        roots, present = present_files(paths)
        return [
            (doc_id, stored)
            for doc_id, stored in self.manifest.paths()
            if any(stored == r or stored.startswith(r.rstrip(os.sep) + os.sep) for r in roots) and stored not in present
        ]

    # -- the writer lock is held from here on --------------------------------------------------
    def _begin_unlocked(self) -> None:
        """Start a write: catch up with other processes' commits, then finish any interrupted write."""
        self.view.sync(writing=True)
        self._recover_unlocked()

    def _recover_unlocked(self) -> list[str]:
        if self.batch_lock is None:
            return self._recover_journal()
        with self.batch_lock.exclusive():  # no batch between its journal and its commit meanwhile
            return self._recover_journal()

    def _recover_journal(self) -> list[str]:
        rebuild_interrupted = self.manifest.count() == 0 and self.store.count() > 0
        pending = self.manifest.pending()
        if not rebuild_interrupted and not pending:
            return []
        keep = self.manifest.committed(pending)
        orphans = [c for c in pending if c not in keep]
        with self.commit_lock.exclusive():
            if rebuild_interrupted:
                self.store.drop()  # a rebuild interrupted between forgetting the manifest and dropping Chroma
            self.store.delete(orphans)
            self.manifest.settle(pending)
            self.view.seen()
        if orphans:
            logger.warning("removed %d chunks left by an interrupted ingest", len(orphans))
        return orphans

    def _add_unlocked(self, items: Iterable[Article | DocumentError | Skipped], progress: IngestProgress | None) -> IngestReport:
        self._begin_unlocked()
        report = IngestReport()
        started = time.perf_counter()
        seen: dict[str, str] = {}
        pending: list[Article] = []
        pending_chars = 0
        inputs = 0
        for item in items:
            inputs += 1
            article = take_input(item, seen, report)
            if article is not None:
                pending.append(article)
                pending_chars += len(article.text)
            if len(pending) >= BATCH_ARTICLES or pending_chars > BATCH_CHARS:
                self._write_batch_unlocked(pending, report)
                pending, pending_chars = [], 0
                report.seconds = time.perf_counter() - started
                if progress:
                    progress(report, inputs)
        if pending:
            self._write_batch_unlocked(pending, report)
        report.seconds = time.perf_counter() - started
        if progress:
            progress(report, inputs)
        for problem in report.errors:
            logger.warning("skipped %s", problem)
        return report

    def _spec(self) -> IndexSpec:
        return IndexSpec(self.embedder.model_id, self.embedder.dimension, self.chunk_tokens, self.chunk_overlap)

    def _write_batch_unlocked(
        self, articles: list[Article], report: IngestReport, *, force: bool = False, owner: str = ""
    ) -> None:
        """Write a batch so that a crash at any point leaves every article old or new, never half:

        1. journal the new chunk ids (``pending``), 2. write the chunks to Chroma (invisible:
        the manifest does not list them yet), 3. commit manifest + lexical rows in one database
        transaction (the articles flip to their new chunks; the old ones are journaled),
        4. delete the old chunks from Chroma and settle the journal. Steps 3 and 4 run under the
        commit lock. :meth:`recover` finishes or undoes whatever a crash interrupted.
        ``force`` rewrites unchanged articles too, and leaves the report's lists alone (repair).
        """
        known = self.manifest.hashes([a.id for a in articles])
        todo: list[tuple[Article, list[str]]] = []
        for article in articles:
            # a file whose content (hence id) changed replaces what it indexed before
            replaced = (
                [i for i in self.manifest.ids_for_path(article.path) if i != article.id]
                if article.derived_id and article.path
                else []
            )
            if known.get(article.id) == article.content_hash and not replaced and not force:
                report.unchanged.append(article.id)
            else:
                todo.append((article, replaced))
        if not todo:
            return
        self.store.ensure(self._spec())
        ids: list[str] = []
        texts: list[str] = []
        inputs: list[str] = []
        places: list[ChunkPlace] = []
        records: list[ArticleRecord] = []
        lexical_rows: list[LexicalRow] = []
        for article, _ in todo:
            chunks = chunk_text(article.text, self.embedder.count_tokens, self.chunk_tokens, self.chunk_overlap)
            record = ArticleRecord.from_article(article)
            meta = article.meta
            for c in chunks:
                record.chunk_ids.append(chunk_id(article.id, c.index, c.text, article.content_hash))
                lexical_rows.append(LexicalRow(record.chunk_ids[-1], c.text, meta, c.start, c.end))
                texts.append(c.text)
                inputs.append(embedding_input(article.title, c.text))
                places.append(ChunkPlace(meta, c.index, c.start, c.end))
            ids.extend(record.chunk_ids)
            records.append(record)
        self.manifest.journal(ids, owner=owner)
        for i in range(0, len(ids), EMBED_SLICE):  # bounded memory: vectors for one slice at a time
            j = i + EMBED_SLICE
            self.store.upsert(ids[i:j], self.embedder.embed_documents(inputs[i:j]), texts[i:j], places[i:j])
            _crash_point("chunks")
        stale: list[str] = []
        dropped: list[str] = []
        for (article, replaced), record in zip(todo, records, strict=True):
            old = self.manifest.get(article.id)
            if old:
                stale.extend(sorted(set(old.chunk_ids) - set(record.chunk_ids)))
            dropped.extend(replaced)
            if not force:
                (report.updated if old or replaced else report.added).append(article.id)
        with self.commit_lock.exclusive():  # the committed state moves: nothing slow in here
            doomed = self.manifest.put_many(records, lexical_rows, drop_chunks=stale, drop_docs=dropped, owner=owner)
            _crash_point("commit")
            self.store.delete(doomed)
            self.manifest.settle(doomed)
            self.view.seen()
        report.chunks_written += len(ids)
        _crash_point("batch")
        if self.after_write is not None and texts:
            try:
                self.after_write(texts)
            except Exception as exc:  # a cache of derived data: the batch is committed and stays so
                logger.warning("after the write of %d chunks: %s", len(texts), exc)

    def _delete_unlocked(self, doc_id: str) -> bool:
        with self.commit_lock.exclusive():
            chunk_ids = self.manifest.delete(doc_id)
            if chunk_ids is None:
                return False
            self.store.delete(chunk_ids)
            self.manifest.settle(chunk_ids)
            self.view.seen()
        return True

    # -- repair (qa check --repair) --------------------------------------------------------------
    def repair(self, progress: Callable[[int, int], None] | None = None) -> CheckReport:
        """Fix what :func:`qa.index.integrity.check_index` finds, holding the writer lock throughout
        (the :meth:`recover` and :meth:`reindex` it calls re-enter it); returns the check after repair.
        ``progress(done, total)`` follows its long steps."""
        with self.writer_lock.hold():
            return repair_index(self.manifest, self.lexical, self.store, self.view, self, progress)
