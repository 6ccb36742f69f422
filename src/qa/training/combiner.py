"""``qa fit-combiner``: fit the combiner (:mod:`qa.answering.combiner`) on the training split, choose its threshold
on the dev split.

The candidates are the product's own: every PIAF paragraph of the data files is indexed (a knowledge base in
``--work-dir``, the real embedding model), each question retrieves its ``k`` passages as ``qa ask`` does, twice —
with its paragraph, and with its paragraph left out (``exclude``: the unanswerable case the product meets) — and the
reading answerer's candidates get their features (the reader's logit, the lexical scores, the passage's rank) and a
label (does the sentence hold a gold answer, compared like ``qa eval``'s quote metric). A logistic regression is
fitted on the training-split rows; on the dev split (whole articles never seen in training, the reader's own split)
the abstention threshold is the highest that keeps false abstentions at or under ``--false-abstention``, and the
sentence choice of each stage (lexical, reader, combined) is measured. Features are cached in ``--work-dir``
(``--refit`` refits from them in seconds).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from qa.answering.combiner import COMBINER_FILE, FEATURES, FORMAT, first_candidates, fit_choice, fit_logistic, log_loss
from qa.answering.reader import load_manifest
from qa.evaluation import quote_contains_answer
from qa.training.data import Example, load_examples, other_paragraphs, split_examples, swap_name
from qa.training.retrieval import doc_id, knowledge_base


def collect(kb: Any, examples: list[Example], k: int, desc: str, candidates: int) -> list[dict[str, Any]]:
    """Per question and condition (``answerable`` / ``removed``): the features and labels of the lexical answerer's
    first ``candidates`` sentences."""
    from tqdm import tqdm

    reading = kb.answerer("extractive:combined")
    rows = []
    for ex in tqdm(examples, desc=desc, unit=" q", file=sys.stderr, mininterval=2):
        for removed in (False, True):
            passages = kb.search(ex.question, k=k, exclude=[doc_id(ex)] if removed else None)
            ranked = reading.lexical.score_sentences(ex.question, passages)[:candidates]
            if not ranked:
                rows.append({"id": ex.id, "removed": removed, "x": np.zeros((0, len(FEATURES))), "y": np.zeros(0)})
                continue
            _, _, x = reading.candidates(ex.question, ranked, passages, every=True)
            y = np.array([float(quote_contains_answer([s.text], ex.answers)) for s in ranked])
            rows.append({"id": ex.id, "removed": removed, "x": x, "y": y})
    return rows


def collect_swapped(
    kb: Any, examples: list[Example], k: int, desc: str, candidates: int, others: dict[str, list[Any]], seed: int
) -> list[dict[str, Any]]:
    """The names condition (``--swap-names``): per question whose candidates hold its answer in a sentence that
    names one of the question's names, that sentence's copy with the name swapped for another name of its article
    (:func:`qa.training.data.swap_name`: « … à Almaty » → « … à Bruxelles ») is put right after it in its passage,
    and the candidates are ranked and read again; the copy is labelled 0 (it answers another question), so the
    combiner sees the seed trap's kind of near miss, which PIAF's own candidates almost never show."""
    from dataclasses import replace

    from tqdm import tqdm

    reading = kb.answerer("extractive:combined")
    rng = random.Random(seed)
    rows = []
    for ex in tqdm(examples, desc=desc, unit=" q", file=sys.stderr, mininterval=2):
        passages = kb.search(ex.question, k=k)
        ranked = reading.lexical.score_sentences(ex.question, passages)[:candidates]
        swapped = None
        for s in ranked:
            if quote_contains_answer([s.text], ex.answers):
                swapped = swap_name(ex, s.text, others.get(ex.paragraph.key, []), rng)
                if swapped:
                    break
        if not swapped:
            continue
        p = passages[s.passage_index]
        passages[s.passage_index] = replace(p, text=p.text[: s.end] + " " + swapped + p.text[s.end :])
        ranked = reading.lexical.score_sentences(ex.question, passages)[:candidates]
        if not any(r.text == swapped for r in ranked):
            continue
        _, _, x = reading.candidates(ex.question, ranked, passages, every=True)
        y = np.array([float(r.text != swapped and quote_contains_answer([r.text], ex.answers)) for r in ranked])
        rows.append({"id": ex.id, "removed": False, "x": x, "y": y})
    return rows


def _save(path: Path, rows: list[dict[str, Any]]) -> None:
    np.savez_compressed(
        path,
        ids=np.array([r["id"] for r in rows]),
        removed=np.array([r["removed"] for r in rows]),
        sizes=np.array([len(r["y"]) for r in rows]),
        x=np.vstack([r["x"] for r in rows]) if rows else np.zeros((0, len(FEATURES))),
        y=np.concatenate([r["y"] for r in rows]) if rows else np.zeros(0),
    )


def used_features(drop: str) -> list[str]:
    """:data:`FEATURES` without those named in ``drop`` (comma-separated features or groups: ``reader``, ``span``)."""
    from qa.answering.combiner import GROUPS

    dropped: set[str] = set()
    for name in filter(None, (n.strip() for n in drop.split(","))):
        if name not in GROUPS and name not in FEATURES:
            raise SystemExit(f"qa: error: --drop {name}: not a feature nor one of {', '.join(GROUPS)}")
        dropped.update(GROUPS.get(name, (name,)))
    kept = [f for f in FEATURES if f not in dropped]
    if not kept:
        raise SystemExit("qa: error: --drop leaves no feature")
    return kept


def _span_sha(artifact: Path) -> str:
    """The span model's weights hash (its margins are features), or "none" when the artifact has none."""
    from qa.answering.span_reader import SPAN_MANIFEST, load_span_manifest

    return load_span_manifest(artifact)["weights_sha256"] if (artifact / SPAN_MANIFEST).is_file() else "none"


