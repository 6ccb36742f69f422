"""Crash safety: an ingest killed with SIGKILL at random points, then run again, gives exactly
the index of an uninterrupted ingest (same chunk ids, same counts, `qa check` clean)."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import DRIVER, driver_env, dump, run_driver, write_corpus

pytestmark = pytest.mark.stress  # subprocesses killed with SIGKILL: `make test`, not `make test-fast`

ARTICLES = 500


def kill_during_ingest(index: Path, corpus: Path, delay: float) -> bool:
    """Start an ingest, SIGKILL it ``delay`` seconds after it is ready; True if it was still running."""
    proc = subprocess.Popen(
        [sys.executable, str(DRIVER), "ingest", str(index), str(corpus)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=driver_env(),
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    time.sleep(delay)
    alive = proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    proc.stdout.close()
    return alive


@pytest.fixture(scope="module")
def corpora(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The corpus, an updated version of it, and the reference indexes of uninterrupted ingests."""
    base = tmp_path_factory.mktemp("crash")
    first = write_corpus(base / "news.jsonl", ARTICLES, seed=1)
    second = write_corpus(base / "news-v2.jsonl", ARTICLES, seed=1, changed=80)
    ref = base / "reference"
    started = time.monotonic()
    assert run_driver("ingest", str(ref), str(first)).returncode == 0
    seconds = time.monotonic() - started
    ref_first = dump(ref)
    shutil.copytree(ref, base / "after-first")
    assert run_driver("ingest", str(ref), str(second)).returncode == 0
    return {
        "first": first,
        "second": second,
        "ref_first": ref_first,
        "ref_second": dump(ref),
        "seconds": seconds,
        "after_first": base / "after-first",
    }


def assert_same_index(got: dict, want: dict) -> None:
    assert got["check_ok"], got["problems"]
    assert got["manifest"] == want["manifest"]
    assert got["chroma"] == want["chroma"] == want["lexical"] == got["lexical"]
    assert got["lexical_rows"] == want["lexical_rows"] == len(want["chroma"])


def test_reference_ingest_is_clean(corpora):
    ref = corpora["ref_first"]
    assert ref["check_ok"] and len(ref["manifest"]) == ARTICLES and len(ref["chroma"]) > ARTICLES


def test_sigkill_at_random_points_then_rerun_gives_the_uninterrupted_index(corpora, tmp_path):
    seed = int(os.environ.get("CRASH_SEED", "20260527"))  # more trials: CRASH_SEED=n pytest tests/test_crash.py
    rng = random.Random(seed)
    index = tmp_path / "index"
    window = max(1.0, corpora["seconds"] - 2.5)  # the ingest itself, without the interpreter's start
    delays = [round(rng.uniform(0.05, window), 2) for _ in range(4)]
    killed = [kill_during_ingest(index, corpora["first"], d) for d in delays]
    print(f"\ncrash trials (seed {seed}): delays {delays}s, killed mid-ingest: {killed}")
    assert any(killed), "no kill landed during the ingest: the window is wrong"
    result = run_driver("ingest", str(index), str(corpora["first"]))
    assert result.returncode == 0, result.stderr
    assert_same_index(dump(index), corpora["ref_first"])

    # an update (80 changed articles) killed twice, then finished
    for d in (round(rng.uniform(0.05, 1.5), 2), round(rng.uniform(0.05, 1.5), 2)):
        kill_during_ingest(index, corpora["second"], d)
    assert run_driver("ingest", str(index), str(corpora["second"])).returncode == 0
    assert_same_index(dump(index), corpora["ref_second"])


@pytest.mark.parametrize("point", ["chunks:2", "commit:1"])
def test_sigkill_at_each_step_of_an_update(corpora, tmp_path, point):
    """Deterministic kills during an update of 80 articles: after Chroma got the new chunks but
    before the manifest commit; after the commit but before the replaced chunks were deleted.
    The interrupted state is reported by `qa check`; the rerun finishes the job."""
    index = tmp_path / "index"
    shutil.copytree(corpora["after_first"], index)
    update = run_driver("ingest", str(index), str(corpora["second"]), QA_TEST_CRASH_AT=point)
    assert update.returncode == -signal.SIGKILL
    interrupted = dump(index)
    assert not interrupted["check_ok"]
    assert "journaled by an interrupted write" in interrupted["problems"][0]
    assert run_driver("ingest", str(index), str(corpora["second"])).returncode == 0
    assert_same_index(dump(index), corpora["ref_second"])
