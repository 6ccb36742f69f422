import json

import pytest
from langchain_core.documents import Document

from qa import IndexMismatchError, KnowledgeBase, NotFoundError, QueryError

from helpers import SEED, FakeEmbedder, write

ALMATY = "En novembre 1994, la délégation de l’UE au Kazakhstan a commencé ses travaux à Almaty."


def jsonl(path, records):
    return write(path, "\n".join(json.dumps(r, ensure_ascii=False) for r in records) + "\n")


NEWS = [
    {
        "id": "n1",
        "text": "Le port de Marseille a battu un record de trafic en 2021.",
        "date": "2022-01-10",
        "source": "AFP",
        "title": "Marseille",
    },
    {
        "id": "n2",
        "text": "La récolte de lavande en Provence a été mauvaise cette année.",
        "date": "2021-07-02",
        "source": "Reuters",
    },
    {"id": "n3", "text": "Le Tour de France partira de Copenhague.", "source": "AFP"},
]


def test_ingest_then_search_finds_the_almaty_chunk(kb):
    report = kb.ingest([SEED])
    assert len(report.added) == 1 and report.chunks_written >= 2 and report.ok
    [hit] = kb.search("délégation UE Almaty novembre 1994", k=1)
    assert ALMATY in hit.text
    article = kb.article(hit.doc_id)
    assert article.text[hit.start : hit.end] == hit.text
    assert hit.title == "ue-kazakhstan" and 0 < hit.score <= 1


def test_reingest_writes_nothing_and_reembeds_nothing(kb, fake_embedder):
    kb.ingest([SEED])
    embedded = fake_embedder.embedded
    report = kb.ingest([SEED])
    assert (report.added, report.updated, len(report.unchanged)) == ([], [], 1)
    assert report.chunks_written == 0 and fake_embedder.embedded == embedded


def test_changed_article_replaces_its_chunks(kb, tmp_path):
    path = jsonl(tmp_path / "n.jsonl", NEWS)
    kb.ingest([path])
    before = kb.stats()["chunks"]
    changed = [dict(NEWS[0], text="Le port de Marseille a perdu du trafic en 2021 à cause des grèves."), *NEWS[1:]]
    report = kb.ingest([jsonl(path, changed)])
    assert report.updated == ["n1"] and sorted(report.unchanged) == ["n2", "n3"]
    assert kb.stats()["chunks"] == before
    texts = [p.text for p in kb.search("port de Marseille trafic", k=10)]
    assert any("grèves" in t for t in texts) and not any("record" in t for t in texts)


def test_edited_plain_file_replaces_the_old_version(kb, tmp_path):
    path = write(tmp_path / "a.txt", "Première version de l'article sur Almaty.")
    kb.ingest([path])
    path.write_text("Seconde version de l'article sur Almaty, corrigée.", encoding="utf-8")
    report = kb.ingest([path])
    assert len(report.updated) == 1 and not report.added
    assert kb.stats()["articles"] == 1
    assert all("Première" not in p.text for p in kb.search("version article Almaty", k=10))


def test_delete_removes_an_article_and_unknown_ids_are_clear_errors(kb, tmp_path):
    kb.ingest([jsonl(tmp_path / "n.jsonl", NEWS)])
    kb.delete("n1")
    assert kb.stats()["articles"] == 2
    assert all(p.doc_id != "n1" for p in kb.search("Marseille port record", k=10))
    with pytest.raises(NotFoundError, match="no article with id 'n1'"):
        kb.delete("n1")


def test_filters_by_source_and_date_range(kb, tmp_path):
    kb.ingest([jsonl(tmp_path / "n.jsonl", NEWS)])
    assert {p.doc_id for p in kb.search("record trafic lavande Tour", k=10, source="AFP")} == {"n1", "n3"}
    assert {p.doc_id for p in kb.search("record trafic lavande Tour", k=10, source=["Reuters"])} == {"n2"}
    assert {p.doc_id for p in kb.search("record", k=10, date_from="2022-01-01")} == {"n1"}
    assert {p.doc_id for p in kb.search("record", k=10, date_to="2021-12-31")} == {"n2"}
    assert {p.doc_id for p in kb.search("record", k=10, date_from="2021-01-01", date_to="2022-12-31", source="AFP")} == {"n1"}
    with pytest.raises(QueryError, match="date_from='hier'.*YYYY-MM-DD"):
        kb.search("record", date_from="hier")