def models_key(artifact: Path) -> str:
    """The reader's and the span model's weights (12 hex digits each): what the cached features were read with."""
    return f"{load_manifest(artifact)['weights_sha256'][:12]}-{_span_sha(artifact)[:12]}"


def feature_caches(work: Path, k: int, models: str, collected: int, questions: int) -> tuple[Path, Path]:
    """The cached features of the first ``questions`` training questions and of the dev split, ``collected``
    candidates each, read by the models ``models`` (:func:`models_key`)."""
    return (
        work / f"features-k{k}-{models}-c{collected}-{questions}.npz",
        work / f"features-dev-k{k}-{models}-c{collected}.npz",
    )


def _load(path: Path) -> list[dict[str, Any]]:
    data = np.load(path)
    rows, at = [], 0
    for qid, removed, size in zip(data["ids"], data["removed"], data["sizes"], strict=True):
        rows.append({"id": str(qid), "removed": bool(removed), "x": data["x"][at : at + size], "y": data["y"][at : at + size]})
        at += size
    return rows


def _largest_prefix(work: Path, stem: str, limit: int) -> int:
    """The most training questions (under ``limit``) whose features ``work`` holds as ``<stem>-<count>.npz``."""
    counts = [int(p.stem.rsplit("-", 1)[1]) for p in work.glob(f"{stem}-*.npz") if p.stem.rsplit("-", 1)[1].isdigit()]
    return max((c for c in counts if c < limit), default=0)


def choose_threshold(answerable_confidence: list[float], target: float) -> float:
    """The highest threshold whose false-abstention rate (answerable questions below it) stays ``<= target``."""
    ordered = sorted(answerable_confidence)
    allowed = int(target * len(ordered))  # this many may fall below
    return float(ordered[allowed]) if ordered else 0.5


Pick = tuple[int, float]
"""A stage's choice for one question and condition: the candidate quoted (-1: none) and its confidence."""


def stage_scores(rows: list[dict[str, Any]], picks: list[Pick], threshold: float) -> dict[str, float]:
    """Top-1 hit rate (end to end: an abstention is a miss), false abstentions, abstention when removed."""
    hits, abstain_answerable, abstain_removed, n_a, n_r = 0.0, 0, 0, 0, 0
    for row, (best, confidence) in zip(rows, picks, strict=True):
        confident = best >= 0 and confidence >= threshold
        if row["removed"]:
            n_r += 1
            abstain_removed += not confident
        else:
            n_a += 1
            abstain_answerable += not confident
            hits += float(confident and row["y"][best] > 0)
    return {
        "quote_contains_answer": round(hits / max(n_a, 1), 4),
        "false_abstention_rate": round(abstain_answerable / max(n_a, 1), 4),
        "unanswerable_abstention_rate": round(abstain_removed / max(n_r, 1), 4),
    }


def _top1(rows: list[dict[str, Any]], picks: list[Pick]) -> float:
    answerable = [(r, b) for r, (b, _) in zip(rows, picks, strict=True) if not r["removed"]]
    return round(sum(float(b >= 0 and r["y"][b] > 0) for r, b in answerable) / max(len(answerable), 1), 4)


