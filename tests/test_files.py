"""The one file lock of qa: shared holds coexist, an exclusive hold excludes them, across processes too."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest

from qa.files import FileLock, LockTimeout, staged_folder


def test_shared_holds_coexist_and_exclude_an_exclusive_one(tmp_path):
    lock = FileLock(tmp_path / "x.lock")
    with lock.hold(shared=True), lock.hold(shared=True):
        with pytest.raises(LockTimeout):
            lock.acquire(wait=False)
        with pytest.raises(LockTimeout, match="still held after"):
            lock.acquire(timeout=0.2)
    with lock.hold():
        with pytest.raises(LockTimeout):
            lock.acquire(shared=True, wait=False)
    lock.release(lock.acquire())  # free again


def test_a_waiter_is_told_once_and_gets_the_lock_when_it_is_released(tmp_path):
    lock, told, got = FileLock(tmp_path / "x.lock"), [], []
    fd = lock.acquire()

    def waiter() -> None:
        with lock.hold(shared=True, on_wait=lambda: told.append(1)):
            got.append(time.monotonic())

    thread = threading.Thread(target=waiter)
    thread.start()
    time.sleep(0.3)
    released = time.monotonic()
    lock.release(fd)
    thread.join(10)
    assert told == [1] and got and got[0] >= released


def test_another_process_is_excluded_and_the_kernel_frees_a_dead_holder(tmp_path):
    path = tmp_path / "x.lock"
    code = f"from qa.files import FileLock; FileLock({str(path)!r}).acquire(); print('held', flush=True); input()"
    holder = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(LockTimeout):
            FileLock(path).acquire(shared=True, wait=False)
    finally:
        holder.kill()
        holder.wait(10)
    with FileLock(path).hold(shared=True):  # SIGKILL released it
        pass


def test_staged_folder_swaps_in_on_success_and_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "model"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with staged_folder(target) as tmp:
        (tmp / "new.txt").write_text("new")
    assert [p.name for p in target.iterdir()] == ["new.txt"]
    with pytest.raises(RuntimeError), staged_folder(target) as tmp:
        (tmp / "half.txt").write_text("half")
        raise RuntimeError("build failed")
    assert [p.name for p in target.iterdir()] == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
