"""``qa`` as a LangChain retriever: ``kb.as_retriever(k=5, source="…")`` drops it into any chain.

Per call, ``retriever.invoke(question, k=1, source="…", date_from="…", mode="lexical")`` overrides
the defaults it was built with (as LangChain's standard retriever tests expect); ``ainvoke``
runs the same search in a worker thread, so an event loop never waits on it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForRetrieverRun, CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict

from qa.retrieval.filters import FILTER_NAMES, NO_FILTERS, Filters
from qa.schema import Passage

Search = Callable[[str, int, Filters, str | None], list[Passage]]
"""``(question, k, filters, mode)`` → passages, best first."""


def passage_to_document(passage: Passage) -> Document:
    """A LangChain ``Document``: the chunk text, every other field as metadata."""
    meta = passage.to_dict()
    text = meta.pop("text")
    return Document(page_content=text, metadata=meta, id=passage.chunk_id)


class QARetriever(BaseRetriever):
    """A LangChain ``BaseRetriever`` over a search callable (``KnowledgeBase.as_retriever`` builds one)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    search: Search
    """The search to run: ``(question, k, filters, mode) → passages``."""
    k: int = 5
    filters: Filters = NO_FILTERS
    mode: str | None = None
    """``hybrid``, ``rerank``, ``dense`` or ``lexical``; ``None``: the index's setting (``QA_RETRIEVAL``)."""

    def _call_args(self, overrides: dict[str, Any]) -> tuple[int, Filters, str | None]:
        k = overrides.pop("k", None)
        k = self.k if k is None else k
        mode = overrides.pop("mode", None) or self.mode
        given = {name: overrides.pop(name) for name in FILTER_NAMES if name in overrides}
        overrides.pop("verbose", None)  # LangChain's own flag, passed through invoke's kwargs
        if overrides:
            raise TypeError(f"unknown argument {sorted(overrides)[0]!r}: use k, mode or {', '.join(FILTER_NAMES)}")
        filters = Filters.of(**{**self.filters.as_kwargs(), **given}) if given else self.filters
        return k, filters, mode

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun, **kwargs: Any
    ) -> list[Document]:
        k, filters, mode = self._call_args(kwargs)
        return [passage_to_document(p) for p in self.search(query, k, filters, mode)]

    async def _aget_relevant_documents(
        self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun, **kwargs: Any
    ) -> list[Document]:
        k, filters, mode = self._call_args(kwargs)
        passages = await asyncio.to_thread(self.search, query, k, filters, mode)
        return [passage_to_document(p) for p in passages]
