"""The index's two locks, both :class:`qa.files.FileLock` in the index folder.

- The **writer lock** (``ingest.lock``): one writer (ingest, delete, prune, repair, rebuild) at
  a time, across processes. Held for a whole operation, possibly minutes. The file holds the
  holder's pid, for the message a second writer sees while it waits. Readers never take it.
- The **commit lock** (``commit.lock``): a writer holds it exclusively only while the
  committed state moves (the manifest transaction that flips articles to their new chunks,
  then the deletion of the replaced chunks from Chroma); a reader that could not get a
  consistent view optimistically holds it shared for one search, so it reads one committed
  state, never half of a write (:class:`qa.retrieval.Retriever`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from qa.errors import IndexBusyError
from qa.files import FileLock, LockTimeout

logger = logging.getLogger(__name__)

LOCK_NAME = "ingest.lock"
COMMIT_LOCK_NAME = "commit.lock"


class ReentrantWriterLock:
    """What every writer lock shares: re-entrant within a process (threads queue on a lock), exclusive across
    processes through :meth:`_acquire` / :meth:`_release` (a file lock here, an advisory lock in PostgreSQL)."""

    def __init__(self) -> None:
        self._thread_lock = threading.RLock()
        self._depth = 0

    @property
    def held(self) -> bool:
        """True while a thread of this process holds the lock."""
        return self._depth > 0

    @contextlib.contextmanager
    def hold(self, *, wait: bool = True, timeout: float | None = None) -> Iterator[None]:
        """Hold the lock; wait for another writer (saying so), or raise :class:`IndexBusyError`."""
        if not self._thread_lock.acquire(blocking=wait):
            raise IndexBusyError("another ingest is running in this process: retry when it is done")
        try:
            if self._depth == 0:
                self._acquire(wait, timeout)
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
                if self._depth == 0:
                    self._release()
        finally:
            self._thread_lock.release()

    def _acquire(self, wait: bool, timeout: float | None) -> None:
        raise NotImplementedError

    def _release(self) -> None:
        raise NotImplementedError


class WriterLock(ReentrantWriterLock):
    """The writer lock of one index folder: a file lock, its file naming the holder's pid."""

    def __init__(self, index_dir: Path, on_wait: Callable[[str], None] | None = None) -> None:
        super().__init__()
        self.path = Path(index_dir) / LOCK_NAME
        self.on_wait = on_wait
        self._file = FileLock(self.path)
        self._fd: int | None = None

    def holder(self) -> str:
        return self._file.note()

    def _say_waiting(self) -> None:
        message = f"another ingest is running on {self.path.parent} (pid {self.holder()}); waiting…"
        if self.on_wait:
            self.on_wait(message)
        else:
            logger.warning(message)

    def _acquire(self, wait: bool, timeout: float | None) -> None:
        try:
            self._fd = self._file.acquire(wait=wait, timeout=timeout, on_wait=self._say_waiting)
        except LockTimeout:
            if not wait:
                raise IndexBusyError(
                    f"another ingest is running on {self.path.parent} (pid {self.holder()}): "
                    "wait for it to finish, or run again without --no-wait to queue behind it"
                ) from None
            raise IndexBusyError(f"another ingest (pid {self.holder()}) still holds {self.path} after {timeout:.0f}s") from None
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, f"{os.getpid()}\n".encode(), 0)

    def _release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            FileLock.release(fd, clear=True)


class CommitLock:
    """Exclusive while a writer moves the committed state; shared by a reader that needs one fixed state."""

    def __init__(self, index_dir: Path) -> None:
        self._file = FileLock(Path(index_dir) / COMMIT_LOCK_NAME)

    def exclusive(self) -> contextlib.AbstractContextManager[int]:
        return self._file.hold()

    def shared(self) -> contextlib.AbstractContextManager[int]:
        return self._file.hold(shared=True)
