"""The answer chain (LangChain LCEL): question → standalone question → passages → answer.

``build_chain(retrieve, answerer)`` returns a ``Runnable`` from a :class:`ChainState`
(question, history, filters, k) to an :class:`~qa.schema.Answer`; ``retrieve`` is a plain
callable ``(question, k, filters) → passages`` (the knowledge base hands in its search), so
the chain knows nothing of indexes. Follow-ups (« Et à Bruxelles ? ») are rewritten into
standalone questions first: by rules in extractive mode, by the LLM when one answers.

:func:`run_chain` runs the chain's three steps. Through LCEL when LangChain takes part — an LLM
answers (its chat model is LangChain's), or LangChain tracing is on (the run is traced) — and
as the same three calls otherwise: ``langchain_core.runnables`` costs a cold process 0.42 s and
~24 MB of imports (its tracers pull ``langsmith.run_trees``) for callbacks the extractive
answerer never uses, so a cold ``qa ask`` does not import LangChain at all.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from qa.answering.base import Answerer, ConversationalAnswerer, History
from qa.retrieval.filters import NO_FILTERS, Filters
from qa.schema import Answer, Passage

if TYPE_CHECKING:
    from langchain_core.runnables import Runnable

Retrieve = Callable[[str, int, Filters], list[Passage]]
"""``(standalone question, k, filters)`` → passages, best first."""
Step = Callable[["ChainState"], "ChainState"]


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
@dataclass(frozen=True)
class ChainState:
    """What flows through the chain: the user's turn, then what each step adds."""

    question: str
    history: tuple[tuple[str, str], ...] = ()
    filters: Filters = NO_FILTERS
    k: int = 5
    standalone: str = ""
    """The question rewritten to stand alone (the question itself when it is not a follow-up)."""
    passages: list[Passage] = field(default_factory=list)


def _conversational(answerer: Answerer | ConversationalAnswerer) -> ConversationalAnswerer | None:
    return answerer if isinstance(answerer, ConversationalAnswerer) else None


def _steps(retrieve: Retrieve, answerer: Answerer | ConversationalAnswerer) -> tuple[Step, Step]:
    """The retrieval half of the chain as two plain functions of :class:`ChainState`: standalone question, passages."""
    llm = _conversational(answerer)

    def standalone(state: ChainState) -> ChainState:
        if llm is not None and state.history:
            return replace(state, standalone=llm.rewrite_followup(state.question, list(state.history)))
        return replace(state, standalone=rewrite_follow_up(state.question, state.history))

    def passages(state: ChainState) -> ChainState:
        return replace(state, passages=retrieve(state.standalone, state.k, state.filters))

    return standalone, passages


def build_retrieval_chain(retrieve: Retrieve, answerer: Answerer | ConversationalAnswerer) -> Runnable[ChainState, ChainState]:
    """:class:`ChainState` → the same state with ``standalone`` and ``passages`` filled in."""
    from langchain_core.runnables import RunnableLambda

    standalone, passages = _steps(retrieve, answerer)
    # plain lambdas rather than RunnablePassthrough.assign: assign runs each step through a new thread
    # pool (two thread starts per ask, ~10-20 ms on a busy laptop) for steps that cannot run in parallel
    return RunnableLambda(standalone, name="standalone") | RunnableLambda(passages, name="retrieve")


def _respond(answerer: Answerer | ConversationalAnswerer, state: ChainState) -> Answer:
    llm = _conversational(answerer)
    if llm is not None:  # LLMs see the conversation
        answer = llm.answer(state.standalone, state.passages, list(state.history) or None)
    else:
        answer = answerer.answer(state.standalone, state.passages)
    answer.question = state.standalone
    return answer


def build_chain(retrieve: Retrieve, answerer: Answerer | ConversationalAnswerer) -> Runnable[ChainState, Answer]:
    """:class:`ChainState` → :class:`Answer` (LCEL)."""
    from langchain_core.runnables import RunnableLambda

    return build_retrieval_chain(retrieve, answerer) | RunnableLambda(lambda state: _respond(answerer, state), name="answer")


TRACING_VARIABLES = ("LANGSMITH_TRACING", "LANGSMITH_TRACING_V2", "LANGCHAIN_TRACING_V2", "LANGCHAIN_TRACING")
"""LangChain's switches for tracing runs (LangSmith): when one is ``true``, the chain runs through LCEL."""


def uses_langchain(answerer: Answerer | ConversationalAnswerer) -> bool:
    """Whether the chain runs through LCEL: an LLM answers, or LangChain tracing is on."""
    tracing = any(os.environ.get(name, "").strip().lower() == "true" for name in TRACING_VARIABLES)
    return tracing or _conversational(answerer) is not None


def _retrieved(retrieve: Retrieve, answerer: Answerer | ConversationalAnswerer, state: ChainState) -> ChainState:
    if uses_langchain(answerer):
        return build_retrieval_chain(retrieve, answerer).invoke(state)
    standalone, passages = _steps(retrieve, answerer)
    return passages(standalone(state))


def run_chain(retrieve: Retrieve, answerer: Answerer | ConversationalAnswerer, state: ChainState) -> Answer:
    """The chain run once: :class:`ChainState` → :class:`Answer` (LCEL or the same steps as calls: see the module)."""
    if uses_langchain(answerer):
        return build_chain(retrieve, answerer).invoke(state)
    return _respond(answerer, _retrieved(retrieve, answerer, state))


def stream_answer(retrieve: Retrieve, answerer: Answerer | ConversationalAnswerer, state: ChainState) -> Iterator[str | Answer]:
    """Text chunks as an LLM answerer streams them, then the final :class:`Answer`
    (the extractive answerer yields the Answer alone)."""
    state = _retrieved(retrieve, answerer, state)
    llm = _conversational(answerer)
    if llm is None:
        yield _respond(answerer, state)
        return
    for item in llm.stream(state.standalone, state.passages, list(state.history) or None):
        if isinstance(item, Answer):
            item.question = state.standalone
        yield item
