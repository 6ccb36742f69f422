"""``qa fit-combiner``: fit the combiner (:mod:`qa.answering.reading.combiner`) on the training split, choose its threshold
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
import math
import random
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from qa.answering.reading.combiner import COMBINER_FILE, FEATURES, FORMAT, RULES, first_candidates
from qa.answering.reading.reader import READER
from qa.evaluation import quote_contains_answer
from qa.training.data import Example, load_examples, other_paragraphs, sha256_of, sha256_text, split_examples, swap_name
from qa.training.retrieval import doc_id, knowledge_base


def all_features(reading: Any, question: str, ranked: list[Any], passages: list[Any]) -> np.ndarray:
    """The combiner's features of the candidates ``ranked`` with every model run (the reader, and the span model
    when it was trained with the null answer), whichever features the shipped combiner reads: what a fit may
    choose among. ``reading``: a combined-stage :class:`~qa.answering.reading.ReadingAnswerer`."""
    from qa.answering.reading.answerer import NO_ANSWER

    texts = [s.text for s in ranked]
    logits = np.asarray(reading.reader.score(question, texts), dtype=np.float64)
    spans = reading.spans
    margins = answers = None
    if spans is not None and spans.null:
        readings = spans.read(question, texts)
        margins = [r.margin if r is not None else NO_ANSWER for r in readings]
        answers = [t[r.start : r.end] if r is not None else None for t, r in zip(texts, readings, strict=True)]
    return reading.features(question, ranked, logits, passages, margins, answers)


def collect(
    kb: Any, examples: list[Example], k: int, desc: str, candidates: int, banned: Sequence[str] = ()
) -> list[dict[str, Any]]:
    """Per question and condition (``answerable`` / ``removed``): the features and labels of the lexical answerer's
    first ``candidates`` sentences (``banned``: articles never retrieved — the news set's dev part)."""
    from tqdm import tqdm

    reading = kb.answerer("extractive:combined")
    rows = []
    for ex in tqdm(examples, desc=desc, unit=" q", file=sys.stderr, mininterval=2):
        # an unanswerable question (SQuAD 2.0, a generated swap) is asked once, with everything indexed: it counts
        # with the "removed" rows (nothing should be quoted)
        for removed in (True,) if ex.impossible else (False, True):
            excluded = [doc_id(ex)] if removed and not ex.impossible else []
            passages = kb.search(ex.question, k=k, exclude=(excluded + list(banned)) or None)
            ranked = reading.lexical.score_sentences(ex.question, passages)[:candidates]
            if not ranked:
                rows.append({"id": ex.id, "removed": removed, "x": np.zeros((0, len(FEATURES))), "y": np.zeros(0)})
                continue
            x = all_features(reading, ex.question, ranked, passages)
            y = np.array([float(not ex.impossible and quote_contains_answer([s.text], ex.answers)) for s in ranked])
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
        x = all_features(reading, ex.question, ranked, passages)
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
        features=np.array(FEATURES),
    )


def used_features(drop: str) -> list[str]:
    """:data:`FEATURES` without those named in ``drop`` (comma-separated features or groups: ``reader``, ``span``)."""
    from qa.answering.reading.combiner import GROUPS

    dropped: set[str] = set()
    for name in filter(None, (n.strip() for n in drop.split(","))):
        if name not in GROUPS and name not in FEATURES:
            raise SystemExit(f"qa: error: --drop {name}: not a feature nor one of {', '.join(GROUPS)}")
        dropped.update(GROUPS.get(name, (name,)))
    kept = [f for f in FEATURES if f not in dropped and f not in RULES]
    if not kept:
        raise SystemExit("qa: error: --drop leaves no feature")
    return kept


# -- the fits (what :class:`~qa.answering.reading.combiner.Combiner` reads) -----------------------------------------
def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1.0, iterations: int = 50) -> dict[str, Any]:
    """L2-regularised logistic regression by Newton's method on standardised features: ``mean``, ``scale``,
    ``coef``, ``intercept`` (what :class:`~qa.answering.reading.combiner.Combiner` reads)."""
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale[scale < 1e-9] = 1.0
    z = np.hstack([(x - mean) / scale, np.ones((len(x), 1))])
    w = np.zeros(z.shape[1])
    penalty = np.full(z.shape[1], l2)
    penalty[-1] = 0.0  # no penalty on the intercept
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-np.clip(z @ w, -40, 40)))
        grad = z.T @ (p - y) + penalty * w
        hess = (z * (p * (1 - p))[:, None]).T @ z + np.diag(penalty + 1e-9)
        step = np.linalg.solve(hess, grad)
        w -= step
        if float(np.abs(step).max()) < 1e-8:
            break
    return {"mean": mean.tolist(), "scale": scale.tolist(), "coef": w[:-1].tolist(), "intercept": float(w[-1])}


