"""The embedded index read through Chroma's engine alone (qa.index.engine): the same answers as the chromadb client,
the full client swapped in before the first write, the full client when the engine does not answer."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from qa.index.engine import EngineClient, open_engine_client
from qa.index.store import make_client

from helpers import ROOT, write

ARTICLES = {
    "almaty.txt": "En novembre 1994, la délégation de l'UE au Kazakhstan a commencé ses travaux à Almaty.",
    "bruxelles.txt": "En décembre 1993, le Kazakhstan a ouvert son bureau à Bruxelles.",
    "astana.txt": "La ville d'Astana a inauguré un musée du textile le 12 mars 2022.",
}


@pytest.fixture
def indexed(tmp_path, kb):
    for name, text in ARTICLES.items():
        write(tmp_path / "corpus" / name, text)
    kb.ingest([tmp_path / "corpus"])
    return tmp_path / "index"


def test_the_engine_answers_as_the_chromadb_client(indexed, kb):
    engine = open_engine_client(indexed / "chroma")
    assert isinstance(engine, EngineClient)
    full = make_client(indexed)
    name = kb.settings.collection
    mine, theirs = engine.get_collection(name), full.get_collection(name, embedding_function=None)
    assert mine.metadata == theirs.metadata and mine.metadata["embedding_model"] == kb.embedder.model_id
    assert mine.count() == theirs.count() == 3
    vector = np.asarray(kb.embedder.embed_query("Quand le bureau de l'UE a-t-il ouvert à Almaty ?"), dtype=np.float32)
    include = ["documents", "metadatas", "distances"]
    for where in (None, {"doc_id": {"$in": [kb.manifest.page(0, 3)[0].doc_id]}}):
        a = mine.query(query_embeddings=[vector], n_results=3, where=where, include=include)
        b = theirs.query(query_embeddings=[vector], n_results=3, where=where, include=include)
        assert a["ids"] == b["ids"] and a["documents"] == b["documents"] and a["metadatas"] == b["metadatas"]
        assert np.allclose(a["distances"], b["distances"])
    ids = a["ids"][0]
    got, expected = mine.get(ids=ids, include=["documents", "metadatas"]), theirs.get(ids=ids, include=["documents", "metadatas"])
    assert got["ids"] == expected["ids"] and got["documents"] == expected["documents"]
    assert (
        mine.get(limit=2, offset=1, include=["metadatas"])["ids"] == theirs.get(limit=2, offset=1, include=["metadatas"])["ids"]
    )
    assert engine.get_max_batch_size() == full.get_max_batch_size()
    with pytest.raises(Exception):  # a missing collection raises, as chromadb's does
        engine.get_collection("no-such-collection")
    engine.close()
    with pytest.raises(RuntimeError, match="closed"):
        mine.count()


def test_a_knowledge_base_reads_through_the_engine_and_writes_through_the_full_client(tmp_path, fake_embedder):
    from qa import KnowledgeBase

    write(tmp_path / "corpus" / "almaty.txt", ARTICLES["almaty.txt"])
    with KnowledgeBase.open(tmp_path / "index", embedder=fake_embedder) as first:
        assert isinstance(first.store.client, EngineClient)  # opened for reading
        first.ingest([tmp_path / "corpus"])
        assert not isinstance(first.store.client, EngineClient)  # the first write swapped the full client in
        assert first.search("Almaty")[0].text.startswith("En novembre 1994")
    with KnowledgeBase.open(tmp_path / "index", embedder=fake_embedder) as reader:
        hits = reader.search("Quand le bureau de l'UE a-t-il ouvert à Almaty ?")
        assert isinstance(reader.store.client, EngineClient)  # a question never needs the full client
        assert hits and "Almaty" in hits[0].text
        write(tmp_path / "corpus" / "bruxelles.txt", ARTICLES["bruxelles.txt"])
        reader.ingest([tmp_path / "corpus"])
        assert any("Bruxelles" in p.text for p in reader.search("Kazakhstan bureau Bruxelles", k=2))
        reader.delete(reader.search("Almaty", k=1)[0].doc_id)
        assert not any("Almaty" in p.text for p in reader.search("Almaty", k=5))


def test_an_engine_that_does_not_answer_leaves_the_full_client(tmp_path, monkeypatch):
    import types

    import qa.index.engine

    with monkeypatch.context() as m:  # a chromadb whose engine has another shape
        m.setitem(sys.modules, "chromadb_rust_bindings", types.ModuleType("chromadb_rust_bindings"))
        assert open_engine_client(tmp_path / "chroma") is None
    monkeypatch.setattr(qa.index.engine, "open_engine_client", lambda path: None)
    client = make_client(tmp_path, engine=True)
    assert not isinstance(client, EngineClient) and client.heartbeat()


def test_a_cold_question_does_not_import_the_chromadb_client(tmp_path, indexed):
    code = (
        "import sys; from qa.index import Index; from pathlib import Path; "
        f"index = Index.open(Path({str(indexed)!r}), 'qa_chunks'); "
        "assert index.store.count() == 3, index.store.count(); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'chromadb'))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"
