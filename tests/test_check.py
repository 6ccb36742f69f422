"""`qa check` / `--repair`, `qa ingest --prune`, and what search shows while chunks are in flight."""

from __future__ import annotations

import json

import numpy as np

from qa.cli import main
from qa.index.parts import ChunkPlace
from qa.schema import ArticleMeta

from helpers import write

NEWS = [
    {"id": "n1", "text": "Le port de Marseille a battu un record de trafic en 2021.", "source": "AFP"},
    {"id": "n2", "text": "La récolte de lavande en Provence a été mauvaise cette année.", "source": "Reuters"},
    {"id": "n3", "text": "Le Tour de France partira de Copenhague.", "source": "AFP"},
]


def ingest_news(kb, tmp_path):
    path = write(tmp_path / "n.jsonl", "\n".join(json.dumps(r, ensure_ascii=False) for r in NEWS) + "\n")
    assert kb.ingest([path]).ok
    return path


def stray_chunk(kb, cid="ghost#0-0000000000", doc_id="ghost", text="Copenhague Copenhague fantôme"):
    """A chunk in Chroma that no committed article lists (what a crash before the commit leaves)."""
    vector = kb.embedder.embed_documents([text])
    kb.store.upsert([cid], vector, [text], [ChunkPlace(ArticleMeta(doc_id), 0, 0, len(text))])


def test_a_clean_index_checks_ok(kb, tmp_path):
    ingest_news(kb, tmp_path)
    report = kb.check()
    assert report.ok and report.articles == 3 and report.manifest_chunks == report.chroma_chunks == report.lexical_chunks
    assert report.summary().endswith(": OK")


def test_uncommitted_chunks_are_never_shown_and_check_repairs_them(kb, tmp_path):
    ingest_news(kb, tmp_path)
    stray_chunk(kb)
    for mode in ("dense", "hybrid", "lexical"):
        assert all(p.doc_id != "ghost" for p in kb.search("Copenhague fantôme", k=10, mode=mode))
    report = kb.check()
    assert not report.ok and report.orphans == ["ghost#0-0000000000"]
    assert "1 chunks in Chroma that no article lists: ghost#0-0000000000" in report.problems()
    fixed = kb.repair()
    assert fixed.ok and fixed.repaired == ["deleted 1 orphan chunks from Chroma"] and fixed.chroma_chunks == 3


def test_hybrid_search_looks_past_many_uncommitted_chunks_nearer_than_the_committed_ones(kb, tmp_path):
    """A writer mid-batch can hold more uncommitted chunks near a question than the spare neighbours a search asks for:
    the search asks for more until it has its dense candidates, and shows only committed chunks."""
    from qa.retrieval.retriever import SPARE

    ingest_news(kb, tmp_path)
    want = kb.search("Copenhague", k=3, mode="hybrid")
    for i in range(kb.settings.candidates + SPARE + 5):
        stray_chunk(kb, f"ghost#{i}-0000000000", "ghost", "Copenhague " * (i % 3 + 1))
    got = kb.search("Copenhague", k=3, mode="hybrid")
    assert [(p.chunk_id, p.score) for p in got] == [(p.chunk_id, p.score) for p in want]
    assert all(p.doc_id != "ghost" for p in kb.search("Copenhague", k=10, mode="dense"))


def test_repair_reindexes_articles_whose_chunks_are_missing(kb, tmp_path):
    ingest_news(kb, tmp_path)
    [lost] = kb.article("n3").chunk_ids
    kb.store.delete([lost])  # Chroma lost a chunk
    [lex] = kb.article("n1").chunk_ids
    kb.index.lexical.drop_rows([lex])  # and the lexical index another
    report = kb.check()
    assert report.missing == [lost] and report.lexical_missing == [lex] and report.broken_articles == ["n1", "n3"]
    fixed = kb.repair()
    assert fixed.ok and "re-indexed 2 articles" in fixed.repaired[-1]
    assert kb.search("Copenhague", k=1, mode="dense")[0].chunk_id == lost
    assert kb.search("Marseille record", k=1, mode="lexical")[0].chunk_id == lex


def test_an_interrupted_delete_is_finished_by_repair(kb, tmp_path):
    ingest_news(kb, tmp_path)
    chunk_ids = kb.manifest.delete("n2")  # the manifest committed, then the process died before Chroma
    assert all(p.doc_id != "n2" for p in kb.search("lavande Provence", k=5, mode="dense"))
    report = kb.check()
    assert report.pending == chunk_ids and report.orphans == chunk_ids
    assert kb.repair().ok and kb.stats()["chunks"] == 2


