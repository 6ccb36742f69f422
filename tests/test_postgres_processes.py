"""Several processes over one PostgreSQL + one ``chroma run`` server, as several machines would run them: ingest
workers killed mid-batch lose nothing and write nothing twice; a reader on one replica never sees half an article
while workers write through another; two ``qa serve`` replicas answer alike, and one whose database restarts
answers 503 (never a wrong answer) and recovers by itself."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from qa import KnowledgeBase

from chroma_server import free_port, unique_collection
from helpers import DRIVER, FakeEmbedder, driver_env, write_corpus
from postgres_server import PostgresServer

pytestmark = [pytest.mark.server, pytest.mark.stress]

CHUNKS = {"chunk_tokens": 60, "chunk_overlap": 10}  # as ingest_driver.py


def _env(pg_url: str, chroma_url: str, collection: str, tmp_path: Path, **extra: str) -> dict[str, str]:
    env = driver_env(QA_DATABASE_URL=pg_url, QA_CHROMA_URL=chroma_url, QA_COLLECTION=collection, **extra)
    env["QA_INDEX_DIR"] = str(tmp_path / "index")
    return env


def _worker(env: dict[str, str], *args: str, crash: str | None = None) -> subprocess.Popen[str]:
    env = {**env, **({"QA_TEST_CRASH_AT": crash} if crash else {})}
    return subprocess.Popen(
        [sys.executable, str(DRIVER), "worker", env["QA_INDEX_DIR"], *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _state(kb: KnowledgeBase) -> dict[str, tuple[str, list[str]]]:
    return {d: (r.content_hash, r.chunk_ids) for d in kb.manifest.doc_ids() if (r := kb.manifest.get(d)) is not None}


def test_workers_killed_mid_batch_lose_nothing_and_write_nothing_twice(tmp_path, pg_url, chroma_server):
    """200 articles and 40 updates of them enqueued; two workers, four SIGKILLs (after the Chroma write before the
    commit, right after a commit, after a batch, and from outside), restarted: the index equals a single-process
    ingest of the same files, every Chroma id is a committed chunk, ``qa check`` is clean."""
    first = write_corpus(tmp_path / "first.jsonl", 200, seed=11)
    second = write_corpus(tmp_path / "second.jsonl", 40, seed=12, changed=40)
    env = _env(pg_url, chroma_server.url, unique_collection(), tmp_path)
    kb = KnowledgeBase.open(
        tmp_path / "index",
        embedder=FakeEmbedder(),
        database_url=pg_url,
        chroma_url=chroma_server.url,
        collection=env["QA_COLLECTION"],
        **CHUNKS,
    )
    assert kb.index.queue is not None
    assert kb.ingest([first], wait=False).queued == 200
    assert kb.ingest([second], wait=False).queued == 40
    lease = ("--until-empty", "--lease", "3")
    kills = 0
    for crashes in (("chunks:2", "commit:2"), ("batch:1", None)):
        workers = [_worker(env, *lease, crash=crash) for crash in crashes]
        if crashes[1] is None:  # the fourth: killed from outside while it works
            assert workers[1].stdout is not None and workers[1].stdout.readline().strip() == "ready"
            time.sleep(1.5)
            workers[1].send_signal(signal.SIGKILL)
        for w in workers:
            w.wait(timeout=240)
        assert [w.returncode for w in workers] == [-signal.SIGKILL] * 2, [w.stderr.read()[-1500:] for w in workers if w.stderr]
        kills += 2
    finishers = [_worker(env, *lease) for _ in range(2)]
    outputs = [w.communicate(timeout=300) for w in finishers]
    assert [w.returncode for w in finishers] == [0, 0], [err[-2000:] for _, err in outputs]
    assert kills == 4

    queue = kb.index.queue.stats()
    assert queue["queued"] == queue["claimed"] == queue["failed"] == 0 and queue["done"] == 240
    single = KnowledgeBase.open(tmp_path / "single", embedder=FakeEmbedder(), **CHUNKS)
    single.ingest([first])
    single.ingest([second])
    want = _state(single)
    got = _state(kb)
    assert got == want  # the same versions (the updates won), the same chunk ids
    chroma = kb.store.all_ids()
    listed = {c for _, chunk_ids in got.values() for c in chunk_ids}
    assert set(chroma) == listed and kb.store.count() == len(listed)  # 0 orphans, 0 missing, 0 duplicates
    check = kb.check()
    assert check.ok, check.problems()
    assert kb.index.lexical.count() == len(listed)
    single.close()
    kb.close()


def test_a_reader_on_one_replica_never_sees_half_an_article_while_workers_write_through_another(tmp_path, pg_url, chroma_server):
    """ingest_driver's reader (replica A) searches in a loop while its writer (replica B) updates and deletes
    articles through the queue and a worker process writes them: 0 failures, 0 partial articles, 0 mixed versions."""
    env = _env(pg_url, chroma_server.url, unique_collection(), tmp_path)
    folder = tmp_path / "news"
    seed = subprocess.run(
        [sys.executable, str(DRIVER), "writer", env["QA_INDEX_DIR"], str(folder), "1"], env=env, capture_output=True, text=True
    )
    assert seed.returncode == 0, seed.stderr[-2000:]
    reader = subprocess.Popen(
        [sys.executable, str(DRIVER), "reader", env["QA_INDEX_DIR"], "20"], env=env, stdout=subprocess.PIPE, text=True
    )
    worker = _worker(env)
    try:
        assert reader.stdout is not None and reader.stdout.readline().strip() == "ready"
        writer = subprocess.run(
            [sys.executable, str(DRIVER), "writer", env["QA_INDEX_DIR"], str(folder), "8"],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        out, _ = reader.communicate(timeout=120)
    finally:
        worker.send_signal(signal.SIGTERM)  # finishes its batch, leaves
        worker.wait(timeout=60)
    assert writer.returncode == 0, writer.stderr[-2000:]
    stats = json.loads(out.strip().splitlines()[-1])
    print(f"\nreader on replica A beside a writer through replica B and a worker: {stats}")
    assert stats["failures"] == 0, stats["errors"][:3]
    assert stats["partial"] == 0 and stats["mixed"] == 0
    assert stats.get("dense_misses", 0) <= stats["queries"] // 100  # ANN misses of whole, committed articles: rare
    assert stats["queries"] >= 50 and stats["hits"] > 0
    assert worker.returncode == 0


def _serve(env: dict[str, str], port: int, log: Path) -> subprocess.Popen[bytes]:
    code = (
        "import sys, uvicorn; sys.path.insert(0, sys.argv[2])\n"
        "from helpers import FakeEmbedder\n"
        "from qa.config import load_settings\n"
        "from qa.http.app import create_app\n"
        "import qa.http.service as service\n"
        "from qa import KnowledgeBase\n"
        "service.open_kb = lambda settings: KnowledgeBase.open(settings=settings, embedder=FakeEmbedder(), "
        "chunk_tokens=60, chunk_overlap=10)\n"
        "uvicorn.run(create_app(settings=load_settings()), host='127.0.0.1', port=int(sys.argv[1]), log_level='warning')\n"
    )
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-c", code, str(port), str(DRIVER.parent)], env=env, stdout=out, stderr=subprocess.STDOUT
        )


def _wait_ready(url: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        try:
            r = httpx.get(f"{url}/ready", timeout=2)
            if r.status_code == 200:
                return r.json()
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, f"{url} not ready in {timeout}s"
        time.sleep(0.2)


ARTICLE = {
    "id": "almaty",
    "title": "L'UE au Kazakhstan",
    "text": "En novembre 1994, la délégation de l'UE au Kazakhstan a commencé ses travaux à Almaty. "
    "En décembre 1993, le Kazakhstan a ouvert son bureau à Bruxelles.",
    "source": "AFP",
}
QUESTION = {"question": "Quand le bureau de l'UE a-t-il ouvert à Almaty ?", "k": 3}


def test_two_serve_replicas_share_one_index_and_survive_a_database_restart(tmp_path, chroma_server):
    """Two HTTP replicas (separate processes) over one database: a write through one is seen by the other within
    a second; the database restarts: 503s (never a wrong answer) until it is back, then both answer again."""
    with PostgresServer() as postgres:
        env = _env(postgres.new_database(), chroma_server.url, unique_collection(), tmp_path)
        env.pop("QA_TEST_CRASH_AT", None)
        ports = [free_port(), free_port()]
        replicas = [_serve(env, port, tmp_path / f"serve-{port}.log") for port in ports]
        a, b = (f"http://127.0.0.1:{port}" for port in ports)
        try:
            ready = _wait_ready(a)
            assert ready["backends"] == {"database": "ok", "vectors": "ok"}
            _wait_ready(b)
            httpx.post(f"{a}/documents", json=ARTICLE, timeout=30).raise_for_status()
            answer = httpx.post(f"{b}/ask", json=QUESTION, timeout=30).json()  # the next request to B sees it
            assert answer["text"] == "En novembre 1994." and "Almaty" in answer["citations"][0]["quote"]
            info = httpx.get(f"{b}/info", timeout=10).json()
            assert info["articles"] == 1 and info["database"].startswith("postgresql://postgres@127.0.0.1")

            postgres.stop("immediate")
            for url in (a, b):
                r = httpx.post(f"{url}/ask", json=QUESTION, timeout=30)
                assert r.status_code == 503, r.text
                assert r.json()["error"] == "store_unavailable"
                ready = httpx.get(f"{url}/ready", timeout=10)
                assert ready.status_code == 503 and ready.json()["backends"]["database"] != "ok"
            postgres.start()
            for url in (a, b):
                deadline = time.monotonic() + 20
                while (r := httpx.post(f"{url}/ask", json=QUESTION, timeout=30)).status_code == 503:
                    assert time.monotonic() < deadline, r.text
                    time.sleep(0.2)
                assert r.status_code == 200 and r.json()["text"] == "En novembre 1994."
                assert _wait_ready(url)["backends"]["database"] == "ok"
        finally:
            for p in replicas:
                p.terminate()
            for p in replicas:
                p.wait(timeout=30)
    assert os.path.exists(tmp_path / f"serve-{ports[0]}.log")
