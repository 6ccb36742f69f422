"""What an answerer is, for the chain and the faces to type against (no implementation here).

* :class:`Answerer`: ``name`` and ``answer(question, passages) -> Answer`` — the extractive answerer
  (:class:`qa.answering.extractive.ExtractiveAnswerer`) is one.
* :class:`ConversationalAnswerer`: an answerer that also reads the conversation — ``answer(question, passages,
  history)``, ``stream(question, passages, history)`` (text chunks, then the final :class:`~qa.schema.Answer`) and
  ``rewrite_followup(question, history)`` (a standalone question) — as :class:`qa.answering.llm.LLMAnswerer` does.

Both are ``runtime_checkable``: ``isinstance(answerer, ConversationalAnswerer)`` tells an LLM answerer from the
extractive one (it checks that the methods exist, not their signatures).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol, runtime_checkable

from qa.answering.text import History
from qa.schema import Answer, Passage

__all__ = ["Answerer", "ConversationalAnswerer", "History"]


@runtime_checkable
class Answerer(Protocol):
    """Answers a question from retrieved passages (the passages in ``Answer.passages``, in the order given)."""

    name: str

    def answer(self, question: str, passages: list[Passage]) -> Answer: ...


@runtime_checkable
class ConversationalAnswerer(Answerer, Protocol):
    """An :class:`Answerer` that reads the previous turns: ``history`` is ``(question, answer_text)`` pairs, oldest
    first, or None."""

    def answer(self, question: str, passages: list[Passage], history: History | None = None) -> Answer: ...

    def stream(self, question: str, passages: list[Passage], history: History | None = None) -> Iterator[str | Answer]:
        """Text chunks of the answer as they come, then the final :class:`~qa.schema.Answer` (last item)."""
        ...

    def rewrite_followup(self, question: str, history: History) -> str:
        """A standalone version of a follow-up question (« Et à Bruxelles ? »), or ``question`` itself."""
        ...
