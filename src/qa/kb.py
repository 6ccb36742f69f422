"""``KnowledgeBase``: the public entry point (open, ingest, search, delete, stats)."""

from __future__ import annotations

import hashlib
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from qa.answering.base import Answerer, ConversationalAnswerer
from qa.answering.chain import ChainState, build_chain, make_answerer, sentence_scores, stream_answer
from qa.chunking import chunk_text
from qa.config import Settings, load_settings
from qa.documents import Article, iter_inputs
from qa.embeddings import Embedder, Progress, make_embedder
from qa.errors import DocumentError, NotFoundError, QueryError
from qa.index.lexical import LexicalRow
from qa.index.locking import CommitLock, WriterLock
from qa.index.manifest import ArticleRecord, Manifest
from qa.index.store import ChunkStore, IndexSpec, chunk_metadata, date_number, make_client, reopen_client
from qa.index.view import CommittedView
from qa.retrieval.filters import Filters
from qa.retrieval.langchain import QARetriever
from qa.retrieval.retriever import Retriever
from qa.schema import Answer, IngestReport, Passage, Skipped

logger = logging.getLogger(__name__)

IngestProgress = Callable[[IngestReport, int], None]
"""Called after each batch with the running report and the number of inputs seen."""

MAX_K = 1000
BATCH_ARTICLES = 256
BATCH_CHARS = 200_000
"""An ingest commits articles in batches of at most this many articles or characters of text
(~250 chunks): the unit of crash recovery, and one embedding call, whose length-sorted batches
then pad little (32-article batches spent 16 % more time embedding the same chunks)."""
"""A batch is written early when its articles hold this much text (bounded memory)."""
EMBED_SLICE = 256
"""Chunks embedded and written to Chroma per call."""


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