def _answerable_confidence(rows: list[dict[str, Any]], picks: list[Pick]) -> list[float]:
    return [c if b >= 0 else 0.0 for r, (b, c) in zip(rows, picks, strict=True) if not r["removed"]]


def names_contrast(combiner: Any, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """On the names condition (:func:`collect_swapped`): how often the combiner's choice holds the answer (not the
    copy naming someone or somewhere else, nor another wrong candidate); the lexical answerer's first alongside."""
    rows = [r for r in rows if r["y"].max(initial=0) > 0]
    chosen = [combiner.choose(r["x"]) for r in rows]
    n = max(len(rows), 1)
    return {
        "questions": len(rows),
        "combined_right": round(sum(float(r["y"][c] > 0) for r, c in zip(rows, chosen, strict=True)) / n, 4),
        "lexical_right": round(sum(float(r["y"][0] > 0) for r in rows) / n, 4),
    }


def fit_rows(
    train_rows: list[dict[str, Any]], dev_rows: list[dict[str, Any]], names: list[str], l2: float, false_abstention: float
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The combiner fitted on ``train_rows`` over the features ``names`` (the pointwise logistic regression and the
    listwise choice model), its thresholds chosen on ``dev_rows``: ``(spec, scores)``, the scores of each stage on
    the dev rows (lexical first sentence, the reader alone, combined)."""
    from qa.answering.combiner import Combiner

    columns = [FEATURES.index(n) for n in names]
    x = np.vstack([r["x"] for r in train_rows])
    y = np.concatenate([r["y"] for r in train_rows])
    model = fit_logistic(x[:, columns], y, l2=l2)
    answerable_rows = [r for r in train_rows if not r["removed"] and r["y"].max(initial=0) > 0]
    model["choice_coef"] = fit_choice(
        [r["x"][:, columns] for r in answerable_rows], [r["y"] for r in answerable_rows], model["mean"], model["scale"], l2=l2
    )
    spec: dict[str, Any] = {"format": FORMAT, "features": list(names), **model, "threshold": 0.5}
    combiner = Combiner(spec)
    combined: list[Pick] = []
    reader_only: list[Pick] = []
    for r in dev_rows:
        if not len(r["y"]):
            combined.append((-1, 0.0))
            reader_only.append((-1, 0.0))
            continue
        choice = combiner.choose(r["x"])
        combined.append((choice, float(combiner.probabilities(r["x"])[choice])))
        logit = r["x"][:, FEATURES.index("reader_logit")]
        best = int(np.argmax(logit))
        reader_only.append((best, float(1.0 / (1.0 + np.exp(-logit[best])))))
    lexical: list[Pick] = [(0 if len(r["y"]) else -1, 0.0) for r in dev_rows]  # the lexical answerer's first
    answerable = [r for r in dev_rows if not r["removed"]]
    thr = choose_threshold(_answerable_confidence(dev_rows, combined), false_abstention)
    reader_thr = choose_threshold(_answerable_confidence(dev_rows, reader_only), false_abstention)
    spec["threshold"] = round(thr, 6)
    spec["reader_threshold"] = round(reader_thr, 6)
    dev_x = np.vstack([r["x"] for r in dev_rows])
    dev_y = np.concatenate([r["y"] for r in dev_rows])
    scores: dict[str, Any] = {
        "dev_questions": len(answerable),
        "candidates_hold_answer": round(sum(float(r["y"].max(initial=0) > 0) for r in answerable) / max(len(answerable), 1), 4),
        "top1": {
            "lexical": _top1(dev_rows, lexical),
            "reader": _top1(dev_rows, reader_only),
            "combined": _top1(dev_rows, combined),
        },
        "reader_at_threshold": stage_scores(dev_rows, reader_only, reader_thr),
        "combined_at_threshold": stage_scores(dev_rows, combined, thr),
        "dev_log_loss": round(log_loss(combiner.probabilities(dev_x), dev_y), 4),
        "train_log_loss": round(log_loss(combiner.probabilities(x), y), 4),
    }
    return spec, scores


def fit_combiner(args: argparse.Namespace) -> int:
    started = time.time()
    work = Path(args.work_dir).expanduser()
    work.mkdir(parents=True, exist_ok=True)
    artifact = Path(args.artifact)
    reader_manifest = load_manifest(artifact)
    split = reader_manifest["split"]
    dataset = load_examples([Path(d) for d in args.data])
    train, dev = split_examples(dataset, split["dev_share"], split["seed"])
    random.Random(split["seed"]).shuffle(train)
    train = train[: args.train_questions]
    span_sha = _span_sha(artifact)
    models = models_key(artifact)
    collected = max(args.candidates, args.collect_candidates)
    if args.refit:  # features collected for more candidates serve too (cut by first_candidates)
        collected = min(
            (n for n in range(collected, 65) if feature_caches(work, args.k, models, n, 0)[1].is_file()),
            default=collected,
        )
    cache, dev_cache = feature_caches(work, args.k, models, collected, len(train))
    stem = cache.stem.rsplit("-", 1)[0]
    kb: Any = None
    if args.refit and cache.is_file():
        train_rows = _load(cache)
    else:  # the questions are always drawn in the same order: a cache for fewer of them is a prefix to extend
        done = _largest_prefix(work, stem, len(train)) if args.refit else 0
        train_rows = _load(feature_caches(work, args.k, models, collected, done)[0]) if done else []
        kb = knowledge_base(dataset, work)
        train_rows += collect(kb, train[done:], args.k, "features (train split)", collected)
        _save(cache, train_rows)
    if args.refit and dev_cache.is_file():
        dev_rows = _load(dev_cache)
    else:
        kb = kb or knowledge_base(dataset, work)
        dev_rows = collect(kb, dev, args.k, "features (dev split)", collected)
        _save(dev_cache, dev_rows)
    train_swapped: list[dict[str, Any]] = []
    dev_swapped: list[dict[str, Any]] = []
    if args.swap_names:
        swap_cache = work / f"swapped-k{args.k}-{models}-c{collected}-{len(train)}.npz"
        swap_dev_cache = work / f"swapped-dev-k{args.k}-{models}-c{collected}.npz"
        if args.refit and swap_cache.is_file() and swap_dev_cache.is_file():
            train_swapped, dev_swapped = _load(swap_cache), _load(swap_dev_cache)
        else:
            kb = kb or knowledge_base(dataset, work)
            others = other_paragraphs(dataset)
            train_swapped = collect_swapped(kb, train, args.k, "names swapped (train split)", collected, others, split["seed"])
            _save(swap_cache, train_swapped)
            dev_swapped = collect_swapped(kb, dev, args.k, "names swapped (dev split)", collected, others, split["seed"])
            _save(swap_dev_cache, dev_swapped)
    train_rows = [first_candidates(r, args.candidates) for r in train_rows]
    dev_rows = [first_candidates(r, args.candidates) for r in dev_rows]
    dev_swapped = [first_candidates(r, args.candidates) for r in dev_swapped]
    train_swapped = [first_candidates(r, args.candidates) for r in train_swapped]
    train_rows += [r for r in train_swapped if r["y"].max(initial=0) > 0] * args.swap_names
    names = used_features(args.drop)
    spec, scores = fit_rows(train_rows, dev_rows, names, args.l2, args.false_abstention)
    y = np.concatenate([r["y"] for r in train_rows])
    if dev_swapped:
        from qa.answering.combiner import Combiner

        scores["names_swapped"] = names_contrast(Combiner(spec), dev_swapped)
    spec.update(
        false_abstention_target=args.false_abstention,
        scores=scores,
        fitted_on={
            "train_questions": len(train),
            "train_rows": int(len(y)),
            "positives": int(y.sum()),
            "conditions": ["with its paragraph", "its paragraph left out"],
            "k": args.k,
        },
        candidates=args.candidates,
        reader_weights_sha256=reader_manifest["weights_sha256"],
        span_weights_sha256=span_sha,
        data=dataset.files,
        split={"by": "article title", "seed": split["seed"], "dev_share": split["dev_share"]},
        command="qa fit-combiner " + " ".join(getattr(args, "argv", None) or []),
        seconds=round(time.time() - started, 1),
        created=dt.date.today().isoformat(),
    )
    print(
        json.dumps(
            {
                "threshold": spec["threshold"],
                "coef": dict(zip(names, np.round(spec["coef"], 3).tolist(), strict=True)),
                "choice_coef": dict(zip(names, np.round(spec["choice_coef"], 3).tolist(), strict=True)),
                **scores,
            },
            indent=2,
        )
    )
    if not args.no_artifact:
        (artifact / COMBINER_FILE).write_text(json.dumps(spec, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        print(f"wrote {artifact / COMBINER_FILE}", file=sys.stderr)
    return 0