def test_cli_check_and_repair_exit_codes(tmp_path, use_fake_embedder, capsys):
    from qa import KnowledgeBase

    main(["ingest", "-q", str(write(tmp_path / "a.txt", "Un article sur Almaty."))])
    assert main(["check"]) == 0
    assert "1 articles, 1 chunks in the manifest, 1 in Chroma, 1 in the lexical index: OK" in capsys.readouterr().out
    with KnowledgeBase.open(embedder=use_fake_embedder) as kb:
        stray_chunk(kb)
    assert main(["check"]) == 1
    out = capsys.readouterr().out
    assert "PROBLEMS FOUND" in out and "qa check --repair" in out
    assert main(["check", "--repair"]) == 0
    assert "repaired: deleted 1 orphan chunks" in capsys.readouterr().out
    assert main(["check", "--json"]) == 0 and json.loads(capsys.readouterr().out)["ok"] is True


def test_prune_lists_first_then_removes_articles_whose_files_are_gone(tmp_path, use_fake_embedder, capsys):
    folder = tmp_path / "corpus"
    write(folder / "a.txt", "Premier article, sur Almaty.")
    gone = write(folder / "sub" / "b.txt", "Second article, sur Bruxelles.")
    write(tmp_path / "elsewhere.txt", "Un article hors du dossier.")
    main(["ingest", "-q", str(folder), str(tmp_path / "elsewhere.txt")])
    capsys.readouterr()
    gone.unlink()
    assert main(["ingest", "-q", "--prune", "--dry-run", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "would prune" in out and "sub/b.txt" in out and "1 articles would be pruned (dry run" in out
    main(["info", "--json"])
    assert json.loads(capsys.readouterr().out)["articles"] == 3  # nothing changed
    assert main(["ingest", "-q", "--prune", str(folder)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("0 added, 0 updated, 1 unchanged, 0 skipped, 0 errors, 1 pruned") and "  pruned  " in out
    main(["info", "--json"])
    assert json.loads(capsys.readouterr().out)["articles"] == 2  # the file outside the folder stays
    assert main(["check"]) == 0


def test_an_update_is_atomic_for_readers(kb, tmp_path, monkeypatch):
    """Between the Chroma write and the manifest commit both versions are in Chroma, but
    search shows only the committed one; after the commit, only the new one."""
    import qa.index.writer

    ingest_news(kb, tmp_path)
    old_ids = kb.article("n1").chunk_ids
    from qa.documents import Article

    new = Article(id="n1", text="Le port de Marseille accueille des croisières géantes.", source="AFP")
    calls = []

    def spy(name):  # after the Chroma write, before the commit (and its lock): the new chunks are there, invisible
        if name == "chunks":
            hits = kb.search("port de Marseille croisières record", k=10, mode="dense")
            calls.append(({p.chunk_id for p in hits if p.doc_id == "n1"}, kb.store.count()))

    monkeypatch.setattr(qa.index.writer, "_crash_point", spy)
    kb.add_articles([new])
    assert calls == [(set(old_ids), 4)]  # both versions of n1 in Chroma, the old one shown
    assert {p.chunk_id for p in kb.search("port de Marseille croisières", k=10) if p.doc_id == "n1"} == set(
        kb.article("n1").chunk_ids
    )
    assert kb.check().ok and np.isin(old_ids, list(kb.store.all_ids())).sum() == 0


def test_an_interrupted_rebuild_leaves_no_orphans(kb, tmp_path):
    path = ingest_news(kb, tmp_path)
    kb.manifest.clear()  # rebuild died after forgetting the manifest, before dropping Chroma
    assert all(p.doc_id not in {"n1", "n2", "n3"} for p in kb.search("Marseille lavande Copenhague", k=5, mode="dense"))
    assert kb.ingest([path]).added == ["n1", "n2", "n3"]
    assert kb.check().ok and kb.stats()["chunks"] == 3


def test_prune_keeps_files_with_odd_names(tmp_path, use_fake_embedder, capsys):
    import os

    folder = tmp_path / "corpus"
    folder.mkdir()
    (folder / os.fsdecode(b"caf\xe9 \nnote.txt")).write_bytes(b"Un caf\xc3\xa9 \xc3\xa0 Almaty.")
    main(["ingest", "-q", str(folder)])
    capsys.readouterr()
    assert main(["ingest", "-q", "--prune", str(folder)]) == 0
    assert capsys.readouterr().out.startswith("0 added, 0 updated, 1 unchanged, 0 skipped, 0 errors;")
