"""What the chain needs from an answerer: typed protocols, implemented by the extractive and LLM answerers."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Protocol, runtime_checkable

from qa.schema import Answer, Passage

History = Sequence[tuple[str, str]]
"""Earlier turns of a conversation, oldest first: ``(question, answer_text)``."""


@runtime_checkable
class Answerer(Protocol):
    """Answers a question from passages, with citations, or abstains."""

    name: str

    def answer(self, question: str, passages: list[Passage]) -> Answer: ...


@runtime_checkable
class ConversationalAnswerer(Protocol):
    """An answerer that reads the conversation (an LLM): it rewrites follow-ups and streams its reply."""

    name: str

    def answer(self, question: str, passages: list[Passage], history: History | None = None) -> Answer: ...

    def stream(self, question: str, passages: list[Passage], history: History | None = None) -> Iterator[str | Answer]: ...

    def rewrite_followup(self, question: str, history: History) -> str: ...
