"""The PostgreSQL backend (``QA_DATABASE_URL`` + ``QA_CHROMA_URL``) with the real parts on loopback: a PostgreSQL
cluster started by the ``postgres_server`` fixture and a ``chroma run`` server.

BM25 in SQL ranks as FTS5 does; a knowledge base over the shared backend ingests, searches, answers, deletes and
checks clean; two knowledge bases (two replicas) see each other's commits; the locks are advisory locks released
when a process dies; a schema from a newer ``qa`` is refused with the fix."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from qa import Filters, KnowledgeBase
from qa.errors import ConfigError, IndexBusyError, StoreError
from qa.index.lexical import LexicalIndex
from qa.index.sqlite import SqliteDatabase

from chroma_server import unique_collection
from helpers import ROOT, FakeEmbedder, driver_env, lexical_row, write_corpus

pytestmark = pytest.mark.server

CORPUS = ROOT / "corpus"
QUESTIONS = [
    "Quand le bureau de l'UE a-t-il ouvert à Almaty ?",
    "Qui est le représentant spécial de l'UE pour l'Asie centrale ?",
    "Quel est le PIB du Kazakhstan en 2021 ?",
]
WORDS = (
    "le président du Kazakhstan a ouvert un bureau à Almaty en novembre 1994 la délégation de l'Union européenne "
    "à Bruxelles économie réforme élection budget ministre accord sommet pétrole gaz steppe Astana Nur-Sultan "
    "coopération commerce 2021 PIB croissance inflation banque centrale tenge monnaie"
).split()


def _rows(n: int, seed: int) -> list:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 60)))
        title = " ".join(rng.choice(WORDS) for _ in range(rng.randint(0, 4)))
        date = f"20{rng.randint(10, 21)}-0{rng.randint(1, 9)}-1{rng.randint(0, 9)}" if rng.random() < 0.8 else ""
        rows.append(lexical_row(f"c{i}", f"d{i // 3}", text, title, rng.choice(["AFP", "Reuters", ""]), date))
    return rows


def _pg_lexical(url: str):
    from qa.index.postgres import open_parts

    return open_parts(url)


def test_postgres_bm25_ranks_as_fts5_does(tmp_path, pg_url):
    """The same rows in FTS5 and in PostgreSQL: the same top 10, the same scores, with filters, after deletes and
    replacements."""
    from qa.index.postgres.lexical import PgLexicalIndex

    rows = _rows(400, seed=1)
    sqlite = SqliteDatabase(tmp_path / "lexical.sqlite3")
    fts = LexicalIndex(sqlite.conn)
    parts = _pg_lexical(pg_url)
    pg = parts.lexical

    def write(action) -> None:
        with sqlite.transaction():
            action(fts)
        with parts.manifest.db.transaction() as conn:
            action(PgLexicalIndex(conn))

    write(lambda index: index.add(rows))
    write(lambda index: index.delete_chunks(["c3", "c4", "missing"]))
    write(lambda index: index.delete_doc("d10"))
    write(lambda index: index.add(_rows(50, seed=2)))  # replaces c0..c49
    assert pg.count() == fts.count()
    rng = random.Random(3)
    filters = [
        Filters(),
        Filters.of(source="AFP"),
        Filters.of(date_from="2015-01-01"),
        Filters.of(date_to="2016-12-31", source=["Reuters", "AFP"]),
        Filters.of(exclude=["d1", "d2", "d3"]),
    ]
    compared = 0
    for _ in range(120):
        query = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 6)))
        for f in filters:
            want = fts.search(query, 10, f)
            got = pg.search(query, 10, f)
            assert [c for c, _ in got] == [c for c, _ in want], (query, f)
            assert [s for _, s in got] == pytest.approx([s for _, s in want], rel=1e-9, abs=1e-9)
            compared += bool(want)
    assert compared > 400
    assert pg.problems() == []
    assert pg.unindexed_chunks() == []
    assert pg.search("", 10) == pg.search("le la les", 10) == []


def test_postgres_lexical_statistics_are_checked_and_rebuilt(pg_url):
    from qa.index.postgres.lexical import PgLexicalIndex

    parts = _pg_lexical(pg_url)
    with parts.manifest.db.transaction() as conn:
        PgLexicalIndex(conn).add(_rows(30, seed=4))
    before = parts.lexical.search("Almaty bureau", 5)
    with parts.manifest.db.transaction() as conn:
        conn.execute("UPDATE lexical_stats SET chunks = chunks + 7")
        conn.execute("UPDATE lexical_terms SET df = df + 1 WHERE term = 'almaty'")
    problems = parts.lexical.problems()
    assert any("statistics say" in p for p in problems) and any("1 terms with a wrong document frequency" in p for p in problems)
    parts.lexical.rebuild()
    assert parts.lexical.problems() == []
    assert parts.lexical.search("Almaty bureau", 5) == before


# -- a knowledge base over the shared backend ------------------------------------------------------------------------
def _open(tmp_path: Path, pg_url: str, chroma_url: str, collection: str, name: str = "kb") -> KnowledgeBase:
    return KnowledgeBase.open(
        tmp_path / name,
        embedder=FakeEmbedder(),
        chroma_url=chroma_url,
        database_url=pg_url,
        collection=collection,
        chunk_tokens=60,
        chunk_overlap=10,
    )


def test_a_knowledge_base_over_postgres_and_a_chroma_server(tmp_path, pg_url, chroma_server):
    """The seed article through the shared backend: ingest (through the queue, worked here), search with filters,
    ask, update, delete, check clean; nothing written under the local index folder."""
    kb = _open(tmp_path, pg_url, chroma_server.url, unique_collection())
    report = kb.ingest(CORPUS)
    assert report.ok and len(report.added) == 1 and report.job is not None and report.queued == 1
    (doc_id,) = report.added
    local = KnowledgeBase.open(tmp_path / "sqlite", embedder=FakeEmbedder(), chunk_tokens=60, chunk_overlap=10)
    local.ingest(CORPUS)
    for question in QUESTIONS:  # the same passages, scores and answers as the single-machine build
        for mode in ("hybrid", "lexical", "dense"):
            got, want = kb.search(question, k=5, mode=mode), local.search(question, k=5, mode=mode)
            # whole passages (text cut from the article in PostgreSQL, metadata, place) as Chroma gives them
            assert [replace(p, score=0) for p in got] == [replace(p, score=0) for p in want], (question, mode)
            assert [p.score for p in got] == pytest.approx([p.score for p in want], abs=1e-5)
        assert kb.ask(question).text == local.ask(question).text
    local.close()
    assert kb.search("Almaty", filters=Filters.of(exclude=[doc_id])) == []
    assert kb.search("Almaty", filters=Filters.of(source="Reuters")) == []
    answer = kb.ask(QUESTIONS[0])
    assert answer.text == "En novembre 1994." and "Almaty" in answer.citations[0].quote
    assert answer.citations[0].quote in answer.citations[0].passage.text
    again = kb.ingest(CORPUS)
    assert again.unchanged == [doc_id] and again.chunks_written == 0
    stats = kb.stats()
    assert stats["articles"] == 1 and stats["chunks"] == kb.index.lexical.count() >= 1
    assert stats["database_url"] == pg_url and "index_dir" not in stats
    assert stats["queue"]["done"] == 2 and stats["queue"]["queued"] == 0
    assert kb.check().ok
    kb.add_articles([_article(doc_id, "Le bureau de l'UE à Almaty a fermé en 2030.")])
    assert "2030" in kb.search("bureau Almaty fermé", k=1)[0].text
    assert kb.check().ok
    kb.delete(doc_id)
    assert kb.search("Almaty", k=3) == [] and kb.manifest.count() == 0
    assert kb.check().ok and kb.store.count() == 0
    kb.close()
    assert not (tmp_path / "kb" / "manifest.sqlite3").exists()


def _article(doc_id: str, text: str):
    from qa.documents import Article

    return Article(id=doc_id, title="UE", text=text, source="AFP")


def test_two_replicas_see_each_others_commits(tmp_path, pg_url, chroma_server):
    collection = unique_collection()
    a = _open(tmp_path, pg_url, chroma_server.url, collection, "a")
    b = _open(tmp_path, pg_url, chroma_server.url, collection, "b")
    assert b.search("Almaty", k=3) == []
    a.add_articles([_article("one", "Le bureau de l'UE à Almaty a ouvert en novembre 1994.")])
    hits = b.search("Almaty", k=3)  # the very next search on the other replica sees the commit (no wait, no poll)
    assert hits and hits[0].doc_id == "one"
    b.add_articles([_article("one", "Le bureau de l'UE à Almaty a déménagé en 2001.")])
    assert [h.text for h in a.search("Almaty bureau", k=3)] == [h.text for h in b.search("Almaty bureau", k=3)]
    assert "2001" in a.search("Almaty bureau", k=1)[0].text
    b.delete("one")
    assert a.search("Almaty", k=3) == []
    assert a.check().ok and b.check().ok
    a.close()
    b.close()


def test_qa_check_finds_and_repairs_a_damaged_postgres_index(tmp_path, pg_url, chroma_server):
    kb = _open(tmp_path, pg_url, chroma_server.url, unique_collection())
    kb.add_articles([_article(f"a{i}", f"Article {i} : le bureau de l'UE à Almaty, phrase {i}.") for i in range(6)])
    assert kb.check().ok
    lost = kb.manifest.get("a2").chunk_ids[0]
    with kb.index.manifest.db.transaction() as conn:
        conn.execute("DELETE FROM lexical_chunks WHERE chunk_id = %s", (lost,))  # its postings go, the statistics stay
    check = kb.check()
    assert not check.ok and check.lexical_missing == [lost] and check.broken_articles == ["a2"]
    assert any("lexical statistics say" in p for p in check.sqlite)
    repaired = kb.repair()
    assert repaired.ok, repaired.problems()
    assert "rebuilt the lexical index" in repaired.repaired[0]
    assert [h.doc_id for h in kb.search("phrase 2", k=1, mode="lexical")] == ["a2"]
    kb.close()


def test_the_database_url_needs_a_chroma_server(tmp_path, pg_url):
    with pytest.raises(ConfigError, match="set QA_CHROMA_URL"):
        KnowledgeBase.open(tmp_path / "kb", embedder=FakeEmbedder(), database_url=pg_url)


def test_a_wrong_database_url_says_what_to_do(tmp_path, chroma_server):
    from chroma_server import free_port

    with pytest.raises(ConfigError, match="is not a PostgreSQL URL"):
        KnowledgeBase.open(tmp_path / "kb", embedder=FakeEmbedder(), chroma_url=chroma_server.url, database_url="mysql://x/y")
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/nowhere"
    with pytest.raises(StoreError, match="cannot reach PostgreSQL at .*start the server or fix QA_DATABASE_URL"):
        KnowledgeBase.open(tmp_path / "kb", embedder=FakeEmbedder(), chroma_url=chroma_server.url, database_url=url)


def test_a_schema_from_a_newer_qa_is_refused(tmp_path, pg_url, chroma_server):
    kb = _open(tmp_path, pg_url, chroma_server.url, unique_collection())
    with kb.index.manifest.db.transaction() as conn:
        conn.execute("UPDATE qa_schema SET version = version + 1")
    kb.close()
    with pytest.raises(ConfigError, match="newer than this qa's .*upgrade qa"):
        _open(tmp_path, pg_url, chroma_server.url, unique_collection())


def test_a_database_of_schema_1_is_upgraded_and_still_shows_its_chunks(tmp_path, pg_url, chroma_server):
    """Schema 2 keeps each chunk's place in its article (search reads the text there, not from Chroma); chunks that
    schema 1 wrote have none and are still shown, read from Chroma."""
    from qa.index.postgres.manifest import SCHEMA_VERSION

    collection = unique_collection()
    kb = _open(tmp_path, pg_url, chroma_server.url, collection)
    kb.add_articles([_article("old", "Le bureau de l'UE à Almaty a ouvert en novembre 1994.")])
    before = kb.search("Almaty bureau", k=3)
    with kb.index.manifest.db.transaction() as conn:  # the database as schema 1 left it
        conn.execute("ALTER TABLE lexical_chunks DROP COLUMN char_start, DROP COLUMN char_end")
        conn.execute("UPDATE qa_schema SET version = 1")
    kb.close()
    kb = _open(tmp_path, pg_url, chroma_server.url, collection)
    with kb.index.manifest.db.read() as conn:
        assert conn.execute("SELECT version FROM qa_schema").fetchone()[0] == SCHEMA_VERSION == 2
    assert kb.search("Almaty bureau", k=3) == before
    kb.add_articles([_article("new", "Le bureau de l'UE à Astana a ouvert en 2019.")])
    old, new = kb.manifest.get("old").chunk_ids, kb.manifest.get("new").chunk_ids
    found, unplaced = kb.index.manifest.passages([*old, *new, "not-a-chunk"])
    assert unplaced == old and sorted(found) == sorted(new)
    assert kb.search("Astana", k=1)[0].text == "Le bureau de l'UE à Astana a ouvert en 2019."
    both = kb.search("Almaty bureau", k=3)
    check = kb.check()
    assert check.ok and check.unplaced == len(old) and "`qa check --repair` records their place" in check.summary()
    seen: list[tuple[int, int]] = []
    repaired = kb.repair(lambda done, total: seen.append((done, total)))
    assert repaired.ok and repaired.unplaced == 0 and seen == [(len(old), len(old))]
    assert repaired.repaired == [f"recorded the place of {len(old)} chunks in their article (written before schema 2)"]
    found, unplaced = kb.index.manifest.passages(old)
    assert unplaced == [] and kb.search("Almaty bureau", k=3) == both  # now read from the database
    kb.close()


def test_the_writer_lock_is_released_when_its_process_dies(tmp_path, pg_url, chroma_server):
    """A process holding the writer lock is SIGKILLed: the server ends its session and the lock with it."""
    collection = unique_collection()
    kb = _open(tmp_path, pg_url, chroma_server.url, collection)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from qa.index.postgres.locking import PgWriterLock\n"
            "lock = PgWriterLock(sys.argv[1])\n"
            "with lock.hold():\n    print('held', flush=True); time.sleep(600)",
            pg_url,
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=driver_env(),
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(IndexBusyError, match=r"another ingest is running on .*\(qa pid \d+ on "):
            kb.writer.ingest([CORPUS], wait=False)
    finally:
        holder.kill()
        holder.wait()
    deadline = time.monotonic() + 10
    while True:
        try:
            report = kb.writer.ingest([CORPUS], wait=False)
            break
        except IndexBusyError:
            assert time.monotonic() < deadline, "the writer lock outlived its process"
            time.sleep(0.2)
    assert len(report.added) == 1
    kb.close()


@pytest.mark.slow
def test_qa_init_db_and_a_queued_ingest_from_the_command_line(tmp_path, pg_url, chroma_server):
    """`qa init-db`, `qa ingest --no-wait` (enqueued only), `qa info` (the queue), `qa worker --until-empty`."""
    corpus = write_corpus(tmp_path / "corpus.jsonl", 12, seed=5)
    env = driver_env(QA_DATABASE_URL=pg_url, QA_CHROMA_URL=chroma_server.url, QA_COLLECTION=unique_collection())
    env["QA_INDEX_DIR"] = str(tmp_path / "index")
    qa = [str(Path(sys.executable).parent / "qa")]

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*qa, *args], capture_output=True, text=True, env=env, timeout=300, check=False)

    done = run("init-db")
    assert done.returncode == 0, done.stderr
    assert "schema created at postgresql://postgres@127.0.0.1" in done.stdout
    assert "up to date" in run("init-db").stdout
    queued = run("ingest", str(corpus), "--no-wait")
    assert queued.returncode == 0, queued.stderr
    assert "enqueued 12 articles as job" in queued.stdout
    info = json.loads(run("info", "--json").stdout)
    assert info["articles"] == 0 and info["queue"]["queued"] == 12
    work = run("worker", "--until-empty")
    assert work.returncode == 0, work.stderr
    assert "12 articles" in work.stdout
    info = json.loads(run("info", "--json").stdout)
    assert info["articles"] == 12 and info["queue"]["done"] == 12 and info["queue"]["queued"] == 0
    check = run("check")
    assert check.returncode == 0 and "OK" in check.stdout
    more = write_corpus(tmp_path / "more.jsonl", 3, seed=6, changed=3)  # new versions of a00000..a00002
    waited = run("ingest", str(more))  # no worker runs: the command works the queue itself
    assert waited.returncode == 0, waited.stderr
    assert "0 added, 3 updated, 0 unchanged" in waited.stdout


# -- the ingest queue ------------------------------------------------------------------------------------------------
def _queued_kb(tmp_path: Path, pg_url: str, chroma_url: str) -> KnowledgeBase:
    return _open(tmp_path, pg_url, chroma_url, unique_collection())


def test_a_worker_whose_lease_was_taken_over_does_not_commit(tmp_path, pg_url, chroma_server):
    """Worker A's lease runs out mid-batch; B claims the article, writes it, then writes a newer version enqueued
    after it. A's late commit is refused: the newer version stays (no older one overwrites it)."""
    from qa.errors import ClaimLostError
    from qa.index.postgres.queue import new_token

    kb = _queued_kb(tmp_path, pg_url, chroma_server.url)
    queue = kb.index.queue
    queue.enqueue([_article("x", "Version une : le bureau ouvre à Almaty.")])
    a = queue.claim(new_token(), limit=8, max_chars=10**6, lease_seconds=0.2)
    assert a is not None
    time.sleep(0.4)  # A's lease runs out while it "embeds"
    stats = kb.work(until_empty=True)  # B: takes the row over, writes it
    assert stats.articles == 1
    queue.enqueue([_article("x", "Version deux : le bureau ferme à Almaty.")])
    assert kb.work(until_empty=True).articles == 1
    with pytest.raises(ClaimLostError, match="another worker took over 1 of its articles"):
        kb.writer.write_claimed(a.articles, a.token)
    assert not queue.complete(a, {"x": "updated"}, 0)
    assert "Version deux" in kb.manifest.get("x").text
    check = kb.check()  # A's chunks reached Chroma before its commit was refused: journaled, not shown
    assert check.orphans == check.pending and len(check.pending) == 1
    assert kb.work(until_empty=True).articles == 0  # an idle worker finishes what A left
    assert kb.check().ok
    kb.close()


