"""The answer chain (LangChain LCEL): question → standalone question → passages → answer.

``build_chain(kb, answerer)`` returns a ``Runnable`` taking
``{"question": str, "history": [(question, answer_text), …], "filters": {...}, "k": int}``
and giving an :class:`~qa.schema.Answer`. Follow-ups (« Et à Bruxelles ? ») are
rewritten into standalone questions first: by rules in extractive mode, by the
LLM when one answers.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from typing import Any, Protocol

from langchain_core.runnables import Runnable, RunnableLambda

from qa.schema import Answer, Passage

History = Sequence[tuple[str, str]]


class Answerer(Protocol):
    name: str

    def answer(self, question: str, passages: list[Passage]) -> Answer: ...


# -- follow-up questions --------------------------------------------------------------
_QUESTION_WORD = re.compile(
    r"\b(quand|qui|que|quoi|qu['’]|où|combien|comment|pourquoi|quel(?:le)?s?|lequel|laquelle|lesquel(?:le)?s|est-ce"
    r"|when|who|what|where|which|why|how)\b",
    re.IGNORECASE,
)
_FOLLOW_UP_START = re.compile(r"^\s*(?:et|mais|and|what about|how about)\b[\s,]*", re.IGNORECASE)
_PREPOSITION = re.compile(
    r"^(?:à|a|au|aux|en|dans|de|du|des|pour|chez|sur|avec|par|vers|depuis|pendant|avant|après|in|at|on|for|from|to|with|by)\s",
    re.IGNORECASE,
)
_CAPITALISED = re.compile(r"(?<!^)(?<![.?!]\s)\b([A-ZÀ-ÖØ-Þ][\w’'-]*(?:\s+[A-ZÀ-ÖØ-Þ][\w’'-]*)*)")


def is_follow_up(question: str) -> bool:
    """« Et à Bruxelles ? », « Et en 1995 ? », « And in Brussels? »: short, elliptic questions."""
    q = question.strip()
    words = re.findall(r"\w+", q)
    if _FOLLOW_UP_START.match(q) and len(words) <= 7:
        return True
    return len(words) <= 3 and not _QUESTION_WORD.search(q)


def rewrite_follow_up(question: str, history: History | None) -> str:
    """A standalone question from an elliptic follow-up and the previous questions (rules, no LLM).

    The fragment replaces the phrase of the same shape in the previous standalone
    question: « à Bruxelles » replaces « à Almaty », « en 1995 » replaces « en 2021 »,
    a bare name replaces the last capitalised name.
    """
    if not history:
        return question
    previous = ""
    for past_question, _ in history:  # earlier follow-ups are resolved in order
        previous = rewrite_follow_up(past_question, [(previous, "")]) if previous else past_question
    if not previous or not is_follow_up(question):
        return question
    fragment = _FOLLOW_UP_START.sub("", question.strip()).rstrip(" ?!.").strip()
    if not fragment:
        return question
    body = previous.rstrip()
    ending = ""
    if body.endswith("?"):
        body, ending = body[:-1].rstrip(), " ?"
    prep = _PREPOSITION.match(fragment)
    if prep:
        word = prep.group(0).strip()
        # the last « à … » of the previous question, up to a comma or the end
        matches = list(re.finditer(rf"(?<!\w){re.escape(word)}\s+[^,;?]+", body, re.IGNORECASE))
        if matches:
            m = matches[-1]
            return body[: m.start()] + fragment + body[m.end() :] + ending
    names = list(_CAPITALISED.finditer(body))
    if names and not prep:
        m = names[-1]
        return body[: m.start()] + fragment + body[m.end() :] + ending
    return f"{body} {fragment}{ending}"


# -- the chain -------------------------------------------------------------------------
def build_retrieval_chain(kb: Any, answerer: Any) -> Runnable:
    """``{"question", "history", "filters", "k"}`` → the same dict plus ``standalone`` and ``passages``."""

    def standalone(inputs: dict[str, Any]) -> str:
        history = inputs.get("history") or []
        if hasattr(answerer, "rewrite_followup") and history:
            return answerer.rewrite_followup(inputs["question"], list(history))
        return rewrite_follow_up(inputs["question"], history)

    def retrieve(inputs: dict[str, Any]) -> list[Passage]:
        return kb.search(inputs["standalone"], k=inputs.get("k", 5), **(inputs.get("filters") or {}))

    # plain lambdas rather than RunnablePassthrough.assign: assign runs each step through a new thread
    # pool (two thread starts per ask, ~10-20 ms on a busy laptop) for steps that cannot run in parallel
    return RunnableLambda(lambda s: {**s, "standalone": standalone(s)}, name="standalone") | RunnableLambda(
        lambda s: {**s, "passages": retrieve(s)}, name="retrieve"
    )


def _is_llm(answerer: Any) -> bool:
    return hasattr(answerer, "rewrite_followup")


def build_chain(kb: Any, answerer: Any) -> Runnable:
    """``{"question", "history", "filters", "k"}`` → :class:`Answer` (LCEL)."""

    def respond(state: dict[str, Any]) -> Answer:
        if _is_llm(answerer):  # LLMs see the conversation
            answer = answerer.answer(state["standalone"], state["passages"], state.get("history") or None)
        else:
            answer = answerer.answer(state["standalone"], state["passages"])
        answer.question = state["standalone"]
        return answer

    return build_retrieval_chain(kb, answerer) | RunnableLambda(respond)


def stream_answer(kb: Any, answerer: Any, inputs: dict[str, Any]) -> Iterator[str | Answer]:
    """Text chunks as an LLM answerer streams them, then the final :class:`Answer`
    (the extractive answerer yields the Answer alone)."""
    state = build_retrieval_chain(kb, answerer).invoke(inputs)
    if not _is_llm(answerer):
        answer = answerer.answer(state["standalone"], state["passages"])
        answer.question = state["standalone"]
        yield answer
        return
    for item in answerer.stream(state["standalone"], state["passages"], state.get("history") or None):
        if isinstance(item, Answer):
            item.question = state["standalone"]
        yield item


_EXTRACTIVE: Any = None


def extractive_answerer() -> Any:
    """The process-wide extractive answerer (its spaCy pipeline loads once)."""
    global _EXTRACTIVE
    if _EXTRACTIVE is None:
        from qa.answering.extractive import ExtractiveAnswerer

        _EXTRACTIVE = ExtractiveAnswerer()
    return _EXTRACTIVE


def make_answerer(spec: str, *, base_url: str | None = None, api_key: str | None = None) -> Any:
    """``extractive`` (default, offline) or an LLM answerer for ``openai:…``, ``ollama:…``, ``llamacpp:…``.

    LLM answerers fall back on the extractive answer's citations when the model cites nothing.
    """
    from qa.answering.llm import make_llm_answerer, parse_answerer

    provider, _ = parse_answerer(spec)
    extractive = extractive_answerer()
    if provider == "extractive":
        return extractive
    return make_llm_answerer(spec, base_url=base_url, api_key=api_key, fallback=extractive.answer)
