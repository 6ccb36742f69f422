"""Search beside a writer: a reader process queries in a loop while another process ingests,
updates and deletes articles in the same embedded index; and two writers queue on the lock."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from qa import IndexBusyError, KnowledgeBase
from qa.index.locking import WriterLock

from helpers import DRIVER, driver_env, dump, write, write_corpus

ROUNDS = 12


@pytest.mark.stress
def test_reader_never_fails_nor_sees_half_an_article_while_a_writer_works(tmp_path):
    index, folder = tmp_path / "index", tmp_path / "news"
    seed = subprocess.run(
        [sys.executable, str(DRIVER), "writer", str(index), str(folder), "1"], env=driver_env(), capture_output=True, text=True
    )
    assert seed.returncode == 0, seed.stderr
    reader = subprocess.Popen(
        [sys.executable, str(DRIVER), "reader", str(index), "15"], env=driver_env(), stdout=subprocess.PIPE, text=True
    )
    assert reader.stdout is not None and reader.stdout.readline().strip() == "ready"
    writer = subprocess.run(
        [sys.executable, str(DRIVER), "writer", str(index), str(folder), str(ROUNDS)],
        env=driver_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    out, _ = reader.communicate(timeout=120)
    assert writer.returncode == 0, writer.stderr[-2000:]
    stats = json.loads(out.strip().splitlines()[-1])
    print(f"\nreader beside a writer ({ROUNDS} rounds of 10 updates, 12 deletes): {stats}")
    assert stats["failures"] == 0, stats["errors"][:3]
    assert stats["partial"] == 0 and stats["mixed"] == 0
    assert stats.get("dense_misses", 0) == 0  # the embedded store's search has never left a live chunk out here
    assert stats["queries"] >= 50 and stats["hits"] > 0


def test_a_second_writer_waits_with_a_message_or_fails_fast(tmp_path, fake_embedder, caplog):
    index = tmp_path / "index"
    news = write(tmp_path / "a.txt", "Un article sur Almaty.")
    with KnowledgeBase.open(index, embedder=fake_embedder) as kb:
        other = WriterLock(index)
        with other.hold():  # another writer (a second open file description: as another process would)
            with pytest.raises(IndexBusyError, match=r"another ingest is running on .*\(pid \d+\).*--no-wait"):
                kb.ingest([news], wait=False)
            messages = []
            with pytest.raises(IndexBusyError, match="still holds"):
                kb.index.writer_lock.on_wait = messages.append
                with kb.index.writer_lock.hold(timeout=0.3):
                    pass
            assert messages and "waiting…" in messages[0]
        assert kb.ingest([news], wait=False).added  # free again


def test_cli_no_wait_is_a_one_line_error(tmp_path, use_fake_embedder, capsys):
    from qa.cli import main

    index = tmp_path / "index"
    with WriterLock(index).hold():
        assert main(["ingest", "-q", "--no-wait", "--index", str(index), str(write(tmp_path / "a.txt", "Texte."))]) == 1
    err = capsys.readouterr().err
    assert err.startswith("qa: error: another ingest is running") and err.count("\n") == 1


@pytest.mark.stress
def test_two_ingest_processes_at_once_queue_and_both_finish(tmp_path):
    index = tmp_path / "index"
    feeds = [write_corpus(tmp_path / f"feed{i}.jsonl", 200, seed=i) for i in (1, 2)]
    # same ids a00000… in both feeds with different texts: the second writer updates what the first added
    procs = [
        subprocess.Popen(
            [sys.executable, str(DRIVER), "ingest", str(index), str(feed)],
            env=driver_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for feed in feeds
    ]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-1000:] for _, err in outputs]
    waited = [("another ingest is running" in err and "waiting…" in err) for _, err in outputs]
    print(f"\ntwo ingests at once: waited on the lock: {waited}")
    state = dump(index)
    assert state["check_ok"], state["problems"]
    assert len(state["manifest"]) == 200 and len(state["chroma"]) == state["lexical_rows"]
