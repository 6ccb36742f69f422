"""Pure formatting for the Streamlit page (unit-tested without a browser)."""

from __future__ import annotations

import re
from typing import Any

from qa.schema import Answer, Citation, Passage

_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+!|<>~$])")


def escape_markdown(text: str) -> str:
    """Text shown literally by ``st.markdown`` (no accidental bold, links or headings)."""
    return _MD_SPECIAL.sub(r"\\\1", text)


def passage_heading(passage: Passage, rank: int) -> str:
    """``[1] Title — 2022-02-07 · source (score 0.873)``."""
    title = passage.title or passage.doc_id
    meta = " · ".join(x for x in (passage.date, passage.source) if x)
    return f"[{rank}] {title}" + (f" — {meta}" if meta else "") + f" (score {passage.score:.3f})"


def passage_markdown(passage: Passage, rank: int) -> str:
    """A search hit as Markdown: heading line, optional link, the passage quoted."""
    lines = [f"**{escape_markdown(passage_heading(passage, rank))}**"]
    if passage.url:
        lines.append(f"<{passage.url}>")
    lines.append("> " + escape_markdown(passage.text).replace("\n", "\n> "))
    return "\n\n".join(lines)


def stats_markdown(stats: dict[str, Any]) -> str:
    return (
        f"**{stats['articles']}** articles, **{stats['chunks']}** passages  \n"
        f"Modèle : `{stats['model']}`  \n"
        f"Dernier ajout : {stats.get('last_ingest') or '—'}"
    )


def highlighted_passage(citation: Citation) -> str:
    """The cited passage as a Markdown quote, the quoted sentence highlighted."""
    text = citation.passage.text
    before, quote, after = text[: citation.start], text[citation.start : citation.end], text[citation.end :]
    marked = f"{escape_markdown(before)}:orange-background[**{escape_markdown(quote)}**]{escape_markdown(after)}"
    return "> " + marked.replace("\n", "\n> ")


def answer_markdown(answer: Answer) -> str:
    """The reply, then numbered citations: title, date, source link, the passage with its quote highlighted."""
    if answer.abstained:
        lines = [f"**{escape_markdown(answer.text)}**"]
        if answer.passages:
            lines.append("Passages les plus proches :")
            lines += [passage_markdown(p, rank) for rank, p in enumerate(answer.passages[:3], 1)]
        return "\n\n".join(lines)
    lines = [f"### {escape_markdown(answer.text)}"]
    for rank, citation in enumerate(answer.citations, 1):
        p = citation.passage
        heading = f"[{rank}] {p.title or p.doc_id}" + (f" — {p.date}" if p.date else "") + (f" · {p.source}" if p.source else "")
        lines.append(f"**{escape_markdown(heading)}**" + (f" <{p.url}>" if p.url else ""))
        lines.append(highlighted_passage(citation))
    return "\n\n".join(lines)