def test_a_backend_failure_retries_the_batch_without_counting_an_attempt(tmp_path, pg_url, chroma_server, monkeypatch):
    import httpx

    kb = _queued_kb(tmp_path, pg_url, chroma_server.url)
    kb.index.queue.enqueue([_article(f"n{i}", f"Article {i} sur Almaty.") for i in range(3)])
    upsert, calls = kb.store.upsert, []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) <= 7:  # more failures than MAX_ATTEMPTS: a backend away, not a bad article
            raise httpx.ConnectError("Chroma is restarting")
        return upsert(*args, **kwargs)

    monkeypatch.setattr(kb.store, "upsert", flaky)
    monkeypatch.setattr("qa.index.worker.MAX_BACKOFF", 0.05)
    stats = kb.work(until_empty=True)
    assert stats.articles == 3 and stats.failed_batches == 7
    queue = kb.index.queue.stats()
    assert queue["done"] == 3 and queue["failed"] == 0
    assert kb.manifest.count() == 3 and kb.check().ok
    kb.close()


def test_rows_out_of_attempts_fail_and_the_claim_looks_past_them(tmp_path, pg_url, chroma_server):
    from qa.index.postgres.queue import MAX_ATTEMPTS, new_token

    kb = _queued_kb(tmp_path, pg_url, chroma_server.url)
    queue = kb.index.queue
    job = queue.enqueue([_article(f"r{i}", f"Article {i}.") for i in range(4)])
    with kb.index.manifest.db.transaction() as conn:
        conn.execute("UPDATE ingest_queue SET attempts = %s WHERE doc_id IN ('r0', 'r1')", (MAX_ATTEMPTS,))
    claimed = queue.claim(new_token(), limit=2, max_chars=10**6, lease_seconds=30)
    assert claimed is not None and [a.id for a in claimed.articles] == ["r2", "r3"]
    status = queue.job(job)
    assert [doc for doc, _ in status["failed"]] == ["r0", "r1"] and "claimed 5 times" in status["failed"][0][1]
    kb.close()


def test_a_queued_ingest_shows_progress_batch_by_batch(tmp_path, pg_url, chroma_server, monkeypatch):
    """No worker runs: `ingest` works the queue itself and its progress moves after each batch, not only at the end."""
    monkeypatch.setattr("qa.index.writer.BATCH_ARTICLES", 10)
    corpus = write_corpus(tmp_path / "feed.jsonl", 45, seed=9)
    kb = _queued_kb(tmp_path, pg_url, chroma_server.url)
    seen: list[tuple[int, int]] = []
    report = kb.ingest([corpus], progress=lambda r, inputs: seen.append((len(r.added), inputs)))
    assert len(report.added) == 45 and report.queued == 45
    done = [added for added, _ in seen]
    assert done == sorted(done) and len(set(done)) >= 5 and done[-1] == 45  # 10, 20, 30, 40, 45
    kb.close()
