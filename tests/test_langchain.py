"""``kb.as_retriever()`` is a LangChain retriever: LangChain's own standard retriever tests, plus per-call
``k`` and filters (``retriever.invoke(question, k=1, source=…)``) and ``ainvoke``."""

from __future__ import annotations

import asyncio
import tempfile
from functools import cache
from pathlib import Path

import pytest
from langchain_core.documents import Document
from langchain_tests.integration_tests import RetrieversIntegrationTests

from qa import KnowledgeBase, QueryError
from qa.retrieval.langchain import QARetriever

from helpers import SEED, FakeEmbedder

QUESTION = "Quand le bureau de l'UE a-t-il ouvert à Almaty ?"


@cache
def _kb() -> KnowledgeBase:
    """An index of the seed article (several chunks) and two short articles from another source."""
    folder = Path(tempfile.mkdtemp(prefix="qa-langchain-"))
    (folder / "autre.jsonl").write_text(
        '{"id": "x1", "text": "Le bureau de Bruxelles a ouvert en 1993.", "source": "Autre", "date": "2001-05-02"}\n'
        '{"id": "x2", "text": "Almaty est la plus grande ville du Kazakhstan.", "source": "Autre", "date": "2003-01-09"}\n',
        encoding="utf-8",
    )
    kb = KnowledgeBase.open(folder / "index", embedder=FakeEmbedder(), chunk_tokens=60, chunk_overlap=10)
    kb.ingest([SEED, folder / "autre.jsonl"])
    return kb


class TestStandardRetriever(RetrieversIntegrationTests):
    @property
    def retriever_constructor(self) -> type[QARetriever]:
        return QARetriever

    @property
    def retriever_constructor_params(self) -> dict:
        return {"search": _kb().retriever.search}

    @property
    def retriever_query_example(self) -> str:
        return QUESTION


def test_invoke_honours_k_and_filters_per_call():
    retriever = _kb().as_retriever(k=3)
    assert len(retriever.invoke(QUESTION)) == 3
    assert len(retriever.invoke(QUESTION, k=1)) == 1
    docs = retriever.invoke(QUESTION, k=5, source="Autre")
    assert docs and {d.metadata["source"] for d in docs} == {"Autre"}
    dated = retriever.invoke(QUESTION, date_from="2002-01-01", k=5)
    assert [d.metadata["doc_id"] for d in dated] == ["x2"]
    excluded = retriever.invoke(QUESTION, k=10, exclude=["x1", "x2"])
    assert excluded and all(d.metadata["source"] != "Autre" for d in excluded)
    lexical = retriever.invoke("Bruxelles 1993", k=1, mode="lexical")
    assert lexical[0].metadata["doc_id"] == "x1"
    # the retriever's own defaults are untouched by a call's overrides
    assert len(retriever.invoke(QUESTION)) == 3


def test_retriever_built_with_filters_keeps_them_and_a_call_adds_to_them():
    retriever = _kb().as_retriever(k=5, source="Autre")
    assert {d.metadata["source"] for d in retriever.invoke(QUESTION)} == {"Autre"}
    assert [d.metadata["doc_id"] for d in retriever.invoke(QUESTION, date_to="2002-01-01")] == ["x1"]


def test_ainvoke_gives_the_same_documents():
    retriever = _kb().as_retriever(k=2)
    docs = asyncio.run(retriever.ainvoke(QUESTION, k=1))
    assert len(docs) == 1 and isinstance(docs[0], Document)
    assert docs[0].page_content == retriever.invoke(QUESTION, k=1)[0].page_content


def test_bad_arguments_are_clear_errors():
    retriever = _kb().as_retriever()
    with pytest.raises(QueryError, match="date_from='hier' is not a date"):
        retriever.invoke(QUESTION, date_from="hier")
    with pytest.raises(QueryError, match="k=0 is out of range"):
        retriever.invoke(QUESTION, k=0)
    with pytest.raises(TypeError, match="unknown argument 'colour'"):
        retriever.invoke(QUESTION, colour="blue")
    with pytest.raises(QueryError, match="unknown filter 'colour'"):
        _kb().as_retriever(colour="blue")
