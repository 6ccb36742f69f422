"""What readers trust: the committed state of the index, as the manifest says it, and a store that shows it.

A chunk is shown only once its article's manifest transaction has committed
(:meth:`qa.index.manifest.Manifest.committed`). ``meta.generation`` grows with every committed
change; a reader in another process reloads its embedded Chroma client when it moves
(:meth:`CommittedView.sync`), since that client keeps its own in-memory copy of the vectors.
:meth:`CommittedView.pinned` holds the commit lock shared: no writer moves the committed state
while it is held (:class:`qa.index.locking.CommitLock`).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Sequence

from qa.index.parts import CommitLockPart, ManifestStore, VectorStore, WriterLockPart


class CommittedView:
    """The committed chunk ids, the generation this process has seen, and the store kept in step."""

    def __init__(
        self, manifest: ManifestStore, store: VectorStore, writer_lock: WriterLockPart, commit_lock: CommitLockPart
    ) -> None:
        self.manifest = manifest
        self.store = store
        self.writer_lock = writer_lock
        self.commit_lock = commit_lock
        self._generation = manifest.generation()
        self._lock = threading.Lock()
        self._empty: tuple[int, bool] | None = None
        """Whether the index was empty, at the generation it was asked (a round trip saved per search on PostgreSQL)."""

    def sync(self, *, writing: bool = False) -> None:
        """Reload the embedded store if another process changed the index since this one last looked.

        While a thread of this process writes, readers leave the store alone (its client is the
        current one); the writer itself, once it holds the writer lock (``writing``), catches up
        with what other processes wrote before it."""
        generation = self.manifest.generation()
        with self._lock:
            if generation == self._generation:
                return
            if writing or not self.writer_lock.held:
                self.store.refresh()
            self._generation = generation

    def seen(self) -> None:
        """This process has just written: its client is current at the manifest's generation."""
        with self._lock:
            self._generation = self.manifest.generation()

    def committed(self, chunk_ids: Sequence[str]) -> set[str]:
        """Those of ``chunk_ids`` whose article is committed (one database read: one instant)."""
        return self.manifest.committed(chunk_ids)

    def is_empty(self) -> bool:
        """Whether no article is committed (asked again only when the generation this process has seen moves)."""
        with self._lock:
            generation, known = self._generation, self._empty
        if known is not None and known[0] == generation:
            return known[1]
        empty = self.manifest.is_empty()
        with self._lock:
            self._empty = (generation, empty)
        return empty

    @contextlib.contextmanager
    def pinned(self) -> Iterator[None]:
        """No writer moves the committed state during the block (the store is synced at its start)."""
        with self.commit_lock.shared():
            self.sync()
            yield
