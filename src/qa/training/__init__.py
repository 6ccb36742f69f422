"""Training the reader (``qa train-reader``): data preparation (:mod:`qa.training.data`) and the trainer
(:mod:`qa.training.trainer`). Needs torch and transformers; nothing here is imported on the query path."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

DEFAULT_DATA = ("../shared/data/piaf-v1.0.json", "../shared/data/piaf-v1.1-extra.json")

__all__ = ["DEFAULT_DATA", "add_arguments", "add_combiner_arguments", "cmd_fit_combiner", "cmd_train_reader"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``qa train-reader``."""
    p.add_argument(
        "data",
        nargs="*",
        default=list(DEFAULT_DATA),
        help="SQuAD-format files (default: PIAF v1.0 + v1.1-extra in ../shared/data)",
    )
    from qa.answering.reading.finetuned import DEFAULT_ARTIFACT

    p.add_argument("--out", default=str(DEFAULT_ARTIFACT), help="artifact folder (default: the package's own, %(default)s)")
    p.add_argument("--work-dir", default="~/.cache/qa/reader-train", help="checkpoints (default: ~/.cache/qa/reader-train)")
    p.add_argument("--cache-dir", default="~/.cache/qa/models", help="where the offline e5 folder is (rebuilt if missing)")
    p.add_argument("--model", default="multilingual-e5-small", help="base model (the offline e5-small)")
    p.add_argument(
        "--kind",
        choices=("bi", "cross"),
        default="bi",
        help="bi-encoder (e5 cosine, tuned; the shipped one) or cross-encoder (pairs); default bi",
    )
    p.add_argument("--layers", type=int, default=6, help="how many top layers to train (the rest stays e5's; default 6)")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument(
        "--max-steps",
        type=int,
        default=700,
        help="length of the schedule in steps (default 700 = 2,800 questions; 0: all epochs)",
    )
    p.add_argument("--lr", type=float, default=3e-5, help="learning rate of the layers (default 3e-5)")
    p.add_argument("--head-lr", type=float, default=1e-3, help="learning rate of the head (default 1e-3)")
    p.add_argument("--questions-per-step", type=int, default=4)
    p.add_argument("--neg-same", type=int, default=5, help="negatives from the question's paragraph (default 5)")
    p.add_argument("--neg-other", type=int, default=2, help="negatives from other paragraphs of its article (default 2)")
    p.add_argument(
        "--neg-hard",
        type=int,
        default=0,
        help="hard negatives: sentences the product's own retrieval and lexical ranking put first for the question "
        "that do not hold its answer (mined once into --mine-dir; default 0)",
    )
    p.add_argument(
        "--mine-dir",
        default="~/.cache/qa/combiner-fit",
        help="where the PIAF paragraphs are indexed for --neg-hard (shared with qa fit-combiner)",
    )
    p.add_argument("--bce-weight", type=float, default=0.5, help="weight of the pointwise loss (the no-answer signal)")
    p.add_argument("--dev-share", type=float, default=0.15, help="share of articles held out for dev (default 0.15)")
    p.add_argument("--seed", type=int, default=13)
    p.add_argument("--budget-min", type=float, default=0, help="stop training after this many minutes (0: no limit)")
    p.add_argument("--checkpoint-min", type=float, default=5, help="write a checkpoint this often (minutes)")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint in --work-dir")
    p.add_argument("--limit", type=int, default=0, help="train on the first N training questions only (smoke tests)")
    p.add_argument("--dev-limit", type=int, default=0, help="evaluate on the first N dev questions only")
    p.add_argument(
        "--mix",
        default="",
        help="shares of the data groups in training, e.g. squad=0.5,generated=0.35,squad2=0.15 (squad: PIAF and other "
        "SQuAD 1.1 files, generated: qa gen-news, squad2: SQuAD 2.0); default: every question once, shuffled",
    )
    p.add_argument(
        "--dev-groups", default="squad", help="the groups whose dev split is evaluated (default squad: PIAF's dev split)"
    )
    p.add_argument("--dev-hits", default="", help="write per-question dev hits (JSON) here")
    p.add_argument("--no-artifact", action="store_true", help="evaluate only, do not write --out")
    p.add_argument("-q", "--quiet", action="store_true")


