"""Listwise training of the span model's null answer (``qa train-span --listwise K``, issue 21).

The pointwise null answer (``--negatives-same``…) teaches the span model that a sentence does or does not hold an
answer one sentence at a time; at run time its margin (best span − null answer) competes with the other candidates'
and decides abstention. Here the training item is what the answerer sees: a question and ``K`` candidate sentences
— its answer sentence (unless it has none) and the sentences most like the question by the lexical answerer's terms
(the near misses: « … a ouvert son bureau à Bruxelles » for « … a-t-il ouvert à Almaty ? »), drawn from its
paragraph and its article — and the loss is a softmax over the ``K`` margins and a fixed « none » slot at 0: the
answer sentence must win, by a margin above 0; a question that none answers (SQuAD 2.0's unanswerable ones, the
news set's, a question asked with its paragraph removed) must leave every margin below 0.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qa.analysis import analyze
from qa.answering.questions import question_terms
from qa.evaluation import quote_contains_answer
from qa.training.data import Example, Paragraph

NAME_WEIGHT = 2.0
"""A question name's weight when ranking the near misses (the lexical answerer counts names more, too)."""


@dataclass
class Group:
    """One listwise item: ``K`` sentences for a question and which of them hold its answer (none: abstain)."""

    example: Example
    sentences: list[str]
    positives: list[int]


def _overlap(terms: dict[str, float], sentence: str) -> float:
    held = set(analyze(sentence))
    return sum(w for t, w in terms.items() if t in held)


def hard_group(example: Example, others: list[Paragraph], k: int, rng: random.Random, removed: bool = False) -> Group | None:
    """``k`` candidates for ``example``: its answer sentence first (not when ``removed`` — its paragraph left out —
    or when it has none), then the sentences of its paragraph and article that do not hold the answer, those that
    share most of the question's terms first (ties at random); None when fewer than 2 sentences are left."""
    terms = question_terms(example.question, NAME_WEIGHT, 1.0)
    texts = example.paragraph.sentence_texts()
    pool: list[str] = []
    if not removed:
        pool += [t for i, t in enumerate(texts) if example.impossible or i not in example.positives]
    for p in others:
        pool += p.sentence_texts()
    holds = example.answers and not example.impossible
    pool = [s for s in dict.fromkeys(pool) if s.strip() and not (holds and quote_contains_answer([s], example.answers))]
    keyed = [(_overlap(terms, s), rng.random(), s) for s in pool]
    keyed.sort(reverse=True)
    head: list[str] = []
    if not removed and not example.impossible and example.positives:
        head = [texts[example.positives[0]]]  # the sentence answer_in_sentence labels
    sentences = head + [s for _, _, s in keyed[: k - len(head)]]
    if len(sentences) < 2:
        return None
    return Group(example, sentences, [0] if head else [])


def make_groups(
    examples: list[Example], others: dict[str, list[Paragraph]], k: int, removed_share: float, seed: int
) -> list[Group]:
    """A group per question (:func:`hard_group`), and for a ``removed_share`` of the answerable ones also the group
    with their paragraph left out (what retrieval finds when the corpus lacks the paragraph: abstain)."""
    rng = random.Random(seed)
    groups: list[Group] = []
    for example in examples:
        article = others.get(example.paragraph.key, [])
        group = hard_group(example, article, k, rng)
        if group is not None:
            groups.append(group)
        if article and not example.impossible and rng.random() < removed_share:
            group = hard_group(example, article, k, rng, removed=True)
            if group is not None:
                groups.append(group)
    return groups


def news_training_examples(questions: Path, articles: Path) -> list[Example]:
    """The hand-written news set's TRAINING part (never its dev part) as examples over their whole article (one
    paragraph each; its sentences split as the answerer splits them); the unanswerable ones ``impossible``."""
    from qa.answering.reading.reader import candidate_sentences
    from qa.evaluation import load_news_articles, load_news_questions

    train = [q for q in load_news_questions(questions) if q.split == "train"]
    wanted = {q.doc_id for q in train}
    # limit 1 + ids: the first article and every wanted one, without parsing the other 12,000 (the first is dropped)
    texts = {a.id: a.text for a in load_news_articles(articles, 1, ids=wanted) if a.id in wanted}
    out: list[Example] = []
    for q in train:
        text = texts.get(q.doc_id)
        if text is None:
            continue
        paragraph = Paragraph(f"news:{q.doc_id}", f"news:{q.doc_id}", text, candidate_sentences(text))
        positives = [i for i, s in enumerate(paragraph.sentence_texts()) if q.answers and quote_contains_answer([s], q.answers)]
        if q.answers and not positives:
            continue
        out.append(Example(q.id, q.text, paragraph, list(q.answers), positives, impossible=not q.answers))
    return out


def listwise_loss(margins: Any, groups: list[Group], k: int) -> Any:
    """Mean over ``groups`` of ``-log P(an answer sentence)`` (or ``P(none)`` for a group without one) under a
    softmax over each group's margins (``len(groups) * k`` of them, group after group, padded groups at
    ``-inf``) and a « none » slot at 0."""
    import torch

    rows = margins.new_full((len(groups), k + 1), float("-inf"))
    target = torch.zeros((len(groups), k + 1), dtype=torch.bool)
    at = 0
    for g, group in enumerate(groups):
        n = len(group.sentences)
        rows[g, :n] = margins[at : at + n]
        rows[g, k] = 0.0
        for i in group.positives or [k]:
            target[g, i] = True
        at += n
    total = torch.logsumexp(rows, dim=1)
    good = torch.logsumexp(rows.masked_fill(~target, float("-inf")), dim=1)
    return (total - good).mean()
