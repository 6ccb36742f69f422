"""Pure formatting for the Streamlit chat (unit-tested without a browser).

``app.py`` only lays out what these functions return: an :class:`AnswerView` per
answer (reply, numbered sources with the quoted sentence highlighted, the
surrounding article text), the sidebar summary, the filters and the history.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from qa.retrieval.filters import Filters
from qa.schema import Answer, Passage
from qa.ui.i18n import Translator, translator

_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+!|<>~$:])")
CONTEXT_CHARS = 600
"""Characters of the article shown on each side of a cited passage when expanded."""


def escape_markdown(text: str) -> str:
    """Text shown literally by ``st.markdown`` (no accidental bold, links, headings or directives)."""
    return _MD_SPECIAL.sub(r"\\\1", text)


def _quote_block(markdown: str) -> str:
    return "> " + markdown.replace("\n", "\n> ")


def _highlight(text: str, start: int, end: int) -> str:
    """``text`` as Markdown with ``text[start:end]`` highlighted (bold on an orange background)."""
    if not 0 <= start < end <= len(text):
        return escape_markdown(text)
    before, quote, after = text[:start], text[start:end], text[end:]
    return f"{escape_markdown(before)}:orange-background[**{escape_markdown(quote)}**]{escape_markdown(after)}"


def _title_line(passage: Passage, rank: int) -> str:
    """``[1] Title — 2022-02-07 · source``."""
    meta = " · ".join(x for x in (passage.date, passage.source) if x)
    return f"[{rank}] {passage.title or passage.doc_id}" + (f" — {meta}" if meta else "")


def passage_heading(passage: Passage, rank: int, score_label: str = "score") -> str:
    """``[1] Title — 2022-02-07 · source (score 0.873)``."""
    return f"{_title_line(passage, rank)} ({score_label} {passage.score:.3f})"


def passage_markdown(passage: Passage, rank: int) -> str:
    """A search hit as Markdown: heading line, optional link, the passage quoted."""
    lines = [f"**{escape_markdown(passage_heading(passage, rank))}**"]
    if passage.url:
        lines.append(f"<{passage.url}>")
    lines.append(_quote_block(escape_markdown(passage.text)))
    return "\n\n".join(lines)


def stats_markdown(stats: Mapping[str, Any], t: Translator | None = None) -> str:
    t = t or translator("fr")
    return t(
        "stats",
        articles=stats["articles"],
        chunks=stats["chunks"],
        model=stats["model"],
        last_ingest=stats.get("last_ingest") or "—",
    )


def context_markdown(article_text: str, passage: Passage, quote_start: int, quote_end: int, window: int = CONTEXT_CHARS) -> str:
    """The article around a cited passage (``window`` characters each side, cut at a space),
    with the quoted sentence highlighted. Offsets are those of the passage inside its article
    and of the quote inside the passage."""
    if article_text[passage.start : passage.end] != passage.text:
        # the article changed since the passage was retrieved: show the passage alone
        article_text, passage_start, passage_end = passage.text, 0, len(passage.text)
    else:
        passage_start, passage_end = passage.start, passage.end
    lo = max(0, passage_start - window)
    hi = min(len(article_text), passage_end + window)
    if lo > 0:
        space = article_text.find(" ", lo, passage_start)
        lo = space + 1 if space != -1 else lo
    if hi < len(article_text):
        space = article_text.rfind(" ", passage_end, hi)
        hi = space if space != -1 else hi
    excerpt = article_text[lo:hi]
    body = _highlight(excerpt, passage_start + quote_start - lo, passage_start + quote_end - lo)
    return ("… " if lo > 0 else "") + body + (" …" if hi < len(article_text) else "")


@dataclass
class SourceView:
    """One numbered source under an answer."""

    heading: str
    """Markdown: ``**[1] Title — date · source**`` and the link."""
    passage: str
    """Markdown quote of the passage, the cited sentence highlighted."""
    context: str | None = None
    """Markdown of the surrounding article text (shown in an expander), if the article is known."""


@dataclass
class AnswerView:
    """What the chat shows for one answer."""

    reply: str
    abstained: bool
    note: str | None = None
    """A line under the reply: what an abstention means, or how a follow-up was understood."""
    sources_title: str = ""
    sources: list[SourceView] = field(default_factory=list)


def _heading(passage: Passage, rank: int) -> str:
    line = f"**{escape_markdown(_title_line(passage, rank))}**"
    return line + (f"  \n<{passage.url}>" if passage.url else "")


def answer_view(
    answer: Answer, t: Translator | None = None, article_text: Callable[[str], str | None] | None = None, asked: str | None = None
) -> AnswerView:
    """Turn an :class:`Answer` into chat content.

    An answer lists its citations, each passage with the quoted sentence highlighted.
    An abstention says the corpus does not hold the answer and lists the 3 closest passages.
    ``article_text(doc_id)`` returns an article's full text (``None`` if it is gone), for the
    "read more" context; ``asked`` is the question as typed, to show how a follow-up was understood.
    """
    t = t or translator("fr")
    note = None
    if asked is not None and answer.question and answer.question.strip() != asked.strip():
        note = t("rewritten", question=answer.question)
    if answer.abstained:
        sources = [
            SourceView(_heading(p, rank), _quote_block(escape_markdown(p.text)), _context(article_text, p, 0, 0))
            for rank, p in enumerate(answer.passages[:3], 1)
        ]
        return AnswerView(escape_markdown(answer.text), True, t("abstained"), t("closest") if sources else "", sources)
    sources = []
    for rank, citation in enumerate(answer.citations, 1):
        p = citation.passage
        sources.append(
            SourceView(
                _heading(p, rank),
                _quote_block(_highlight(p.text, citation.start, citation.end)),
                _context(article_text, p, citation.start, citation.end),
            )
        )
    return AnswerView(f"**{escape_markdown(answer.text)}**", False, note, t("sources_title") if sources else "", sources)


def _context(article_text: Callable[[str], str | None] | None, passage: Passage, start: int, end: int) -> str | None:
    text = article_text(passage.doc_id) if article_text else None
    return context_markdown(text, passage, start, end) if text else None


def answer_markdown(answer: Answer, t: Translator | None = None) -> str:
    """The whole answer as one Markdown text (reply, note, numbered sources)."""
    view = answer_view(answer, t)
    lines = [view.reply] + ([view.note] if view.note else []) + ([view.sources_title] if view.sources else [])
    for source in view.sources:
        lines += [source.heading, source.passage]
    return "\n\n".join(lines)


def history_pairs(messages: Iterable[Mapping[str, Any]]) -> list[tuple[str, str]]:
    """The ``(question, answer_text)`` pairs of a chat, oldest first, for follow-up questions.

    ``messages`` alternate ``{"role": "user", "text": …}`` and ``{"role": "assistant", "answer": Answer}``
    (or ``"error"``); a question whose answer failed is left out.
    """
    pairs: list[tuple[str, str]] = []
    question: str | None = None
    for message in messages:
        if message.get("role") == "user":
            question = message.get("text")
        elif question is not None and isinstance(message.get("answer"), Answer):
            pairs.append((question, message["answer"].text))
            question = None
    return pairs


def search_filters(sources: Sequence[str] = (), date_from: date | None = None, date_to: date | None = None) -> dict[str, Any]:
    """The sidebar's choices as keyword filters for ``KnowledgeBase.ask``/``search``."""
    return Filters.of(source=sources, date_from=date_from, date_to=date_to).as_kwargs()


def answerer_choices(configured: str) -> list[str]:
    """The extractive answerer always; the configured LLM answerer (``QA_ANSWERER``) when there is one."""
    return ["extractive"] if configured == "extractive" else [configured, "extractive"]


def answerer_label(spec: str, t: Translator) -> str:
    return t("answerer_extractive") if spec == "extractive" else spec


def ingest_summary(report: Any, t: Translator | None = None) -> tuple[str, list[str]]:
    """An :class:`~qa.schema.IngestReport` as one summary line and one line per file not indexed."""
    t = t or translator("fr")
    line = t(
        "ingest_done",
        added=len(report.added),
        updated=len(report.updated),
        unchanged=len(report.unchanged),
        chunks=report.chunks_written,
        seconds=report.seconds,
    )
    return line, [escape_markdown(str(problem)) for problem in report.errors]
