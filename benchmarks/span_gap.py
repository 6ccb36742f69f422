"""How far below the best reader logit may the span model stop reading? (``SPAN_GAP`` of the reading answerer)

    QA_READER=on .venv/bin/python benchmarks/span_gap.py [--index DIR] [--questions 600] [--gaps 1 2 3 4 5 6]

For PIAF questions over an index of the first 200 PIAF paragraphs (built in ``--index`` if it holds nothing; the
query benchmark's ``real`` snapshot is one), the reading answerer's candidates are read once by every model; then,
for each gap, the span model's margins are kept only for the candidates whose reader logit is within the gap of the
question's best (the others get ``NO_ANSWER``, as at run time) and the combiner chooses again. Reports how often the
choice and the abstention stay the same as with every candidate read, the quote's accuracy (answer in the quoted
sentence, abstention = miss) and how many candidates the span model reads per question. Questions from both PIAF
splits: what is measured is agreement with the full reading, not quality.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np
from common import PIAF, load_corpus


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", help="an index of the first 200 PIAF paragraphs (built there if empty)")
    parser.add_argument("--questions", type=int, default=600)
    parser.add_argument("--gaps", type=float, nargs="+", default=[1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    args = parser.parse_args()
    os.environ["QA_READER"] = "on"
    from qa import KnowledgeBase
    from qa.answering.reading.answerer import NO_ANSWER
    from qa.evaluation import quote_contains_answer

    articles, questions, _ = load_corpus(PIAF, None)
    real = articles[:200]
    ids = {a.id for a in real}
    index = Path(args.index) if args.index else Path(tempfile.mkdtemp(prefix="qa-span-gap-"))
    kb = KnowledgeBase.open(index)
    if not kb.stats()["chunks"]:
        kb.add_articles(real)
    reading = kb.answerer()
    reading.load()
    combiner = reading.combiner
    qs = [q for q in questions if q.doc_id in ids][: args.questions]
    same = {g: [0, 0, 0.0, 0] for g in args.gaps}  # same choice, same abstention, span reads, right
    full_right = 0
    for q in qs:
        passages = kb.search(q.text)
        ranked = reading.lexical.score_sentences(q.text, passages)[: int(combiner.spec.get("candidates", 5))]
        if not ranked:
            continue
        texts = [s.text for s in ranked]
        logits = np.asarray(reading.reader.score(q.text, texts, store=reading.vectors), dtype=np.float64)
        margins = [r.margin if r is not None else NO_ANSWER for r in reading.spans.read(q.text, texts)]

        def choice(kept: list[float]) -> tuple[int, bool]:
            x = reading.features(q.text, ranked, logits, passages, kept)
            first = combiner.choose(x)
            return first, bool(combiner.probabilities(x)[first] >= combiner.threshold)

        first, answers = choice(margins)
        full_right += answers and quote_contains_answer([texts[first]], q.answers)
        for gap, row in same.items():
            near = logits >= logits.max() - gap
            c, a = choice([m if keep else NO_ANSWER for m, keep in zip(margins, near, strict=True)])
            row[0] += c == first
            row[1] += a == answers
            row[2] += int(near.sum())
            row[3] += a and quote_contains_answer([texts[c]], q.answers)
    n = len(qs)
    print(f"{n} questions; every candidate read: quote right {full_right / n:.3f}")
    print("| gap | same choice | same abstention | span reads per question | quote right |")
    print("|---|---|---|---|---|")
    for gap, (c, a, reads, right) in same.items():
        print(f"| {gap:g} | {c / n:.3f} | {a / n:.3f} | {reads / n:.2f} | {right / n:.3f} |")


if __name__ == "__main__":
    main()
