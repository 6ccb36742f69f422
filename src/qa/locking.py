"""The index's writer lock: one writer (ingest, delete, prune, repair) at a time, across processes.

An ``fcntl`` lock on ``ingest.lock`` in the index folder. The kernel releases it when its
holder dies (even on SIGKILL), so a crashed ingest never leaves a stale lock behind. The
file holds the holder's pid, for the message a second writer sees while it waits.
Readers (search, ask) never take it.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from qa.errors import IndexBusyError

logger = logging.getLogger(__name__)

LOCK_NAME = "ingest.lock"


class WriterLock:
    """Re-entrant within a process (threads queue on a lock), exclusive across processes."""

    def __init__(self, index_dir: Path, on_wait: Callable[[str], None] | None = None) -> None:
        self.path = Path(index_dir) / LOCK_NAME
        self.on_wait = on_wait
        self._thread_lock = threading.RLock()
        self._depth = 0
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """True while a thread of this process holds the lock."""
        return self._depth > 0

    def holder(self) -> str:
        try:
            return self.path.read_text(encoding="utf-8").strip() or "?"
        except OSError:
            return "?"

    @contextmanager
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
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = self.holder()
                if not wait:
                    raise IndexBusyError(
                        f"another ingest is running on {self.path.parent} (pid {holder}): "
                        "wait for it to finish, or run again without --no-wait to queue behind it"
                    ) from None
                message = f"another ingest is running on {self.path.parent} (pid {holder}); waiting…"
                if self.on_wait:
                    self.on_wait(message)
                else:
                    logger.warning(message)
                deadline = None if timeout is None else time.monotonic() + timeout
                while True:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except BlockingIOError:
                        if deadline is not None and time.monotonic() > deadline:
                            raise IndexBusyError(
                                f"another ingest (pid {self.holder()}) still holds {self.path} after {timeout:.0f}s"
                            ) from None
                        time.sleep(0.2)
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def _release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            try:
                os.ftruncate(fd, 0)
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)
