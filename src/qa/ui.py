"""Pure formatting for the Streamlit page (unit-tested without a browser)."""

from __future__ import annotations

import re
from typing import Any

from qa.schema import Passage

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