def test_search_and_ask_take_one_filters_value(kb, tmp_path):
    from qa import Filters

    kb.ingest([jsonl(tmp_path / "n.jsonl", NEWS)])
    afp = Filters.of(source="AFP", date_from="2022-01-01")
    assert {p.doc_id for p in kb.search("record trafic lavande Tour", k=10, filters=afp)} == {"n1"}
    assert {p.doc_id for p in kb.ask("record trafic lavande Tour", filters=afp).passages} == {"n1"}
    assert {p.doc_id for p in kb.ask("record trafic lavande Tour", source="Reuters").passages} == {"n2"}
    for call in (kb.search, kb.ask):
        with pytest.raises(QueryError, match="filters given twice"):
            call("record", filters=afp, source="Reuters")
    with pytest.raises(QueryError, match="not a Filters value.*Filters.of"):
        kb.search("record", filters={"source": "AFP"})


def test_bad_questions_and_k_are_clear_errors(kb):
    kb.ingest([SEED])
    with pytest.raises(QueryError, match="empty"):
        kb.search("   ")
    for k in (0, 10_000, "5"):
        with pytest.raises(QueryError, match="out of range"):
            kb.search("Almaty", k=k)


def test_search_on_an_empty_index_returns_nothing(kb):
    assert kb.search("Almaty") == []


def test_bad_inputs_are_reported_and_good_ones_still_ingested(kb, tmp_path):
    write(tmp_path / "in" / "good.txt", "Un bon article sur Almaty.")
    write(tmp_path / "in" / "empty.txt", "")
    write(tmp_path / "in" / "bad.jsonl", '{"id": "x"}\n{"id": "y", "text": "Bon."}\n')
    write(tmp_path / "in" / "notes.csv", "a,b")
    report = kb.ingest([tmp_path / "in"])
    assert sorted(report.added) == sorted([kb.search("Almaty", k=1)[0].doc_id, "y"])
    assert {(e.path.split("/")[-1], e.line) for e in report.errors} == {("empty.txt", None), ("bad.jsonl", 1)}
    assert [s.path.split("/")[-1] for s in report.skipped] == ["notes.csv"]
    assert not report.ok and "2 added" in report.summary() and "2 errors" in report.summary()


def test_index_records_its_model_and_refuses_another(tmp_path, fake_embedder):
    with KnowledgeBase.open(tmp_path / "idx", embedder=fake_embedder) as kb:
        kb.ingest([SEED])
        assert kb.stats()["model"] == fake_embedder.model_id and kb.stats()["dimension"] == 256

    class OtherModel(FakeEmbedder):
        model_id = "someone/else"

    with pytest.raises(IndexMismatchError, match="built with embedding model 'fake/hashed-bag-of-words'.*QA_EMBEDDING_MODEL"):
        KnowledgeBase.open(tmp_path / "idx", embedder=OtherModel())


def test_chunking_change_is_refused_at_ingest(tmp_path, fake_embedder):
    with KnowledgeBase.open(tmp_path / "idx", embedder=fake_embedder, chunk_tokens=60, chunk_overlap=10) as kb:
        kb.ingest([SEED])
    with KnowledgeBase.open(tmp_path / "idx", embedder=fake_embedder, chunk_tokens=100, chunk_overlap=10) as kb:
        assert kb.search("Almaty", k=1)  # searching is fine
        with pytest.raises(IndexMismatchError, match="chunk_tokens=60.*--rebuild"):
            kb.ingest([write(tmp_path / "new.txt", "Un nouvel article.")])
        kb.rebuild()
        assert kb.ingest([SEED]).added and kb.stats()["chunk_tokens"] == 100


def test_stats_and_index_persist_across_opens(tmp_path, fake_embedder):
    with KnowledgeBase.open(tmp_path / "idx", embedder=fake_embedder) as kb:
        kb.ingest([SEED, jsonl(tmp_path / "n.jsonl", NEWS)])
    with KnowledgeBase.open(tmp_path / "idx", embedder=fake_embedder) as kb:
        stats = kb.stats()
        assert stats["articles"] == 4 and stats["chunks"] >= 4
        assert stats["sources"] == ["AFP", "Reuters"] and stats["last_ingest"]


def test_settings_come_from_the_environment(tmp_path, monkeypatch, fake_embedder):
    monkeypatch.setenv("QA_INDEX_DIR", str(tmp_path / "from-env"))
    with KnowledgeBase.open(embedder=fake_embedder) as kb:
        kb.ingest([SEED])
    assert (tmp_path / "from-env" / "manifest.sqlite3").exists()


