"""``qa check`` and ``qa check --repair``: is the index whole, and make it so.

The manifest (SQLite) is the source of truth: an article is indexed when its row is
committed, with the list of its chunk ids. The check compares it with what the two
indexes hold:

- Chroma (dense): every listed chunk present (else the article is *broken*: repair
  re-embeds it from the text the manifest keeps), nothing else (*orphans*: chunks of
  uncommitted, replaced or deleted articles, left by a crash; repair deletes them);
- the lexical rows (BM25): exactly the listed chunks, each with its FTS row, and the FTS5
  table's own integrity check;
- the ``pending`` journal empty (else an ingest was interrupted; repair finishes it);
- the database's own checks (SQLite's ``quick_check``).

:func:`check_index` and :func:`repair_index` take the index's parts (:mod:`qa.index.parts`: manifest,
lexical index, vector store, view, and for repair the :class:`~qa.index.writer.IndexWriter`) and use only
their protocols, so the same check runs on either backend.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from qa.index.parts import LexicalStore, ManifestStore, VectorStore
from qa.index.view import CommittedView

if TYPE_CHECKING:  # the writer calls repair_index with itself
    from qa.index.writer import IndexWriter

logger = logging.getLogger(__name__)

SAMPLE = 5


@dataclass
class CheckReport:
    """What ``qa check`` found. ``ok`` when every list is empty."""

    articles: int = 0
    manifest_chunks: int = 0
    chroma_chunks: int = 0
    lexical_chunks: int = 0
    pending: list[str] = field(default_factory=list)
    """Journaled chunk ids: an ingest, delete or repair was interrupted."""
    orphans: list[str] = field(default_factory=list)
    """Chunks in Chroma that no committed article lists."""
    missing: list[str] = field(default_factory=list)
    """Chunks the manifest lists that Chroma lacks."""
    lexical_missing: list[str] = field(default_factory=list)
    """Chunks the manifest lists that the lexical index lacks."""
    lexical_orphans: list[str] = field(default_factory=list)
    """Lexical rows of chunks that no committed article lists."""
    wrong_owner: list[str] = field(default_factory=list)
    """Chunks whose Chroma or lexical ``doc_id`` is not the article that lists them."""
    broken_articles: list[str] = field(default_factory=list)
    """Articles with chunks missing from either index (repair re-indexes them from the stored text)."""
    sqlite: list[str] = field(default_factory=list)
    """Problems the databases themselves report (SQLite's quick_check, FTS5's integrity-check)."""
    repaired: list[str] = field(default_factory=list)
    """What ``--repair`` did."""
    unplaced: int = 0
    """Chunks whose place in their article the database lacks (PostgreSQL, written before schema 2): not a fault,
    but search reads their text from Chroma, a round trip more; ``--repair`` records it."""

    @property
    def ok(self) -> bool:
        return not (
            self.pending
            or self.orphans
            or self.missing
            or self.lexical_missing
            or self.lexical_orphans
            or self.wrong_owner
            or self.broken_articles
            or self.sqlite
        )

    def problems(self) -> list[str]:
        """One line per kind of problem, with a few examples."""
        lines = []
        for name, what in (
            ("pending", "chunk ids journaled by an interrupted write"),
            ("orphans", "chunks in Chroma that no article lists"),
            ("missing", "chunks listed by the manifest but missing from Chroma"),
            ("lexical_missing", "chunks missing from the lexical index"),
            ("lexical_orphans", "lexical rows that no article lists"),
            ("wrong_owner", "chunks stored under another article id"),
            ("broken_articles", "articles not fully indexed"),
            ("sqlite", "database integrity problems"),
        ):
            items = getattr(self, name)
            if items:
                sample = ", ".join(items[:SAMPLE]) + (", …" if len(items) > SAMPLE else "")
                lines.append(f"{len(items)} {what}: {sample}")
        return lines

    def summary(self) -> str:
        counts = (
            f"{self.articles} articles, {self.manifest_chunks} chunks in the manifest, "
            f"{self.chroma_chunks} in Chroma, {self.lexical_chunks} in the lexical index"
        )
        note = (
            f" ({self.unplaced} chunks written before schema 2 are read from Chroma: `qa check --repair` records their "
            "place, then search reads them from the database)"
            if self.unplaced
            else ""
        )
        return f"{counts}: {'OK' if self.ok else 'PROBLEMS FOUND'}{note}"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


def check_index(manifest: ManifestStore, lexical: LexicalStore, store: VectorStore, view: CommittedView) -> CheckReport:
    """Compare the manifest with Chroma and the lexical index (reads only)."""
    view.sync()
    report = CheckReport()
    listed = manifest.chunk_map()  # chunk_id -> doc_id, from the articles table
    report.articles = manifest.count()
    report.manifest_chunks = len(listed)
    report.pending = manifest.pending()

    dense = store.all_ids()  # chunk_id -> doc_id, from Chroma metadata
    report.chroma_chunks = len(dense)
    report.orphans = sorted(set(dense) - set(listed))
    report.missing = sorted(set(listed) - set(dense))

    rows = lexical.rows()  # chunk_id -> doc_id, from the lexical chunk rows
    unindexed = lexical.unindexed_chunks()  # chunk rows BM25 cannot find
    report.sqlite = manifest.problems() + lexical.problems()
    report.lexical_chunks = len(rows)
    report.lexical_orphans = sorted(set(rows) - set(listed))
    report.lexical_missing = sorted((set(listed) - set(rows)) | set(unindexed))
    report.wrong_owner = sorted(
        c for c, doc in listed.items() if (c in dense and dense[c] != doc) or (c in rows and rows[c] != doc)
    )
    report.broken_articles = sorted({listed[c] for c in (*report.missing, *report.lexical_missing, *report.wrong_owner)})
    report.unplaced = len(lexical.unplaced())
    return report


PLACE_BATCH = 5000
Progress = Callable[[int, int], None]
"""``(done, total)`` after each batch of a long repair step."""


def place_chunks(lexical: LexicalStore, store: VectorStore, total: int, progress: Progress | None = None) -> int:
    """Record, from the vector store's metadata, the place of the chunks the lexical index lacks it for, in batches
    (``progress(done, total)`` after each); returns how many. Stops at a batch whose chunks the store lacks."""
    done = 0
    while chunk_ids := lexical.unplaced(PLACE_BATCH):
        places = store.places(chunk_ids)
        if not places:
            break
        lexical.place(places)
        done += len(places)
        if progress is not None:
            progress(done, total)
        if len(places) < len(chunk_ids):  # the rest are missing from the store: the next batch would repeat them
            break
    return done


def repair_index(
    manifest: ManifestStore,
    lexical: LexicalStore,
    store: VectorStore,
    view: CommittedView,
    writer: IndexWriter,
    progress: Progress | None = None,
) -> CheckReport:
    """Fix what :func:`check_index` finds (the caller holds the writer lock); returns a fresh check.

    An interrupted write is finished by ``writer.recover()``; FTS5, orphan chunks and orphan lexical
    rows are fixed under the commit lock (what readers may be shown moves); broken articles are
    re-indexed from the text the manifest keeps by ``writer.reindex()``."""
    before = check_index(manifest, lexical, store, view)
    done: list[str] = []
    if before.pending:
        removed = writer.recover()
        done.append(f"finished an interrupted write ({len(before.pending)} journaled ids, {len(removed)} chunks deleted)")
        before = check_index(manifest, lexical, store, view)
    if before.sqlite or before.orphans or before.lexical_orphans:
        with writer.commit_lock.exclusive():
            if before.sqlite:
                lexical.rebuild()
                done.append("rebuilt the lexical index")
            if before.orphans:
                store.delete(before.orphans)
                done.append(f"deleted {len(before.orphans)} orphan chunks from Chroma")
            if before.lexical_orphans:
                lexical.drop_rows(before.lexical_orphans)
                done.append(f"deleted {len(before.lexical_orphans)} orphan lexical rows")
    if before.broken_articles:
        articles = [record.to_article() for record in manifest.iter_records(before.broken_articles)]
        writer.reindex(articles)
        done.append(f"re-indexed {len(articles)} articles from their stored text: {json.dumps(before.broken_articles[:SAMPLE])}")
    if before.unplaced:  # after the re-index: every chunk left is in the store
        placed = place_chunks(lexical, store, before.unplaced, progress)
        done.append(f"recorded the place of {placed} chunks in their article (written before schema 2)")
    after = check_index(manifest, lexical, store, view)
    after.repaired = done
    return after