def cmd_train_reader(args: argparse.Namespace) -> int:
    from qa.training.trainer import train_reader

    argv = sys.argv[sys.argv.index("train-reader") + 1 :] if "train-reader" in sys.argv else None
    args.argv = argv
    missing = [d for d in args.data if not Path(d).is_file()]
    if missing:
        print(f"qa: error: no such data file: {', '.join(missing)}", file=sys.stderr)
        return 1
    return train_reader(args)


def add_combiner_arguments(p: argparse.ArgumentParser) -> None:
    """``qa fit-combiner`` (:mod:`qa.training.combiner`)."""
    p.add_argument("data", nargs="*", default=list(DEFAULT_DATA), help="SQuAD-format files (default: the PIAF files)")
    from qa.answering.reading.finetuned import DEFAULT_ARTIFACT

    p.add_argument("--artifact", default=str(DEFAULT_ARTIFACT), help="the reader artifact folder (default: the package's own)")
    p.add_argument("--work-dir", default="~/.cache/qa/combiner-fit", help="its index and feature cache")
    p.add_argument("-k", type=int, default=5, help="passages per question, as `qa ask` (default 5)")
    p.add_argument("--train-questions", type=int, default=1500, help="training questions sampled (default 1500)")
    p.add_argument(
        "--false-abstention", type=float, default=0.075, help="the dev false-abstention rate the threshold aims at (0.075)"
    )
    p.add_argument("--candidates", type=int, default=8, help="the lexical answerer's best sentences the reader reads (default 8)")
    p.add_argument(
        "--collect-candidates", type=int, default=0, help="collect features for more (to compare --candidates on --refit)"
    )
    p.add_argument(
        "--swap-names",
        type=int,
        default=0,
        help="N: also fit on the names condition (answer sentence + its copy naming another place or person), "
        "each such question counted N times (default 0: not collected)",
    )
    p.add_argument("--dev-questions", type=int, default=300, help="dev questions per group other than PIAF's (default 300)")
    p.add_argument(
        "--sources",
        default="squad,generated,squad2,news",
        help="whose training rows the combiner is fitted on: squad (PIAF), generated (qa gen-news), squad2, news "
        "(the hand-written set's training part); default all",
    )
    p.add_argument("--news", default="", help="the news question set (JSONL): its training part is fitted on, and "
                   "the threshold is no higher than it allows; its dev part is only reported")  # fmt: skip
    p.add_argument("--news-weight", type=int, default=3, help="how many times the news training rows count (default 3)")
    p.add_argument("--news-index", default="~/.cache/qa/news-eval/index", help="the news corpus index (qa eval news --index)")
    p.add_argument("--news-articles", default="../shared/data/orangesum-12k.jsonl.gz", help="the articles of the news set")
    p.add_argument("--corpus-size", type=int, default=2000, help="the news corpus: the first N articles (default 2000)")
    p.add_argument("--drop", default="", help="features not to use, comma-separated (or a group: reader, span)")
    p.add_argument("--l2", type=float, default=1.0, help="L2 penalty of the logistic regression (default 1)")
    p.add_argument("--refit", action="store_true", help="refit from the cached features")
    p.add_argument(
        "--collect-only",
        default="",
        help="only collect these groups' features (e.g. squad, or generated,squad2,news) and stop: several processes "
        "collect side by side, then --refit fits on all the caches",
    )
    p.add_argument("--no-artifact", action="store_true", help="report only, do not write combiner.json")


def cmd_fit_combiner(args: argparse.Namespace) -> int:
    from qa.training.combiner import fit_combiner

    args.argv = sys.argv[sys.argv.index("fit-combiner") + 1 :] if "fit-combiner" in sys.argv else None
    missing = [d for d in args.data if not Path(d).is_file()]
    if missing:
        print(f"qa: error: no such data file: {', '.join(missing)}", file=sys.stderr)
        return 1
    return fit_combiner(args)
