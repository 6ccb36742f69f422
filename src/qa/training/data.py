"""Training data for the reader: SQuAD-format files, split by article, turned into sentence lists.

Every paragraph's candidates are the project's own sentences (:func:`qa.answering.reading.reader.candidate_sentences`);
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

from qa.answering.reading.reader import candidate_sentences
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
    impossible: bool = False
    """A SQuAD 2.0 unanswerable question (``load_examples(impossible=True)`` only): no sentence answers it, not
    even the one holding its ``answers`` (its plausible answers)."""

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
    groups: dict[str, str] = field(default_factory=dict)
    """Paragraph key → its split group: the titles of one group are split together (:func:`split_examples`)."""


def sha256_of(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def file_group(data: dict[str, Any]) -> str:
    """How a data file is split: ``generated`` (``qa gen-news``: its ``meta``), ``squad2`` (SQuAD 2.0: unanswerable
    questions) or ``squad`` (PIAF, SQuAD 1.1: split together, as the shipped reader's split was made)."""
    if isinstance(data.get("meta"), dict) and data["meta"].get("generated_by"):
        return "generated"
    if data.get("version") == "v2.0" or any(
        qa.get("is_impossible") for e in data.get("data", [])[:3] for p in e.get("paragraphs", []) for qa in p.get("qas", [])
    ):
        return "squad2"
    return "squad"


def load_examples(paths: list[Path], impossible: bool = False) -> Dataset:
    """The questions of SQuAD-format files whose answer a candidate sentence holds; with ``impossible``, also the
    SQuAD 2.0 unanswerable ones (``Example.impossible``, with their plausible answers, no positive)."""
    paragraphs: list[Paragraph] = []
    examples: list[Example] = []
    files: list[dict[str, Any]] = []
    groups: dict[str, str] = {}
    skipped = 0
    for fi, path in enumerate(paths):
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            entries = data["data"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DocumentError(str(path), f"not a SQuAD-format JSON file ({exc})") from None
        group = file_group(data)
        count = 0
        for i, entry in enumerate(entries):
            title = str(entry.get("title", "")) or f"{path.name}:{i}"
            for j, para in enumerate(entry.get("paragraphs", [])):
                text = para["context"]
                paragraph = Paragraph(f"{fi}:{i}-{j}", title, text, candidate_sentences(text))
                paragraphs.append(paragraph)
                groups[paragraph.key] = group
                for qa in para.get("qas", []):
                    if qa.get("is_impossible") and impossible:
                        plausible = qa.get("plausible_answers") or []
                        examples.append(
                            Example(str(qa["id"]), qa["question"], paragraph, [a["text"] for a in plausible], impossible=True)
                        )
                        count += 1
                        continue
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
        files.append({"file": path.name, "sha256": sha256_of(path), "questions": count, "group": group})
    return Dataset(paragraphs, examples, files, skipped, groups)


def split_examples(dataset: Dataset, dev_share: float, seed: int) -> tuple[list[Example], list[Example]]:
    """``(train, dev)`` by article title, each group of files (:func:`file_group`) split on its own: PIAF's split
    is the same whatever generated or SQuAD 2.0 files come with it."""
    train_titles: set[tuple[str, str]] = set()
    dev_titles: set[tuple[str, str]] = set()
    for group in sorted(set(dataset.groups.values())):
        titles = [p.title for p in dataset.paragraphs if dataset.groups.get(p.key) == group]
        train_g, dev_g = split_titles(titles, dev_share, seed)
        train_titles |= {(group, t) for t in train_g}
        dev_titles |= {(group, t) for t in dev_g}

    def key(e: Example) -> tuple[str, str]:
        return (dataset.groups.get(e.paragraph.key, "squad"), e.title)

    train = [e for e in dataset.examples if key(e) in train_titles]
    dev = [e for e in dataset.examples if key(e) in dev_titles]
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