def fit_choice(groups: list[np.ndarray], targets: list[np.ndarray], mean: Any, scale: Any, l2: float = 1.0) -> list[float]:
    """A conditional logit (softmax over each question's candidates, L2) on standardised features: which candidate
    holds the answer, given that one does. ``groups``: each question's feature matrix; ``targets``: its labels."""
    from scipy.optimize import minimize

    zs = [(g - np.asarray(mean)) / np.asarray(scale) for g in groups]
    ts = [t / t.sum() for t in targets]

    def loss(w: np.ndarray) -> tuple[float, np.ndarray]:
        total, grad = 0.5 * l2 * float(w @ w), l2 * w
        for z, t in zip(zs, ts, strict=True):
            s = z @ w
            p = np.exp(s - s.max())
            p /= p.sum()
            total -= float(t @ np.log(p + 1e-12))
            grad = grad - z.T @ (t - p)
        return total, grad

    return minimize(loss, np.zeros(zs[0].shape[1]), jac=True, method="L-BFGS-B").x.tolist()


def log_loss(p: np.ndarray, y: np.ndarray) -> float:
    p = np.clip(p, 1e-12, 1 - 1e-12)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))) if len(y) else math.nan


def _span_sha(artifact: Path) -> str:
    """The span model's weights hash (its margins are features), or "none" when the artifact has none."""
    from qa.answering.reading.span import SPAN, SPAN_MANIFEST

    return SPAN.load_manifest(artifact)["weights_sha256"] if (artifact / SPAN_MANIFEST).is_file() else "none"


def models_key(artifact: Path) -> str:
    """The reader's and the span model's weights (12 hex digits each): what the cached features were read with."""
    return f"{READER.load_manifest(artifact)['weights_sha256'][:12]}-{_span_sha(artifact)[:12]}"


def feature_caches(work: Path, k: int, models: str, collected: int, questions: int) -> tuple[Path, Path]:
    """The cached features of the first ``questions`` training questions and of the dev split, ``collected``
    candidates each, read by the models ``models`` (:func:`models_key`)."""
    return (
        work / f"features-k{k}-{models}-c{collected}-{questions}.npz",
        work / f"features-dev-k{k}-{models}-c{collected}.npz",
    )


def _load(path: Path) -> list[dict[str, Any]]:
    data = np.load(path)
    names = [str(n) for n in data["features"]] if "features" in data else None
    if data["x"].shape[1] != len(FEATURES) or (names is not None and names != list(FEATURES)):
        raise SystemExit(
            f"qa: error: {path} holds features collected by another qa ({data['x'].shape[1]} columns, this qa computes "
            f"{len(FEATURES)}): collect them again (run without --refit, or delete the file)"
        )
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
    from qa.answering.reading.combiner import Combiner

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
    combined = _picks(combiner, dev_rows)
    reader_only: list[Pick] = []
    for r in dev_rows:
        if not len(r["y"]):
            reader_only.append((-1, 0.0))
            continue
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


def _cached(path: Path, refit: bool, make: Any) -> list[dict[str, Any]]:
    """Rows cached at ``path``: read with ``refit`` when there, else collected by ``make()`` and saved."""
    if refit and path.is_file():
        return _load(path)
    rows = make()
    _save(path, rows)
    return rows


def news_examples(path: Path, part: str) -> list[Example]:
    """The hand-written news questions of ``part`` (``train`` / ``dev``) as examples: each article is its own
    paragraph (its id the key, so ``doc_id`` is the article id), the unanswerable ones ``impossible``."""
    from qa.evaluation import load_news_questions
    from qa.training.data import Paragraph

    out = []
    for q in load_news_questions(path):
        if q.split == part:
            paragraph = Paragraph(q.doc_id, q.doc_id, "", [])
            out.append(Example(q.id, q.text, paragraph, q.answers, impossible=q.kind == "unanswerable"))
    return out


def news_kb(args: argparse.Namespace) -> Any:
    """The news evaluation index (``qa eval news --index``'s: the first ``--corpus-size`` articles), built here when
    missing."""
    from tqdm import tqdm

    from qa.config import load_settings
    from qa.evaluation import load_news_articles
    from qa.kb import KnowledgeBase

    kb = KnowledgeBase.open(settings=load_settings(index_dir=Path(args.news_index).expanduser()))
    if kb.stats()["articles"] < args.corpus_size:
        articles = load_news_articles(args.news_articles, args.corpus_size)
        kb.add_articles(tqdm(articles, desc="index (news)", unit=" articles", file=sys.stderr, mininterval=1))
    return kb


