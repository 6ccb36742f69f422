"""Where the reading answerer's near-miss rule fires, and what it changes (``combiner.near_misses``).

    .venv/bin/python benchmarks/near_miss.py news-dev  [--index ~/.cache/qa/news-eval/index] [--broad]
    .venv/bin/python benchmarks/near_miss.py news-train
    .venv/bin/python benchmarks/near_miss.py piaf-dev  [--index ~/.cache/qa/piaf-eval/index]
    .venv/bin/python benchmarks/near_miss.py swapped   [--index ~/.cache/qa/combiner-fit-18/index]

For each question (``piaf-dev``: also asked with its paragraph removed) the shipped reading answerer's candidates
are read once; where the rule flags one, the combiner chooses with the rule and without it (the flag column zeroed),
and the report counts the questions it fires on, the choices it changes, and how many go from a sentence holding the
answer to one that does not and back. ``swapped`` is the names condition on PIAF's dev split
(``qa fit-combiner --swap-names``'s): the answer sentence's copy with one of the question's names swapped for
another name of its article, put after it; it reports how often the choice holds the answer with and without the
rule. ``--broad``: the rule with every preposition of ``anchor_conflict`` (« de, par, pour, sur… »), measured and
not shipped. Needs the OrangeSum and PIAF files in ../shared/data and the indexes ``qa eval`` builds.
"""

from __future__ import annotations

import argparse
import json
import os
import random
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
PIAF_FILES = [DATA / "piaf-v1.0.json", DATA / "piaf-v1.1-extra.json"]
NEWS = Path(__file__).resolve().parent / "data" / "news-questions.jsonl"
INDEX = {
    "news-dev": "~/.cache/qa/news-eval/index",
    "news-train": "~/.cache/qa/news-eval/index",
    "piaf-dev": "~/.cache/qa/piaf-eval/index",
    "swapped": "~/.cache/qa/combiner-fit-18/index",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("set", choices=sorted(INDEX))
    parser.add_argument("--index", help="the index to ask (default: the one `qa eval` / `make fit-combiner` builds)")
    parser.add_argument("--broad", action="store_true", help="every preposition of anchor_conflict opens a slot")
    parser.add_argument("--show", action="store_true", help="print each question the rule fires on")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ["QA_READER"] = "on"

    import qa.answering.reading.combiner as combiner
    from qa.config import load_settings
    from qa.kb import KnowledgeBase

    if args.broad:
        combiner.NEAR_PREPOSITIONS = combiner.SLOT_WORDS
    index = Path(args.index or INDEX[args.set]).expanduser()
    kb = KnowledgeBase.open(settings=load_settings(index_dir=index))
    col = combiner.FEATURES.index("near_miss")
    report = swapped(kb, col) if args.set == "swapped" else fired(kb, args.set, col, args.show)
    print(json.dumps({"set": args.set, "broad": args.broad, "index": str(index), **report}, ensure_ascii=False))


def _without_rule(x: np.ndarray, col: int) -> np.ndarray:
    x = x.copy()
    x[:, col] = 0.0
    return x


def fired(kb, which: str, col: int, show: bool) -> dict:
    from qa.evaluation import load_news_questions, load_squads, quote_contains_answer, split_questions

    if which == "piaf-dev":
        from qa.answering.reading.reader import READER

        articles, questions = load_squads(PIAF_FILES)
        split = READER.load_manifest()["split"]
        questions = split_questions(articles, questions, "dev", split["dev_share"], split["seed"])
        conditions = [(q, False) for q in questions] + [(q, True) for q in questions]
    else:
        part = which.split("-")[1]
        news = load_news_questions(NEWS)
        conditions = [(q, False) for q in news if q.split == part]
    banned = sorted({q.doc_id for q in load_news_questions(NEWS) if q.split == "dev"}) if which == "news-train" else []
    reading = kb.answerer()
    out = {"questions": len(conditions), "fires": 0, "changed": 0, "right_to_wrong": 0, "wrong_to_right": 0}
    for q, removed in conditions:
        passages = kb.search(q.text, k=5, exclude=([q.doc_id] if removed else []) + banned or None)
        ranked = reading.lexical.score_sentences(q.text, passages)[:5]
        if not ranked:
            continue
        _, _, x = reading.candidates(q.text, ranked, passages)
        if not (x[:, col] > 0).any():
            continue
        after, before = reading.combiner.choose(x), reading.combiner.choose(_without_rule(x, col))
        right = [not removed and bool(q.answers) and quote_contains_answer([ranked[i].text], q.answers) for i in (before, after)]
        out["fires"] += 1
        out["changed"] += before != after
        out["right_to_wrong"] += right[0] and not right[1]
        out["wrong_to_right"] += right[1] and not right[0]
        if show:
            print(json.dumps({"question": q.text, "removed": removed, "before": ranked[before].text[:160],
                              "after": ranked[after].text[:160], "right": right}, ensure_ascii=False))  # fmt: skip
    return out


def swapped(kb, col: int) -> dict:
    from qa.answering.reading import DEFAULT_ARTIFACT
    from qa.answering.reading.combiner import Combiner
    from qa.answering.reading.reader import READER
    from qa.training.combiner import collect_swapped
    from qa.training.data import load_examples, other_paragraphs, split_examples

    dataset = load_examples(PIAF_FILES, impossible=True)
    split = READER.load_manifest(DEFAULT_ARTIFACT)["split"]
    _, dev = split_examples(dataset, split["dev_share"], split["seed"])
    random.Random(0).shuffle(dev)
    rows = collect_swapped(kb, dev, 5, "swapped (dev)", 5, other_paragraphs(dataset), split["seed"])
    c = Combiner.load(DEFAULT_ARTIFACT)
    return {
        "dev_questions": len(dev),
        "swapped_rows": len(rows),
        "fires": sum(bool((r["x"][:, col] > 0).any()) for r in rows),
        "right_without_rule": round(float(np.mean([r["y"][c.choose(_without_rule(r["x"], col))] > 0 for r in rows])), 3),
        "right_with_rule": round(float(np.mean([r["y"][c.choose(r["x"])] > 0 for r in rows])), 3),
    }


if __name__ == "__main__":
    main()