def test_langchain_retriever_returns_documents_with_citations_metadata(kb):
    kb.ingest([SEED])
    docs = kb.as_retriever(k=2).invoke("délégation UE Almaty novembre 1994")
    assert len(docs) == 2 and all(isinstance(d, Document) for d in docs)
    assert ALMATY in docs[0].page_content
    assert {"doc_id", "chunk_id", "title", "start", "end", "score"} <= set(docs[0].metadata)


def test_lexical_index_follows_ingest_update_and_delete(kb, tmp_path):
    path = jsonl(tmp_path / "n.jsonl", NEWS)
    kb.ingest([path])
    lex = kb.index.lexical.index  # the FTS5 index under the lexical part
    assert lex.doc_ids() == {"n1", "n2", "n3"} and lex.count() == kb.stats()["chunks"]
    [hit] = kb.search("Copenhague", k=1, mode="lexical")
    assert hit.doc_id == "n3" and hit.score > 0
    kb.ingest([jsonl(path, [dict(NEWS[0], text="Le port de Marseille accueille des croisières."), *NEWS[1:]])])
    assert kb.search("record", k=5, mode="lexical") == []
    assert kb.search("croisières", k=1, mode="lexical")[0].doc_id == "n1"
    kb.delete("n3")
    assert lex.doc_ids() == {"n1", "n2"} and kb.search("Copenhague", k=5, mode="lexical") == []
    kb.rebuild()
    assert lex.count() == 0 and kb.stats()["articles"] == 0


def test_hybrid_fuses_both_rankings_and_respects_filters(kb, tmp_path):
    kb.ingest([SEED, jsonl(tmp_path / "n.jsonl", NEWS)])
    hits = kb.search("délégation UE Almaty novembre 1994", k=3)
    assert ALMATY in hits[0].text and hits[0].score <= 1.0
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert {h.doc_id for h in kb.search("port record lavande Tour", k=10, source="Reuters")} == {"n2"}
    assert {h.doc_id for h in kb.search("port record lavande Tour", k=10, mode="lexical", date_from="2022-01-01")} == {"n1"}
    with pytest.raises(QueryError, match="retrieval mode 'fuzzy'"):
        kb.search("Almaty", mode="fuzzy")


def test_both_fusions_rank_the_passage_both_retrievers_agree_on_first(kb, tmp_path):
    kb.ingest([SEED, jsonl(tmp_path / "n.jsonl", NEWS)])
    question = "délégation UE Almaty novembre 1994"
    dense, lexical = kb.search(question, k=10, mode="dense"), kb.search(question, k=10, mode="lexical")
    assert dense[0].chunk_id == lexical[0].chunk_id
    for fusion in ("score", "rrf"):
        kb.settings = kb.settings.replace(fusion=fusion)
        hits = kb.search(question, k=10)
        assert hits[0].chunk_id == dense[0].chunk_id and hits[0].score == 1.0, fusion
        assert {h.chunk_id for h in hits} <= {p.chunk_id for p in dense + lexical}
        assert all(0.0 <= h.score <= 1.0 for h in hits)


def test_exclude_leaves_articles_out_of_both_rankings(kb, tmp_path):
    kb.ingest([jsonl(tmp_path / "n.jsonl", NEWS)])
    for mode in ("dense", "lexical", "hybrid"):
        assert "n1" not in {p.doc_id for p in kb.search("Marseille port record", k=10, mode=mode, exclude=["n1"])}
        assert {p.doc_id for p in kb.search("Marseille lavande Copenhague", k=10, mode=mode, exclude=["n1", "n2"])} == {"n3"}


def test_rerank_promotes_the_passage_that_answers_what_is_asked():
    from qa import Passage
    from qa.answering.answerers import sentence_scores
    from qa.retrieval.retriever import rerank_passages

    generic = Passage("a", "a#0", "Le bureau de l'UE est un sujet de débat depuis longtemps à Bruxelles.", score=1.0)
    answer = Passage("b", "b#0", "La délégation de l'UE a ouvert son bureau à Almaty en novembre 1994.", score=0.8)
    ranked = rerank_passages("Quand le bureau de l'UE a-t-il ouvert à Almaty ?", [generic, answer], 0.5, sentence_scores)
    assert [p.doc_id for p in ranked] == ["b", "a"] and 0 < ranked[1].score < ranked[0].score <= 1
    assert [p.doc_id for p in rerank_passages("Quand ?", [generic, answer], 0.0, sentence_scores)] == ["a", "b"]


