"""Retrieval for LangChain users: a ``BaseRetriever`` over ``KnowledgeBase.search``."""

from __future__ import annotations

from typing import Any

from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict

from qa.schema import Passage


def passage_to_document(passage: Passage) -> Document:
    """A LangChain ``Document``: the chunk text, every other field as metadata."""
    meta = passage.to_dict()
    text = meta.pop("text")
    return Document(page_content=text, metadata=meta, id=passage.chunk_id)


class QARetriever(BaseRetriever):
    """Drop ``qa`` into any LangChain chain: ``kb.as_retriever(k=5, source="…")``."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    kb: Any
    """The ``KnowledgeBase`` to search."""
    k: int = 5
    filters: dict[str, Any] = {}
    """Keyword filters passed to ``search`` (``source``, ``date_from``, ``date_to``)."""

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
        return [passage_to_document(p) for p in self.kb.search(query, k=self.k, **self.filters)]
