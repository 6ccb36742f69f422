"""``KnowledgeBase``: the public entry point (open, ingest, search, delete, stats)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qa.answering.answerers import Answerers, sentence_scores
from qa.answering.base import Answerer, ConversationalAnswerer
from qa.config import Settings, load_settings
from qa.documents import Article
from qa.embeddings import Embedder, Progress, make_embedder
from qa.errors import ConfigError, DocumentError, NotFoundError, QueryError
from qa.filters import Filters
from qa.index import Index
from qa.index.integrity import CheckReport, check_index
from qa.index.manifest import ArticleRecord
from qa.index.writer import IndexWriter, IngestProgress  # IngestProgress: re-exported (qa.ui.uploads)
from qa.retrieval.filters import MAX_K, check_k, check_question
from qa.retrieval.retriever import Retriever
from qa.schema import Answer, IngestReport, Passage, Skipped

if TYPE_CHECKING:  # LangChain loads with the first LLM question or retriever, not with `import qa` (qa.answering.chain)
    from qa.answering.chain import ChainState
    from qa.retrieval.langchain import QARetriever

logger = logging.getLogger(__name__)


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
        preload: str | None = None,
        on_wait: Callable[[str], None] | None = None,
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
        self._answerers = Answerers(
            settings.answerer,
            base_url=settings.llm_base_url,
            api_key=settings.llm_api_key,
            model_cache=settings.model_cache,
            progress=progress,
            reader=settings.reader == "on",
            reader_artifact=settings.reader_artifact,
            reader_vectors=self._vectors_file(settings),
        )
        self._preloaded: set[str] = set()
        self._preload_lock = threading.Lock()
        if preload:  # the models load while the index opens
            self.preload(answerer=preload == "ask")
        self.index = Index.open(
            Path(settings.index_dir),
            settings.collection,
            chroma_url=settings.chroma_url,
            client=client,
            database_url=settings.database_url,
        )
        self.index.writer_lock.on_wait = on_wait  # told when a write waits for another writer (the CLI prints it)
        self.manifest, self.store, self.view = self.index.manifest, self.index.store, self.index.view
        self.retriever = Retriever(
            embedder=self.embedder,
            store=self.store,
            lexical=self.index.lexical,
            view=self.view,
            settings=settings,
            scorer=sentence_scores,
        )
        self.writer = IndexWriter(
            manifest=self.manifest,
            lexical=self.index.lexical,
            store=self.store,
            embedder=self.embedder,
            view=self.view,
            writer_lock=self.index.writer_lock,
            commit_lock=self.index.commit_lock,
            chunk_tokens=settings.chunk_tokens,
            chunk_overlap=settings.chunk_overlap,
            max_file_bytes=int(settings.max_file_mb * 1e6),
            batch_lock=self.index.batch_lock,
        )
        if self._answerers.reader_vectors is not None:
            self.writer.after_write = self._prepare_sentences
        # fail at open, before a question loads anything, if the index was built with another model (a preload
        # started above is abandoned with the process; the model builds atomically)
        self.store.check_compatible(self.embedder.model_id)
        self._warm = False
        self._warm_lock = threading.Lock()

    @staticmethod
    def _vectors_file(settings: Settings) -> Path | None:
        """The reader's stored sentence vectors beside the index (``QA_READER_VECTORS``), None when not kept."""
        if settings.reader != "on" or settings.reader_vectors != "on":
            return None
        from qa.answering.reading.vectors import FILE

        return Path(settings.index_dir) / FILE

    def _prepare_sentences(self, texts: list[str]) -> None:
        """After an ingest's batch: the reading answerer computes the reader's vectors of its new sentences."""
        prepare = getattr(self.answerer(), "prepare", None)
        if prepare is not None:
            prepare(texts)

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
        preload: str | None = None,
        on_wait: Callable[[str], None] | None = None,
        **overrides: Any,
    ) -> KnowledgeBase:
        """Open (or create) the index at ``path`` (default: ``QA_INDEX_DIR``). ``embed_slice``: how many
        chunks an ingest embeds per turn of the shared model (a server uses small slices so that a search
        waits for one slice of an ingest, not for all of it; default the batch size). ``preload``: ``"search"``
        or ``"ask"`` when a question is coming: what it needs starts loading (:meth:`preload`) before the
        index opens. ``on_wait`` is told (one line) when a write queues behind another writer."""
        if settings is None:
            settings = load_settings(index_dir=path, **overrides)
        elif path is not None or overrides:
            settings = settings.replace(index_dir=path, **overrides)
        return cls(
            settings,
            embedder=embedder,
            client=client,
            progress=progress,
            embed_slice=embed_slice,
            preload=preload,
            on_wait=on_wait,
        )

    def close(self) -> None:
        self.index.close()

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
        rebuild: bool = False,
    ) -> IngestReport:
        """Index files and folders (``.txt``, ``.md``, ``.html``, ``.jsonl``).

        Unchanged articles are not re-embedded; changed ones replace their chunks.
        Bad inputs are reported in ``report.errors`` and the rest is ingested.
        Files are read one at a time and written in batches, each committed on its own:
        an ingest killed at any point is finished by running it again.
        ``prune`` also removes the articles whose files under the given folders are gone
        (``report.pruned``). ``wait=False`` raises :class:`~qa.errors.IndexBusyError`
        instead of queueing behind another ingest. ``rebuild`` forgets the index first, within
        the same write (no other writer comes in between).

        Over the shared PostgreSQL backend (``QA_DATABASE_URL``) the articles go through the ingest queue: they are
        enqueued as one job (``report.job``) and ``qa worker`` processes on any machine write them; this call
        follows the job to its end, working the queue itself while no worker runs. There ``wait=False`` returns
        once the articles are enqueued (the job's progress is in :meth:`stats`).
        """
        paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
        if self.index.queue is not None:
            from qa.index.worker import ingest_queued

            return ingest_queued(self.writer, self.index.queue, paths, progress=progress, prune=prune, wait=wait, rebuild=rebuild)
        return self.writer.ingest(paths, progress=progress, prune=prune, wait=wait, rebuild=rebuild)

    def work(
        self, *, stop: threading.Event | None = None, until_empty: bool = False, on_batch: Callable[[Any], None] | None = None
    ) -> Any:
        """Work the shared ingest queue (``qa worker``): claim batches of articles, embed and write them, until
        ``stop`` is set or (``until_empty``) the queue is empty. Returns the worker's counts. Needs the PostgreSQL
        backend."""
        if self.index.queue is None:
            raise ConfigError("qa worker works the shared ingest queue: set QA_DATABASE_URL (and QA_CHROMA_URL)")
        from qa.index.worker import run_worker

        return run_worker(self.writer, self.index.queue, stop=stop, until_empty=until_empty, on_batch=on_batch)

    def add_articles(
        self, items: Iterable[Article | DocumentError | Skipped], *, progress: IngestProgress | None = None
    ) -> IngestReport:
        """Index articles given in memory (plus any load errors to report)."""
        return self.writer.add_articles(items, progress=progress)

    def recover(self) -> list[str]:
        """Finish what an interrupted write left: delete from Chroma the journaled chunk ids
        that no committed article lists (written before a crash, or replaced and not yet
        deleted). Returns them. Ingest, delete and repair run this first."""
        return self.writer.recover()

    def prune_candidates(self, paths: Iterable[str | Path]) -> list[tuple[str, str]]:
        """``(doc_id, path)`` of the articles loaded from files under the folders in ``paths``
        (or from those files) that no longer exist: what ``qa ingest --prune`` removes."""
        return self.writer.prune_candidates(paths)

    def prune(self, paths: str | Path | Iterable[str | Path], *, dry_run: bool = False) -> list[tuple[str, str]]:
        """Remove the articles whose files under ``paths`` are gone; ``dry_run`` only lists them."""
        return self.writer.prune(paths, dry_run=dry_run)

    def check(self) -> CheckReport:
        """Verify the index: counts, orphans, manifest vs Chroma, lexical vs dense (``qa check``)."""
        return check_index(self.manifest, self.index.lexical, self.store, self.view)

    def repair(self, progress: Callable[[int, int], None] | None = None) -> CheckReport:
        """Fix what :meth:`check` finds; returns the check report after repair (``qa check --repair``).
        ``progress(done, total)`` follows its long steps (recording the place of chunks written before schema 2)."""
        return self.writer.repair(progress)

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
        filters: Filters | None = None,
    ) -> list[Passage]:
        """The ``k`` passages that best answer ``question``, best first.

        ``mode`` is ``hybrid`` (dense + BM25 fused; the default ``QA_RETRIEVAL``),
        ``rerank`` (hybrid, re-ranked by the best answering sentence), ``dense`` or ``lexical``;
        ``source`` and the ISO date range filter articles; ``exclude`` leaves out the listed article ids;
        or give them as one :class:`~qa.filters.Filters` value (``filters=Filters.of(source=…)``), not both.
        A result holds one committed version of each article, even while a writer works.
        """
        given = Filters.of(source=source, date_from=date_from, date_to=date_to, exclude=exclude)
        return self.retriever.search(question, k, _one_filters(filters, given), mode)

    # -- answers -------------------------------------------------------------------
    def answerer(self, spec: str | None = None) -> Answerer | ConversationalAnswerer:
        """The answerer for ``spec`` (default ``QA_ANSWERER``), built once per spec."""
        return self._answerers.get(spec)

    def ask(
        self,
        question: str,
        history: Sequence[tuple[str, str]] | None = None,
        *,
        k: int = 5,
        answerer: str | Answerer | ConversationalAnswerer | None = None,
        filters: Filters | None = None,
        **kwargs: Any,
    ) -> Answer:
        """Answer ``question`` from the corpus, with citations, or abstain.

        ``history`` holds the previous ``(question, answer_text)`` pairs, oldest first,
        so that follow-ups (« Et à Bruxelles ? ») are understood. The filters are those
        of :meth:`search`: keyword arguments (``source=…``) or one ``filters`` value. ``answerer``
        is a spec (``"extractive"``, ``"openai:…"``) or an answerer object.
        """
        from qa.answering.chain import run_chain

        chosen, state = self._ask_inputs(question, history, k, answerer, filters, kwargs)
        return run_chain(self.retriever.search, chosen, state)

    def ask_stream(
        self,
        question: str,
        history: Sequence[tuple[str, str]] | None = None,
        *,
        k: int = 5,
        answerer: str | Answerer | ConversationalAnswerer | None = None,
        filters: Filters | None = None,
        **kwargs: Any,
    ) -> Iterator[str | Answer]:
        """Like :meth:`ask`, but yields the reply's text chunks as an LLM streams them,
        then the final :class:`Answer` (the extractive answerer yields the Answer alone)."""
        from qa.answering.chain import stream_answer

        chosen, state = self._ask_inputs(question, history, k, answerer, filters, kwargs)
        return stream_answer(self.retriever.search, chosen, state)

    def _ask_inputs(
        self,
        question: str,
        history: Sequence[tuple[str, str]] | None,
        k: int,
        answerer: str | Answerer | ConversationalAnswerer | None,
        filters: Filters | None,
        kwargs: dict[str, Any],
    ) -> tuple[Answerer | ConversationalAnswerer, ChainState]:
        from qa.answering.chain import ChainState

        question, k = check_question(question), check_k(k)
        checked = _one_filters(filters, Filters.from_kwargs(kwargs))
        chosen = answerer if answerer is not None and not isinstance(answerer, str) else self.answerer(answerer)
        return chosen, ChainState(question=question, history=tuple(history or ()), filters=checked, k=k)

    def warm(self, progress: Callable[[str], None] | None = None, *, background: bool = True, nlp: bool = True) -> None:
        """Load the embedding model and the answer path now (servers and the UI call this once at
        start, so the first question does not pay for it).

        ``progress`` is told each step as it starts: ``"model"`` (the default answerer's own models load
        beside it: :meth:`preload`), then ``"index"`` when the index holds chunks (one question asked end
        to end loads the vector index and the answer path), then ``"answerer"`` when the answerer has models
        to wait for. With ``nlp``, the lexical answerer's spaCy pipeline, which only « qui » and « où »
        questions need and whose import holds the GIL for seconds, then starts loading in a background
        thread (``background``; a question that needs it meanwhile waits for it); the chat leaves it out
        here and starts it once its page is drawn (``preload(nlp=True)``). Thread-safe and done once.
        """
        with self._warm_lock:
            if self._warm:
                return
            self.preload(answerer=True)
            if progress:
                progress("model")
            self.embedder.embed_query("warm up")
            if not self.manifest.is_empty():
                if progress:
                    progress("index")
                self.ask("Quand cela s'est-il passé ?", k=1, answerer="extractive")  # never an LLM call, nor spaCy
            answerer = self.answerer()
            load = getattr(answerer, "load", None)
            if callable(load):  # the reading answerer: the reader, the combiner and the span model (built once)
                if progress:
                    progress("answerer")
                load()
            if nlp and background:
                self.preload(model=False, answerer=False, nlp=True)
            elif nlp:
                _load_nlp(answerer)
            self._warm = True

    def preload(self, *, model: bool = True, answerer: bool = True, nlp: bool = False) -> None:
        """Start loading what a question needs on background threads, and return at once: the embedding model
        (``model``), the default answerer's own models (``answerer``: the reading answerer's reader, span model and
        combiner; the lexical answerer has none), the lexical answerer's spaCy pipeline (``nlp``: « qui » and « où »
        questions only). A question asked meanwhile waits for the part it uses, and a part that fails to load fails
        again, with its message, when the question needs it. The models' loads mostly overlap (ONNX Runtime builds
        its sessions without the GIL); :meth:`warm` waits for them. Each part is started once per knowledge base."""

        def load(what: str, fn: Callable[[], object]) -> None:
            try:
                fn()
            except Exception:  # noqa: BLE001 - the question that needs it reports the error
                logger.debug("preloading the %s failed", what, exc_info=True)

        jobs: dict[str, Callable[[], object]] = {}
        if model:
            jobs["model"] = getattr(self.embedder, "load", lambda: None)
        if answerer:
            jobs["answerer"] = lambda: getattr(self.answerer(), "load", lambda: None)()
        if nlp:
            jobs["nlp"] = lambda: _load_nlp(self.answerer())
        with self._preload_lock:
            jobs = {what: fn for what, fn in jobs.items() if what not in self._preloaded}
            self._preloaded.update(jobs)
        for what, fn in jobs.items():
            threading.Thread(target=load, args=(what, fn), name=f"qa-preload-{what}", daemon=True).start()

    @property
    def is_warm(self) -> bool:
        """Whether :meth:`warm` has run (the model and the answerer are loaded)."""
        return self._warm

    def as_retriever(self, k: int = 5, *, mode: str | None = None, **filters: Any) -> QARetriever:
        """A LangChain ``BaseRetriever`` over :meth:`search`; ``invoke(question, k=…, source=…)`` overrides per call."""
        from qa.retrieval.langchain import QARetriever

        return QARetriever(search=self.retriever.search, k=check_k(k), filters=Filters.from_kwargs(filters), mode=mode)

    # -- management ----------------------------------------------------------------
    def delete(self, doc_id: str) -> None:
        """Remove an article and all its chunks (invisible at once, then deleted from Chroma)."""
        self.writer.delete(doc_id)

    def article(self, doc_id: str) -> ArticleRecord:
        """The stored article (full text and metadata)."""
        record = self.manifest.get(doc_id)
        if record is None:
            raise NotFoundError(f"no article with id {doc_id!r} in the index")
        return record

    def rebuild(self) -> None:
        """Forget everything indexed (the next ingest starts from scratch)."""
        self.writer.rebuild()

    def stats(self) -> dict[str, Any]:
        """``articles``, ``chunks``, ``model``, ``dimension``, chunking, ``sources``, ``last_ingest``, where the index is."""
        settings = self.settings
        counts = self.index.stats(self.embedder.model_id, settings.chunk_tokens, settings.chunk_overlap)
        where: dict[str, Any] = {"index_dir": str(settings.index_dir), "chroma_url": settings.chroma_url}
        if settings.database_url:
            from qa.index.postgres.database import redact

            where = {"database_url": redact(settings.database_url), "chroma_url": settings.chroma_url}
        return {**counts, **where}

    def probe(self) -> dict[str, str]:
        """Whether the backends answer now: ``{"database": "ok", "vectors": "ok"}``, or the error of the one that
        does not (``/ready``)."""
        return self.index.probe()

    def list_documents(self, offset: int = 0, limit: int = 50) -> tuple[int, list[ArticleRecord]]:
        """``(total, page)``: the indexed articles ordered by id, without their text, for paged listings."""
        if offset < 0 or not 1 <= limit <= MAX_K:
            raise QueryError(f"offset={offset}, limit={limit}: offset must be >= 0 and limit 1 to {MAX_K}")
        return self.manifest.count(), self.manifest.page(offset, limit)


def _one_filters(value: Filters | None, given: Filters) -> Filters:
    """The filters of a call: a ``Filters`` value or keyword filters, not both."""
    if value is None:
        return given
    if not isinstance(value, Filters):
        raise QueryError(f"filters={value!r} is not a Filters value: build it with qa.Filters.of(source=…, date_from=…)")
    if given:
        raise QueryError("filters given twice: pass either filters=Filters.of(…) or keyword filters, not both")
    return value


def _load_nlp(answerer: object) -> None:
    """The lexical answerer's spaCy pipeline, loaded now (it loads on first use)."""
    getattr(answerer, "nlp", None)