def test_the_same_file_named_two_ways_is_one_article(kb, tmp_path, monkeypatch):
    path = write(tmp_path / "docs" / "a.txt", "Première version.")
    monkeypatch.chdir(tmp_path)
    kb.ingest(["docs/a.txt"])
    path.write_text("Seconde version.", encoding="utf-8")
    report = kb.ingest([str(path)])
    assert len(report.updated) == 1 and kb.stats()["articles"] == 1


def test_a_write_holds_the_commit_lock_only_around_its_commit(kb, tmp_path, fake_embedder):
    """A reader pinning the committed state (the commit lock, shared) holds a delete back until it lets
    go, but not an ingest's embedding: the writer takes the lock exclusively only to commit."""
    import threading

    from qa import Article

    kb.ingest([jsonl(tmp_path / "n.jsonl", NEWS)])
    errors: list[BaseException] = []

    def start(fn):
        def target():
            try:
                fn()
            except BaseException as exc:  # reported by the assertion below
                errors.append(exc)

        thread = threading.Thread(target=target, daemon=True)
        thread.start()
        return thread

    with kb.index.commit_lock.shared():  # from this thread; FileLock holds exclude each other across threads
        deleting = start(lambda: kb.delete("n3"))
        deleting.join(0.5)
        assert deleting.is_alive() and kb.article("n3")  # waiting to commit: nothing moved
    deleting.join(10)
    assert not deleting.is_alive() and not errors
    with pytest.raises(NotFoundError):
        kb.article("n3")

    embedded, committing = threading.Event(), threading.Event()
    embed, put_many = fake_embedder.embed_documents, kb.manifest.put_many
    fake_embedder.embed_documents = lambda texts: (embedded.set(), embed(texts))[1]
    kb.manifest.put_many = lambda *a, **k: (committing.set(), put_many(*a, **k))[1]
    with kb.index.commit_lock.shared():
        adding = start(lambda: kb.add_articles([Article(id="n4", text="Le sommet de Bruxelles a fini tard.")]))
        assert embedded.wait(10)  # embedded (and written to Chroma) while the reader holds the lock
        adding.join(0.5)
        assert adding.is_alive() and not committing.is_set()
    adding.join(10)
    assert not adding.is_alive() and not errors and committing.is_set()
    assert kb.article("n4").chunk_ids and kb.check().ok


def test_each_write_takes_the_writer_lock_once(kb, tmp_path, monkeypatch):
    holds = []
    hold = kb.index.writer_lock.hold

    def counted(*args, **kwargs):
        holds.append(kb.index.writer_lock.held)  # False: taken from outside, not re-entered
        return hold(*args, **kwargs)

    monkeypatch.setattr(kb.index.writer_lock, "hold", counted)
    kb.ingest([jsonl(tmp_path / "n.jsonl", NEWS)], prune=True)
    kb.delete("n3")
    kb.add_articles([])
    kb.prune([tmp_path])
    kb.rebuild()
    assert holds == [False] * 5


def test_article_records_and_articles_convert_in_one_place(tmp_path):
    from qa import Article
    from qa.index.manifest import ArticleRecord

    article = Article(id="a", text="Texte.", title="T", date="2024-01-02", url="http://x", source="AFP", path="/c/a.txt")
    record = ArticleRecord.from_article(article, ["a#0-1"])
    assert (record.doc_id, record.content_hash, record.chunk_ids, record.path) == (
        "a",
        article.content_hash,
        ["a#0-1"],
        "/c/a.txt",
    )
    assert record.to_article() == article


def test_lexical_part_integrity_methods(kb, tmp_path):
    kb.ingest([jsonl(tmp_path / "n.jsonl", NEWS)])
    lexical = kb.index.lexical
    rows = lexical.rows()
    assert rows == kb.manifest.chunk_map() and set(rows.values()) == {"n1", "n2", "n3"}
    assert kb.manifest.problems() == [] and lexical.problems() == [] and lexical.unindexed_chunks() == []
    [lost] = kb.article("n2").chunk_ids
    lexical.drop_rows([lost])
    assert lost not in lexical.rows() and kb.check().lexical_missing == [lost]
    lexical.rebuild()
    assert lexical.problems() == []
