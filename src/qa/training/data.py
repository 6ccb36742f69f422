"""Training data for the reader: SQuAD-format files, split by article, turned into sentence lists.

Every paragraph's candidates are the project's own sentences (:func:`qa.answering.reader.candidate_sentences`);
a question's positive is the sentence that holds its answer (the one at ``answer_start``, or any sentence whose
text holds the answer, compared like :func:`qa.evaluation.quote_contains_answer`). The split is by article
(SQuAD ``title``): a held-out share of articles, drawn with a fixed seed, never seen in training.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qa.answering.reader import candidate_sentences
from qa.errors import DocumentError
from qa.evaluation import quote_contains_answer, split_titles


@dataclass
class Paragraph:
    key: str
    """``<file index>:<entry index>-<paragraph index>``."""
    title: str
    text: str
    sentences: list[tuple[int, int]]

    def sentence_texts(self) -> list[str]:
        return [self.text[s:e] for s, e in self.sentences]


@dataclass
class Example:
    id: str
    question: str
    paragraph: Paragraph
    answers: list[str]
    positives: list[int] = field(default_factory=list)
    """Indices (into ``paragraph.sentences``) of the sentences that hold the answer."""
    answer_starts: list[int] = field(default_factory=list)
    """SQuAD ``answer_start`` of each answer (character offset in ``paragraph.text``; -1 when absent)."""

    @property
    def title(self) -> str:
        return self.paragraph.title


@dataclass
class Dataset:
    paragraphs: list[Paragraph]
    examples: list[Example]
    files: list[dict[str, Any]]
    skipped: int = 0
    """Questions whose answer no candidate sentence holds (it spans a sentence boundary): not used."""


def sha256_of(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def load_examples(paths: list[Path]) -> Dataset:
    paragraphs: list[Paragraph] = []
    examples: list[Example] = []
    files: list[dict[str, Any]] = []
    skipped = 0
    for fi, path in enumerate(paths):
        path = Path(path)
        try:
            entries = json.loads(path.read_text(encoding="utf-8"))["data"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DocumentError(str(path), f"not a SQuAD-format JSON file ({exc})") from None
        count = 0
        for i, entry in enumerate(entries):
            title = str(entry.get("title", "")) or f"{path.name}:{i}"
            for j, para in enumerate(entry.get("paragraphs", [])):
                text = para["context"]
                paragraph = Paragraph(f"{fi}:{i}-{j}", title, text, candidate_sentences(text))
                paragraphs.append(paragraph)
                for qa in para.get("qas", []):
                    if qa.get("is_impossible") or not qa.get("answers"):
                        continue
                    answers = [a["text"] for a in qa["answers"]]
                    starts = [int(a.get("answer_start", -1)) for a in qa["answers"]]
                    holds = [k for k, (s, e) in enumerate(paragraph.sentences) if quote_contains_answer([text[s:e]], answers)]
                    # the sentence at answer_start first; else any that holds the answer text
                    positives = [
                        k for k in holds if any(paragraph.sentences[k][0] <= st < paragraph.sentences[k][1] for st in starts)
                    ]
                    positives = positives or holds
                    count += 1
                    if not positives:
                        skipped += 1
                        continue
                    examples.append(Example(str(qa["id"]), qa["question"], paragraph, answers, positives, starts))
        files.append({"file": path.name, "sha256": sha256_of(path), "questions": count})
    return Dataset(paragraphs, examples, files, skipped)


def split_examples(dataset: Dataset, dev_share: float, seed: int) -> tuple[list[Example], list[Example]]:
    train_titles, dev_titles = split_titles([p.title for p in dataset.paragraphs], dev_share, seed)
    train = [e for e in dataset.examples if e.title in train_titles]
    dev = [e for e in dataset.examples if e.title in dev_titles]
    return train, dev


def other_paragraphs(dataset: Dataset) -> dict[str, list[Paragraph]]:
    """For each paragraph key, the other paragraphs of its article (what retrieval returns when its own is absent)."""
    by_title: dict[str, list[Paragraph]] = {}
    for p in dataset.paragraphs:
        by_title.setdefault(p.title, []).append(p)
    return {p.key: [o for o in by_title[p.title] if o.key != p.key and o.sentences] for p in dataset.paragraphs}


def training_list(
    example: Example, others: list[Paragraph], rng: random.Random, neg_same: int, neg_other: int
) -> tuple[list[str], list[float]]:
    """One listwise training item: the positive sentence first, then up to ``neg_same`` other sentences of its
    paragraph and ``neg_other`` sentences of other paragraphs of the same article that do not hold the answer;
    labels 1/0."""
    texts = example.paragraph.sentence_texts()
    pos = rng.choice(example.positives)
    same = [k for k in range(len(texts)) if k not in example.positives and not quote_contains_answer([texts[k]], example.answers)]
    rng.shuffle(same)
    sentences = [texts[pos]] + [texts[k] for k in same[:neg_same]]
    if neg_other and others:
        pool = [(p, k) for p in others for k in range(len(p.sentences))]
        rng.shuffle(pool)
        taken = 0
        for p, k in pool:
            if taken >= neg_other:
                break
            s, e = p.sentences[k]
            if quote_contains_answer([p.text[s:e]], example.answers):
                continue
            sentences.append(p.text[s:e])
            taken += 1
    return sentences, [1.0] + [0.0] * (len(sentences) - 1)


NAME = re.compile(r"(?<![\w’'-])[A-ZÀ-ÖØ-Þ][\w’'-]{2,}")
"""A capitalised word of at least three letters: what :func:`swap_name` reads as a name."""


def swap_name(example: Example, sentence: str, others: list[Any], rng: random.Random) -> str | None:
    """The sentence with one of the question's names (« Almaty ») replaced by another name of its article
    (« Bruxelles »): it then no longer answers the question (the seed trap's kind of near miss); None when the
    sentence holds none of the question's names or the article no other name."""
    asked = {m.group() for m in NAME.finditer(example.question) if m.start() > 0}
    held = [m for m in NAME.finditer(sentence) if m.group() in asked]
    texts = [example.paragraph.text] + [p.text for p in others]
    pool = sorted({m.group() for t in texts for m in NAME.finditer(t) if m.start() > 0 and t[m.start() - 2 : m.start()] != ". "})
    pool = [n for n in pool if n not in asked and n not in sentence and len(n) >= 4]
    if not held or not pool:
        return None
    name = rng.choice(held)
    swapped = sentence[: name.start()] + rng.choice(pool) + sentence[name.end() :]
    return None if any(name.group() in answer for answer in example.answers) else swapped