def fit_combiner(args: argparse.Namespace) -> int:
    """Collect (or read from the cache) the candidates' features of each group's training and dev questions and of
    the news set's parts, fit on the training rows of ``--sources``, choose the threshold (:func:`fit_rows` on the
    PIAF dev rows, and no higher than the news set's training part allows), report each dev set."""
    started = time.time()
    work = Path(args.work_dir).expanduser()
    work.mkdir(parents=True, exist_ok=True)
    artifact = Path(args.artifact)
    reader_manifest = READER.load_manifest(artifact)
    split = reader_manifest["split"]
    dataset = load_examples([Path(d) for d in args.data], impossible=True)
    train_all, dev_all = split_examples(dataset, split["dev_share"], split["seed"])
    models = models_key(artifact)
    collected = max(args.candidates, args.collect_candidates)
    if args.refit:  # features collected for more candidates serve too (cut by first_candidates)
        collected = min(
            (n for n in range(collected, 65) if feature_caches(work, args.k, models, n, 0)[1].is_file()),
            default=collected,
        )
    kb: Any = None

    def piaf_kb() -> Any:
        nonlocal kb
        kb = kb or knowledge_base(dataset, work)
        return kb

    group_of = {f["file"]: f["group"] for f in dataset.files}
    by_group: dict[str, tuple[list[Example], list[Example]]] = {}
    for group in sorted(set(group_of.values())):
        train = [e for e in train_all if dataset.groups.get(e.paragraph.key) == group]
        dev = [e for e in dev_all if dataset.groups.get(e.paragraph.key) == group]
        random.Random(split["seed"]).shuffle(train)
        random.Random(split["seed"]).shuffle(dev)
        by_group[group] = (train[: args.train_questions], dev if group == "squad" else dev[: args.dev_questions])
    train_rows: dict[str, list[dict[str, Any]]] = {}
    dev_rows: dict[str, list[dict[str, Any]]] = {}
    only = {g.strip() for g in args.collect_only.split(",") if g.strip()}
    for group, (train, dev) in by_group.items():
        if only and group not in only:
            continue
        files = sorted(f["sha256"][:12] for f in dataset.files if f["group"] == group)
        key = "" if group == "squad" else "-" + sha256_text(":".join(files))[:10]
        cache, dev_cache = feature_caches(work, args.k, models, collected, len(train))
        cache = cache.with_name(cache.name.replace("features-", f"features{key}-"))
        dev_cache = dev_cache.with_name(dev_cache.name.replace("features-", f"features{key}-"))
        if group == "squad" and args.refit and not cache.is_file():  # a cache for fewer questions is a prefix to extend
            stem = cache.stem.rsplit("-", 1)[0]
            done = _largest_prefix(work, stem, len(train))
            if done:
                head = _load(feature_caches(work, args.k, models, collected, done)[0])
                _save(cache, head + collect(piaf_kb(), train[done:], args.k, "features (train split)", collected))
        train_rows[group] = _cached(
            cache, args.refit, lambda t=train, g=group: collect(piaf_kb(), t, args.k, f"features ({g}, train)", collected)
        )
        dev_rows[group] = _cached(
            dev_cache, args.refit, lambda d=dev, g=group: collect(piaf_kb(), d, args.k, f"features ({g}, dev)", collected)
        )
    news_rows: dict[str, list[dict[str, Any]]] = {}
    if args.news and (not only or "news" in only):
        news_path = Path(args.news)
        digest = sha256_of(news_path)[:10]
        nkb: Any = None
        dev_ids = sorted({e.paragraph.key for e in news_examples(news_path, "dev")})
        for part in ("train", "dev"):
            examples = news_examples(news_path, part)
            path = work / f"news-{part}-k{args.k}-{models}-c{collected}-{digest}.npz"

            def make(examples: list[Example] = examples, part: str = part) -> list[dict[str, Any]]:
                nonlocal nkb
                nkb = nkb or news_kb(args)
                # the train part never retrieves a dev article: what it teaches cannot come from the dev part
                return collect(nkb, examples, args.k, f"features (news, {part})", collected, dev_ids if part == "train" else ())

            news_rows[part] = _cached(path, args.refit, make)
    if only:  # another process collects the other groups; `--refit` then fits on every cache
        print(f"collected {', '.join(sorted(only))} into {work}", file=sys.stderr)
        return 0
    swapped: dict[str, list[dict[str, Any]]] = {}
    if args.swap_names and "squad" in by_group:  # the names condition, on PIAF (see collect_swapped)
        others = other_paragraphs(dataset)
        for part, examples in zip(("train", "dev"), by_group["squad"], strict=True):
            stem = "swapped" if part == "train" else "swapped-dev"
            count = f"-{len(examples)}" if part == "train" else ""
            swapped[part] = _cached(
                work / f"{stem}-k{args.k}-{models}-c{collected}{count}.npz",
                args.refit,
                lambda e=examples, p=part: collect_swapped(
                    piaf_kb(), e, args.k, f"names swapped ({p})", collected, others, split["seed"]
                ),
            )
    cut = {g: [first_candidates(r, args.candidates) for r in rows] for g, rows in train_rows.items()}
    if swapped:
        rows = [first_candidates(r, args.candidates) for r in swapped["train"]]
        cut["squad"] = cut.get("squad", []) + [r for r in rows if r["y"].max(initial=0) > 0] * args.swap_names
    dev_cut = {g: [first_candidates(r, args.candidates) for r in rows] for g, rows in dev_rows.items()}
    news_cut = {p: [first_candidates(r, args.candidates) for r in rows] for p, rows in news_rows.items()}
    sources = [s.strip() for s in args.sources.split(",") if s.strip()]
    unknown = [s for s in sources if s not in (*cut, "news")]
    if unknown:
        raise SystemExit(f"qa: error: --sources {unknown[0]}: not one of {', '.join([*cut, 'news'])}")
    fit_on = [r for g in sources if g in cut for r in cut[g]]
    if "news" in sources and "train" in news_cut:
        fit_on += news_cut["train"] * args.news_weight
    names = used_features(args.drop)
    spec, scores = fit_rows(fit_on, dev_cut.get("squad", []), names, args.l2, args.false_abstention)
    if "train" in news_cut:  # the threshold no higher than the news training part allows
        from qa.answering.reading.combiner import Combiner

        news_thr = choose_threshold(
            _answerable_confidence(news_cut["train"], _picks(Combiner(spec), news_cut["train"])), args.false_abstention
        )
        scores["threshold_piaf_dev"] = spec["threshold"]
        scores["threshold_news_train"] = round(news_thr, 6)
        spec["threshold"] = round(min(spec["threshold"], news_thr), 6)
    if swapped:
        from qa.answering.reading.combiner import Combiner

        scores["names_swapped"] = names_contrast(Combiner(spec), [first_candidates(r, args.candidates) for r in swapped["dev"]])
    scores["dev_sets"] = _dev_report(
        spec, {**{f"{g} (dev)": rows for g, rows in dev_cut.items()}, **{f"news {p}": rows for p, rows in news_cut.items()}}
    )
    y = np.concatenate([r["y"] for r in fit_on])
    spec.update(
        false_abstention_target=args.false_abstention,
        scores=scores,
        fitted_on={
            "sources": sources,
            "train_questions": {g: len(by_group[g][0]) for g in sources if g in by_group},
            "news_train_questions": len(news_rows.get("train", [])) and len({r["id"] for r in news_rows["train"]}),
            "news_weight": args.news_weight,
            "train_rows": int(len(y)),
            "positives": int(y.sum()),
            "conditions": ["with its paragraph", "its paragraph left out", "unanswerable questions (SQuAD 2.0, swapped names)"],
            "k": args.k,
        },
        candidates=args.candidates,
        reader_weights_sha256=reader_manifest["weights_sha256"],
        span_weights_sha256=_span_sha(artifact),
        data=dataset.files
        + (
            [{"file": Path(args.news).name, "sha256": sha256_of(Path(args.news)), "group": "news (hand-written)"}]
            if args.news
            else []
        ),
        split={
            "by": "article title, each group apart; the news set by its own split",
            "seed": split["seed"],
            "dev_share": split["dev_share"],
        },
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


def _picks(combiner: Any, rows: list[dict[str, Any]]) -> list[Pick]:
    out: list[Pick] = []
    for r in rows:
        if not len(r["y"]):
            out.append((-1, 0.0))
            continue
        choice = combiner.choose(r["x"])
        out.append((choice, float(combiner.confidences(r["x"])[choice])))
    return out


def _dev_report(spec: dict[str, Any], sets: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """At the chosen threshold, per row set: the combined answer's scores (quote holds the answer, false
    abstentions, abstention on the unanswerable rows) and the lexical answerer's first sentence's top-1."""
    from qa.answering.reading.combiner import Combiner

    combiner = Combiner(spec)
    out = {}
    for name, rows in sets.items():
        if not rows:
            continue
        picks = _picks(combiner, rows)
        out[name] = {
            **stage_scores(rows, picks, spec["threshold"]),
            "top1_combined": _top1(rows, picks),
            "top1_lexical": _top1(rows, [(0 if len(r["y"]) else -1, 0.0) for r in rows]),
            "answerable": sum(not r["removed"] for r in rows),
            "unanswerable": sum(r["removed"] for r in rows),
        }
    return out