class KnowledgeBase:
    """An index of articles that answers searches.

    Build one with :meth:`open`. The constructor takes ready-made parts
    (an embedder, a Chroma client) so tests and servers can share them.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        embedder: Embedder | None = None,
        client: Any = None,
        progress: Progress | None = None,
        embed_slice: int | None = None,
    ) -> None:
        self.settings = settings
        self.embedder: Embedder = embedder or make_embedder(
            settings.embedding_model,
            settings.model_cache,
            batch_size=settings.embed_batch_size,
            progress=progress,
            slice_size=embed_slice,
            backend=settings.embedding_backend,
        )
        self.manifest = Manifest(Path(settings.index_dir) / "manifest.sqlite3")
        # an embedded store we opened ourselves can be reopened when another process changes it
        reopen = None if client is not None or settings.chroma_url else (lambda: reopen_client(settings.index_dir))
        self.store = ChunkStore(
            client or make_client(settings.index_dir, settings.chroma_url),
            settings.collection,
            visible=self.manifest.committed,
            reopen=reopen,
        )
        self.writer_lock = WriterLock(Path(settings.index_dir))
        self.commit_lock = CommitLock(Path(settings.index_dir))
        self.view = CommittedView(self.manifest, self.store, self.writer_lock, self.commit_lock)
        self.retriever = Retriever(
            embedder=self.embedder,
            store=self.store,
            manifest=self.manifest,
            view=self.view,
            settings=settings,
            scorer=sentence_scores,
        )
        # fail at open, before any model is loaded, if the index was built with another model
        self.store.check_compatible(self.embedder.model_id)
        self._answerers: dict[str, Answerer | ConversationalAnswerer] = {}
        self._warm = False
        self._warm_lock = threading.Lock()

    @classmethod
    def open(
        cls,
        path: str | Path | None = None,
        *,
        settings: Settings | None = None,
        embedder: Embedder | None = None,
        client: Any = None,
        progress: Progress | None = None,
        embed_slice: int | None = None,
        **overrides: Any,
    ) -> KnowledgeBase:
        """Open (or create) the index at ``path`` (default: ``QA_INDEX_DIR``). ``embed_slice``: how many
        chunks an ingest embeds per turn of the shared model (a server uses small slices so that a search
        waits for one slice of an ingest, not for all of it; default the batch size)."""
        if settings is None:
            settings = load_settings(index_dir=path, **overrides)
        elif path is not None or overrides:
            settings = settings.replace(index_dir=path, **overrides)
        return cls(settings, embedder=embedder, client=client, progress=progress, embed_slice=embed_slice)

    def close(self) -> None:
        self.manifest.close()

    def __enter__(self) -> KnowledgeBase:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- ingest --------------------------------------------------------------------
    def ingest(
        self,
        paths: str | Path | Iterable[str | Path],
        *,
        progress: IngestProgress | None = None,
        prune: bool = False,
        wait: bool = True,
    ) -> IngestReport:
        """Index files and folders (``.txt``, ``.md``, ``.html``, ``.jsonl``).

        Unchanged articles are not re-embedded; changed ones replace their chunks.
        Bad inputs are reported in ``report.errors`` and the rest is ingested.
        Files are read one at a time and written in batches, each committed on its own:
        an ingest killed at any point is finished by running it again.
        ``prune`` also removes the articles whose files under the given folders are gone
        (``report.pruned``). ``wait=False`` raises :class:`~qa.errors.IndexBusyError`
        instead of queueing behind another ingest.
        """
        if isinstance(paths, (str, Path)):
            paths = [paths]
        paths = list(paths)
        max_bytes = int(self.settings.max_file_mb * 1e6)
        with self.writer_lock.hold(wait=wait):
            report = self.add_articles(iter_inputs(paths, max_bytes), progress=progress)
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
            self.view.sync()
            self.recover()
            return self._add_articles(items, progress)

    def _add_articles(self, items: Iterable[Article | DocumentError | Skipped], progress: IngestProgress | None) -> IngestReport:
        report = IngestReport()
        started = time.perf_counter()
        seen: dict[str, str] = {}
        pending: list[Article] = []
        pending_chars = 0
        inputs = 0
        for item in items:
            inputs += 1
            if isinstance(item, Skipped):
                report.skipped.append(item)
            elif isinstance(item, DocumentError):
                report.errors.append(Skipped(item.path, item.reason, item.line))
            elif item.id in seen:
                report.skipped.append(
                    Skipped(item.path or item.id, f"same article id {item.id!r} as {seen[item.id]}; kept the first")
                )
            else:
                seen[item.id] = item.path or item.id
                pending.append(item)
                pending_chars += len(item.text)
            if len(pending) >= BATCH_ARTICLES or pending_chars > BATCH_CHARS:
                self._write_batch(pending, report)
                pending, pending_chars = [], 0
                report.seconds = time.perf_counter() - started
                if progress:
                    progress(report, inputs)
        if pending:
            self._write_batch(pending, report)
        report.seconds = time.perf_counter() - started
        if progress:
            progress(report, inputs)
        for problem in report.errors:
            logger.warning("skipped %s", problem)
        return report

    def _spec(self) -> IndexSpec:
        return IndexSpec(self.embedder.model_id, self.embedder.dimension, self.settings.chunk_tokens, self.settings.chunk_overlap)

    def _write_batch(self, articles: list[Article], report: IngestReport | None = None, *, force: bool = False) -> None:
        """Write a batch so that a crash at any point leaves every article old or new, never half:

        1. journal the new chunk ids (``pending``), 2. write the chunks to Chroma (invisible:
        the manifest does not list them yet), 3. commit manifest + lexical rows in one SQLite
        transaction (the articles flip to their new chunks; the old ones are journaled),
        4. delete the old chunks from Chroma and settle the journal. :meth:`recover` finishes
        or undoes whatever a crash interrupted.
        """
        report = report if report is not None else IngestReport()
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
        metas: list[dict[str, Any]] = []
        records: list[ArticleRecord] = []
        lexical_rows: list[LexicalRow] = []
        for article, _ in todo:
            chunks = chunk_text(article.text, self.embedder.count_tokens, self.settings.chunk_tokens, self.settings.chunk_overlap)
            record = ArticleRecord(
                article.id,
                article.content_hash,
                article.text,
                article.title,
                article.date,
                article.url,
                article.source,
                article.path,
            )
            for c in chunks:
                record.chunk_ids.append(chunk_id(article.id, c.index, c.text, article.content_hash))
                lexical_rows.append(
                    LexicalRow(
                        record.chunk_ids[-1],
                        article.id,
                        c.text,
                        article.title,
                        article.source,
                        date_number(article.date) if article.date else 0,
                    )
                )
                texts.append(c.text)
                inputs.append(embedding_input(article.title, c.text))
                metas.append(
                    chunk_metadata(article.id, c.index, c.start, c.end, article.title, article.source, article.url, article.date)
                )
            ids.extend(record.chunk_ids)
            records.append(record)
        self.manifest.journal(ids)
        for i in range(0, len(ids), EMBED_SLICE):  # bounded memory: vectors for one slice at a time
            j = i + EMBED_SLICE
            self.store.upsert(ids[i:j], self.embedder.embed_documents(inputs[i:j]), texts[i:j], metas[i:j])
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
        with self.commit_lock.exclusive():
            doomed = self.manifest.put_many(records, lexical_rows, drop_chunks=stale, drop_docs=dropped)
            _crash_point("commit")
            self.store.delete(doomed)
            self.manifest.settle(doomed)
        self.view.seen()
        report.chunks_written += len(ids)
        _crash_point("batch")

    def recover(self) -> list[str]:
        """Finish what an interrupted write left: delete from Chroma the journaled chunk ids
        that no committed article lists (written before a crash, or replaced and not yet
        deleted). Returns them. Ingest, delete and repair run this first."""
        with self.writer_lock.hold():
            if self.manifest.count() == 0 and self.store.count() > 0:
                self.store.drop()  # a rebuild interrupted between forgetting the manifest and dropping Chroma
            pending = self.manifest.pending()
            if not pending:
                return []
            keep = self.manifest.committed(pending)
            orphans = [c for c in pending if c not in keep]
            self.store.delete(orphans)
            self.manifest.settle(pending)
            self.view.seen()
            if orphans:
                logger.warning("removed %d chunks left by an interrupted ingest", len(orphans))
            return orphans

    def prune_candidates(self, paths: Iterable[str | Path]) -> list[tuple[str, str]]:
        """``(doc_id, path)`` of the articles loaded from files under the folders in ``paths``
        (or from those files) that no longer exist: what ``qa ingest --prune`` removes."""
        from qa.documents import present_files

        roots, present = present_files(paths)
        return [
            (doc_id, stored)
            for doc_id, stored in self.manifest.paths()
            if any(stored == r or stored.startswith(r.rstrip(os.sep) + os.sep) for r in roots) and stored not in present
        ]

    def prune(self, paths: str | Path | Iterable[str | Path], *, dry_run: bool = False) -> list[tuple[str, str]]:
        """Remove the articles whose files under ``paths`` are gone; ``dry_run`` only lists them."""
        if isinstance(paths, (str, Path)):
            paths = [paths]
        with self.writer_lock.hold():
            gone = self.prune_candidates(list(paths))
            if not dry_run:
                for doc_id, _ in gone:
                    self._delete_unlocked(doc_id)
        return gone

    def check(self) -> Any:
        """Verify the index: counts, orphans, manifest vs Chroma, lexical vs dense (``qa check``)."""
        from qa.index.integrity import check_index

        return check_index(self)

    def repair(self) -> Any:
        """Fix what :meth:`check` finds; returns the check report after repair (``qa check --repair``)."""
        from qa.index.integrity import repair_index

        with self.writer_lock.hold():
            return repair_index(self)

    # -- search --------------------------------------------------------------------
    def search(
        self,
        question: str,
        k: int = 5,
        *,
        source: str | Sequence[str] | None = None,
        date_from: str | None = None,
        date_to: str | None = None,
        mode: str | None = None,
        exclude: Sequence[str] | None = None,
    ) -> list[Passage]:
        """The ``k`` passages that best answer ``question``, best first.

        ``mode`` is ``hybrid`` (dense + BM25 fused; the default ``QA_RETRIEVAL``),
        ``rerank`` (hybrid, re-ranked by the best answering sentence), ``dense`` or ``lexical``;
        ``source`` and the ISO date range filter articles; ``exclude`` leaves out the listed article ids.
        A result holds one committed version of each article, even while a writer works.
        """
        filters = Filters.of(source=source, date_from=date_from, date_to=date_to, exclude=exclude)
        return self._search(_check_question(question), _check_k(k), filters, mode)

    def _search(self, question: str, k: int, filters: Filters, mode: str | None = None) -> list[Passage]:
        return self.retriever.search(question, k, filters, mode)

    # -- answers -------------------------------------------------------------------
    def answerer(self, spec: str | None = None) -> Answerer | ConversationalAnswerer:
        """The answerer for ``spec`` (default ``QA_ANSWERER``), built once per spec."""
        spec = spec or self.settings.answerer
        if spec not in self._answerers:
            self._answerers[spec] = make_answerer(spec, base_url=self.settings.llm_base_url, api_key=self.settings.llm_api_key)
        return self._answerers[spec]

    def ask(
        self,
        question: str,
        history: Sequence[tuple[str, str]] | None = None,
        *,
        k: int = 5,
        answerer: str | Answerer | ConversationalAnswerer | None = None,
        **filters: Any,
    ) -> Answer:
        """Answer ``question`` from the corpus, with citations, or abstain.

        ``history`` holds the previous ``(question, answer_text)`` pairs, oldest first,
        so that follow-ups (« Et à Bruxelles ? ») are understood. ``filters`` are those
        of :meth:`search`. ``answerer`` is a spec (``"extractive"``, ``"openai:…"``) or an
        answerer object.
        """
        chosen, state = self._ask_inputs(question, history, k, answerer, filters)
        return build_chain(self._retrieve, chosen).invoke(state)

    def ask_stream(
        self,
        question: str,
        history: Sequence[tuple[str, str]] | None = None,
        *,
        k: int = 5,
        answerer: str | Answerer | ConversationalAnswerer | None = None,
        **filters: Any,
    ) -> Iterator[str | Answer]:
        """Like :meth:`ask`, but yields the reply's text chunks as an LLM streams them,
        then the final :class:`Answer` (the extractive answerer yields the Answer alone)."""
        chosen, state = self._ask_inputs(question, history, k, answerer, filters)
        return stream_answer(self._retrieve, chosen, state)

    def _retrieve(self, question: str, k: int, filters: Filters) -> list[Passage]:
        return self._search(_check_question(question), k, filters)

    def _ask_inputs(
        self,
        question: str,
        history: Sequence[tuple[str, str]] | None,
        k: int,
        answerer: str | Answerer | ConversationalAnswerer | None,
        filters: dict[str, Any],
    ) -> tuple[Answerer | ConversationalAnswerer, ChainState]:
        question = _check_question(question)
        k = _check_k(k)
        checked = Filters.from_kwargs(filters)
        chosen = answerer if answerer is not None and not isinstance(answerer, str) else self.answerer(answerer)
        return chosen, ChainState(question=question, history=tuple(history or ()), filters=checked, k=k)

    def warm(self, progress: Callable[[str], None] | None = None) -> None:
        """Load the embedding model and the default answerer's NLP pipeline now (servers and
        the UI call this once at start, so the first question does not pay for it).

        ``progress`` is told each step as it starts: ``"model"``, ``"answerer"``, then ``"index"``
        when the index holds chunks (one question asked end to end loads the vector index and
        the answer path). Thread-safe and done once: later calls return at once.
        """
        with self._warm_lock:
            if self._warm:
                return
            if progress:
                progress("model")
            self.embedder.embed_query("warm up")
            if progress:
                progress("answerer")
            getattr(self.answerer(), "nlp", None)  # the extractive answerer loads spaCy on first use
            if not self.manifest.is_empty():
                if progress:
                    progress("index")
                self.ask("Quand et où cela s'est-il passé ?", k=1, answerer="extractive")  # never an LLM call
            self._warm = True

    @property
    def is_warm(self) -> bool:
        """Whether :meth:`warm` has run (the model and the answerer are loaded)."""
        return self._warm

    def as_retriever(self, k: int = 5, *, mode: str | None = None, **filters: Any) -> QARetriever:
        """A LangChain ``BaseRetriever`` over :meth:`search`; ``invoke(question, k=…, source=…)`` overrides per call."""
        return QARetriever(search=self._search_checked, k=_check_k(k), filters=Filters.from_kwargs(filters), mode=mode)

    def _search_checked(self, question: str, k: int, filters: Filters, mode: str | None) -> list[Passage]:
        return self._search(_check_question(question), _check_k(k), filters, mode)

    # -- management ----------------------------------------------------------------
    def delete(self, doc_id: str) -> None:
        """Remove an article and all its chunks (invisible at once, then deleted from Chroma)."""
        with self.writer_lock.hold():
            self.view.sync()
            self.recover()
            if not self._delete_unlocked(doc_id):
                raise NotFoundError(f"no article with id {doc_id!r} in the index: `qa info` lists what is there")

    def _delete_unlocked(self, doc_id: str) -> bool:
        with self.commit_lock.exclusive():
            chunk_ids = self.manifest.delete(doc_id)
            if chunk_ids is None:
                return False
            self.store.delete(chunk_ids)
            self.manifest.settle(chunk_ids)
        self.view.seen()
        return True

    def article(self, doc_id: str) -> ArticleRecord:
        """The stored article (full text and metadata)."""
        record = self.manifest.get(doc_id)
        if record is None:
            raise NotFoundError(f"no article with id {doc_id!r} in the index")
        return record

    def rebuild(self) -> None:
        """Forget everything indexed (the next ingest starts from scratch)."""
        with self.writer_lock.hold():
            self.manifest.clear()
            self.store.drop()
            self.view.seen()

    def stats(self) -> dict[str, Any]:
        spec = self.store.spec() or {}
        return {
            "articles": self.manifest.count(),
            "chunks": self.store.count(),
            "model": spec.get("embedding_model", self.embedder.model_id),
            "dimension": spec.get("dimension"),
            "chunk_tokens": spec.get("chunk_tokens", self.settings.chunk_tokens),
            "chunk_overlap": spec.get("chunk_overlap", self.settings.chunk_overlap),
            "sources": self.manifest.sources(),
            "last_ingest": self.manifest.meta("last_ingest"),
            "index_dir": str(self.settings.index_dir),
            "chroma_url": self.settings.chroma_url,
        }

    def list_documents(self, offset: int = 0, limit: int = 50) -> tuple[int, list[ArticleRecord]]:
        """``(total, page)``: the indexed articles ordered by id, without their text, for paged listings."""
        if offset < 0 or not 1 <= limit <= MAX_K:
            raise QueryError(f"offset={offset}, limit={limit}: offset must be >= 0 and limit 1 to {MAX_K}")
        return self.manifest.count(), self.manifest.page(offset, limit)


def _check_question(question: Any) -> str:
    if not isinstance(question, str) or not question.strip():
        raise QueryError("the question is empty: type a question")
    return question.strip()


def _check_k(k: Any) -> int:
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_K:
        raise QueryError(f"k={k!r} is out of range: ask for 1 to {MAX_K} passages")
    return k
