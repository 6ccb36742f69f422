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
- SQLite's ``quick_check``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from typing import Any

from qa.documents import Article
from qa.index.lexical import CHUNKS_TABLE, FTS_TABLE

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
    """Problems SQLite itself reports (quick_check, FTS5 integrity-check)."""
    repaired: list[str] = field(default_factory=list)
    """What ``--repair`` did."""

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
            ("sqlite", "SQLite integrity problems"),
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
        return f"{counts}: {'OK' if self.ok else 'PROBLEMS FOUND'}"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


def check_index(kb: Any) -> CheckReport:
    """Compare the manifest with Chroma and the lexical index (reads only)."""
    kb.view.sync()
    manifest = kb.manifest
    report = CheckReport()
    listed = manifest.chunk_map()  # chunk_id -> doc_id, from the articles table
    report.articles = manifest.count()
    report.manifest_chunks = len(listed)
    report.pending = manifest.pending()

    dense = kb.store.all_ids()  # chunk_id -> doc_id, from Chroma metadata
    report.chroma_chunks = len(dense)
    report.orphans = sorted(set(dense) - set(listed))
    report.missing = sorted(set(listed) - set(dense))

    with manifest._lock:
        db = manifest._db
        lexical = dict(db.execute(f"SELECT chunk_id, doc_id FROM {CHUNKS_TABLE}").fetchall())
        fts_without_chunk = db.execute(
            f"SELECT COUNT(*) FROM {FTS_TABLE} WHERE rowid NOT IN (SELECT id FROM {CHUNKS_TABLE})"
        ).fetchone()[0]
        chunk_without_fts = db.execute(
            f"SELECT chunk_id FROM {CHUNKS_TABLE} WHERE id NOT IN (SELECT rowid FROM {FTS_TABLE})"
        ).fetchall()
        quick = [r[0] for r in db.execute("PRAGMA quick_check").fetchall()]
        try:
            db.execute(f"INSERT INTO {FTS_TABLE}({FTS_TABLE}) VALUES ('integrity-check')")
        except Exception as exc:  # sqlite3.DatabaseError: the FTS index disagrees with its content
            report.sqlite.append(f"FTS5 integrity-check: {exc}")
    report.lexical_chunks = len(lexical)
    if quick != ["ok"]:
        report.sqlite.extend(f"quick_check: {q}" for q in quick[:SAMPLE])
    if fts_without_chunk:
        report.sqlite.append(f"{fts_without_chunk} FTS rows without a chunk row")
    report.lexical_orphans = sorted(set(lexical) - set(listed))
    report.lexical_missing = sorted((set(listed) - set(lexical)) | {r[0] for r in chunk_without_fts})
    report.wrong_owner = sorted(
        c for c, doc in listed.items() if (c in dense and dense[c] != doc) or (c in lexical and lexical[c] != doc)
    )
    report.broken_articles = sorted({listed[c] for c in (*report.missing, *report.lexical_missing, *report.wrong_owner)})
    return report


def repair_index(kb: Any) -> CheckReport:
    """Fix what :func:`check_index` finds (the caller holds the writer lock); returns a fresh check."""
    before = check_index(kb)
    done: list[str] = []
    if before.pending:
        removed = kb.recover()
        done.append(f"finished an interrupted write ({len(before.pending)} journaled ids, {len(removed)} chunks deleted)")
        before = check_index(kb)
    if before.sqlite:
        with kb.manifest._lock:
            kb.manifest._db.execute(f"INSERT INTO {FTS_TABLE}({FTS_TABLE}) VALUES ('rebuild')")
        done.append("rebuilt the FTS5 index")
    if before.orphans:
        kb.store.delete(before.orphans)
        done.append(f"deleted {len(before.orphans)} orphan chunks from Chroma")
    if before.lexical_orphans:
        with kb.manifest._transaction():
            kb.manifest.lexical.delete_chunks(before.lexical_orphans)
        done.append(f"deleted {len(before.lexical_orphans)} orphan lexical rows")
    if before.broken_articles:
        articles = []
        for record in kb.manifest.iter_records(before.broken_articles):
            articles.append(
                Article(
                    id=record.doc_id,
                    text=record.text,
                    title=record.title,
                    date=record.date,
                    url=record.url,
                    source=record.source,
                    path=record.path,
                )
            )
        for i in range(0, len(articles), 32):
            kb._write_batch(articles[i : i + 32], force=True)
        done.append(f"re-indexed {len(articles)} articles from their stored text: {json.dumps(before.broken_articles[:SAMPLE])}")
    after = check_index(kb)
    after.repaired = done
    return after
