"""Files shared between processes: the one file lock of ``qa``, and folders built aside then swapped in.

:class:`FileLock` is an ``flock`` on a file, exclusive or shared: the kernel releases it when
its holder dies (even on SIGKILL), so a crashed process never leaves a stale lock. Every lock
``qa`` takes across processes is one of these: the index's writer lock and its commit lock
(:mod:`qa.index.locking`), opening an embedded Chroma folder, building the offline model and
its ONNX file (:mod:`qa.embeddings`).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path


class LockTimeout(TimeoutError):
    """The lock was still held by another process when the wait ran out (or ``wait=False``)."""


class FileLock:
    """An ``flock`` on ``path`` (created if missing), exclusive or shared.

    Each :meth:`hold` opens its own file description, so two threads of one process exclude
    each other exactly as two processes do. ``on_wait`` is told once when the lock is busy.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @contextlib.contextmanager
    def hold(
        self, *, shared: bool = False, wait: bool = True, timeout: float | None = None, on_wait: Callable[[], None] | None = None
    ) -> Iterator[int]:
        """Hold the lock for the block; yields the file descriptor. Raises :class:`LockTimeout` if ``wait``
        is false and the lock is busy, or if ``timeout`` seconds pass."""
        fd = self.acquire(shared=shared, wait=wait, timeout=timeout, on_wait=on_wait)
        try:
            yield fd
        finally:
            self.release(fd)

    def acquire(
        self,
        *,
        shared: bool = False,
        wait: bool = True,
        timeout: float | None = None,
        on_wait: Callable[[], None] | None = None,
    ) -> int:
        """Take the lock; returns the descriptor to give :meth:`release` (see :meth:`hold`)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        mode = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
        try:
            try:
                fcntl.flock(fd, mode | fcntl.LOCK_NB)
            except BlockingIOError:
                if not wait:
                    raise LockTimeout(f"{self.path} is held by another process") from None
                if on_wait is not None:
                    on_wait()
                if timeout is None:
                    fcntl.flock(fd, mode)
                else:
                    deadline = time.monotonic() + timeout
                    while True:
                        try:
                            fcntl.flock(fd, mode | fcntl.LOCK_NB)
                            break
                        except BlockingIOError:
                            if time.monotonic() > deadline:
                                raise LockTimeout(f"{self.path} still held after {timeout:.0f}s") from None
                            time.sleep(0.05)
        except BaseException:
            os.close(fd)
            raise
        return fd

    @staticmethod
    def release(fd: int, *, clear: bool = False) -> None:
        try:
            if clear:
                os.ftruncate(fd, 0)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def note(self) -> str:
        """What the current exclusive holder wrote (its pid), or ``"?"``."""
        try:
            return self.path.read_text(encoding="utf-8").strip() or "?"
        except OSError:
            return "?"


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path`` for the block: one builder at a time, across processes."""
    with FileLock(path).hold():
        yield


@contextlib.contextmanager
def staged_folder(folder: Path) -> Iterator[Path]:
    """A temporary folder beside ``folder`` to build into; swapped in for ``folder`` when the block
    succeeds (a stale or incomplete ``folder`` is moved aside first), removed when it fails."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.build-", dir=folder.parent))
    try:
        tmp.chmod(0o755)  # mkdtemp creates 0700
        yield tmp
        if folder.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{folder.name}.old-", dir=folder.parent))
            os.replace(folder, old / "x")
            os.replace(tmp, folder)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
