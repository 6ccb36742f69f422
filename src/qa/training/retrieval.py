"""The product's own retrieval over the PIAF paragraphs, for training: the knowledge base that ``qa fit-combiner``
and ``qa train-reader --neg-hard`` share (every paragraph indexed with the real embedding model, in a work folder),
and the hard negatives it gives — the sentences ``qa ask`` would actually weigh for a question, that do not hold its
answer."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from qa.evaluation import quote_contains_answer
from qa.training.data import Dataset, Example, Paragraph


def paragraph_id(paragraph: Paragraph) -> str:
    """The id a PIAF paragraph is indexed under (one article per paragraph)."""
    return paragraph.key.replace(":", "-")


def doc_id(example: Example) -> str:
    """The indexed article id of ``example``'s paragraph."""
    return paragraph_id(example.paragraph)


def knowledge_base(dataset: Dataset, work: Path) -> Any:
    """A knowledge base in ``work / "index"`` holding every paragraph of ``dataset`` (already indexed ones are kept)."""
    from tqdm import tqdm

    from qa.config import load_settings
    from qa.documents import Article
    from qa.kb import KnowledgeBase

    kb = KnowledgeBase.open(settings=load_settings(index_dir=work / "index"))
    articles = [Article(id=paragraph_id(p), text=p.text, title=p.title, source="squad") for p in dataset.paragraphs]
    kb.add_articles(tqdm(articles, desc="index", unit=" paragraphs", file=sys.stderr, mininterval=1))
    return kb


def mine_hard_negatives(
    kb: Any, examples: list[Example], k: int, candidates: int, banned: set[str], desc: str
) -> dict[str, list[str]]:
    """Per question: the lexical answerer's first ``candidates`` sentences of its ``k`` retrieved passages, asked
    twice like ``qa fit-combiner`` does (with its paragraph, and with it left out), that do not hold its answer —
    best first, without repeats. Passages of the articles in ``banned`` (the dev split's) are never used, so
    training never reads a held-out article."""
    from tqdm import tqdm

    lexical = kb.answerer("extractive:combined").lexical  # what collect() ranks with
    out: dict[str, list[str]] = {}
    for ex in tqdm(examples, desc=desc, unit=" q", file=sys.stderr, mininterval=2):
        found: list[str] = []
        for removed in (False, True):
            passages = kb.search(ex.question, k=k, exclude=[doc_id(ex)] if removed else None)
            passages = [p for p in passages if p.doc_id not in banned]
            for s in lexical.score_sentences(ex.question, passages)[:candidates]:
                if s.text not in found and not quote_contains_answer([s.text], ex.answers):
                    found.append(s.text)
        out[ex.id] = found
    return out


def cached_hard_negatives(path: Path, make: Any) -> dict[str, list[str]]:
    """The mined negatives kept in ``path`` (JSON), mined by ``make()`` and written atomically the first time."""
    if path.is_file():
        return dict(json.loads(path.read_text(encoding="utf-8")))
    mined = make()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(mined, ensure_ascii=False), encoding="utf-8")
    os.replace(tmp, path)
    return dict(mined)
