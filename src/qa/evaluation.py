"""Evaluation on SQuAD-format data (PIAF, FQuAD, SQuAD): each paragraph is one
article, each question's gold article is its paragraph; and on the hand-written news
question set (``benchmarks/data/news-questions.jsonl``): questions over OrangeSum articles,
some of them near-miss traps, some unanswerable from the corpus.
"""

from __future__ import annotations

import json
import re
import time
import unicodedata
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qa.documents import Article
from qa.errors import DocumentError


@dataclass
class Question:
    id: str
    text: str
    doc_id: str
    """The paragraph (article) that holds the answer."""
    answers: list[str] = field(default_factory=list)
    kind: str = "plain"
    """``plain``, ``near-miss`` (another sentence states the same thing of another date, place, person or
    figure: ``trap``) or ``unanswerable`` (no article of the corpus gives the fact: no answers)."""
    trap: str = ""
    split: str = ""
    """``train`` or ``dev`` (the news set is split by article: :func:`news_split`)."""


NEWS_KINDS = ("plain", "near-miss", "unanswerable")
NEWS_DEV_SHARE = 0.5
NEWS_SEED = 21


def news_split(article_id: str, dev_share: float = NEWS_DEV_SHARE, seed: int = NEWS_SEED) -> str:
    """``dev`` or ``train`` for an article, from a hash of its id: every question of an article is on the same
    side, and an article keeps its side whatever else the set holds."""
    import hashlib

    digest = hashlib.sha256(f"{seed}:{article_id}".encode()).digest()
    return "dev" if int.from_bytes(digest[:8], "big") / 2**64 < dev_share else "train"


def load_news_questions(path: str | Path) -> list[Question]:
    """The news question set: one JSON object per line (``id``, ``question``, ``article``, ``kind``, ``answers``
    as ``[{"text", "start"}]``, ``trap`` for near misses); ``split`` from :func:`news_split` unless given."""
    questions: list[Question] = []
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise DocumentError(
            str(path), f"cannot read the question set ({exc.strerror}): give the news-questions JSONL file"
        ) from None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            q = json.loads(line)
            kind = q.get("kind", "plain")
            if kind not in NEWS_KINDS:
                raise ValueError(f"'kind' must be one of {', '.join(NEWS_KINDS)}")
            answers = [a["text"] if isinstance(a, dict) else str(a) for a in q.get("answers", [])]
            if (kind == "unanswerable") == bool(answers):
                raise ValueError("an unanswerable question has no answers, the others at least one")
            trap = q.get("trap") or ""
            questions.append(
                Question(
                    id=str(q["id"]),
                    text=str(q["question"]),
                    doc_id=str(q["article"]),
                    answers=answers,
                    kind=kind,
                    trap=trap.get("text", "") if isinstance(trap, dict) else str(trap),
                    split=q.get("split") or news_split(str(q["article"])),
                )
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            message = f"missing field {exc}" if isinstance(exc, KeyError) else str(exc)
            raise DocumentError(str(path), f"not a news question ({message}): fix the line", n) from None
    return questions


def load_news_articles(path: str | Path, limit: int = 0, ids: set[str] | None = None) -> list[Article]:
    """The first ``limit`` articles (0: all) of a ``qa ingest`` JSONL file, gzipped or not, as ``qa ingest`` reads
    them (same ids, text and metadata: an index built by ``qa ingest`` from the same lines is reused as is); with
    ``ids``, also every later article whose id is in it."""
    import gzip

    from qa.documents import parse_jsonl_record

    articles: list[Article] = []
    opener = gzip.open if str(path).endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8") as fh:
            for n, line in enumerate(fh, 1):
                if limit and len(articles) >= limit and not ids:
                    break
                if not line.strip():
                    continue
                record = json.loads(line)
                if limit and n > limit and str(record.get("id")) not in (ids or set()):
                    continue
                articles.append(parse_jsonl_record(record, str(path), n))
    except OSError as exc:
        raise DocumentError(str(path), f"cannot read the articles ({exc}): give the orangesum JSONL(.gz) file") from None
    except ValueError as exc:
        raise DocumentError(str(path), f"not JSON Lines ({exc})") from None
    return articles


def load_squad(path: str | Path, prefix: str = "") -> tuple[list[Article], list[Question]]:
    """Paragraphs as articles (id ``<prefix><article>-<paragraph>``, title = the page title) and their questions."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        entries = data["data"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DocumentError(str(path), f"not a SQuAD-format JSON file ({exc}): expected {{'data': [...]}}") from None
    articles: list[Article] = []
    questions: list[Question] = []
    for i, entry in enumerate(entries):
        for j, paragraph in enumerate(entry.get("paragraphs", [])):
            doc_id = f"{prefix}{i}-{j}"
            articles.append(Article(id=doc_id, text=paragraph["context"], title=entry.get("title", ""), source="squad"))
            for qa in paragraph.get("qas", []):
                if qa.get("is_impossible"):
                    continue
                questions.append(Question(str(qa["id"]), qa["question"], doc_id, [a["text"] for a in qa.get("answers", [])]))
    return articles, questions


def load_squads(paths: Sequence[str | Path]) -> tuple[list[Article], list[Question]]:
    """Several files together: ids ``<file index>-<article>-<paragraph>`` (one file: :func:`load_squad`'s ids)."""
    if len(paths) == 1:
        return load_squad(paths[0])
    articles: list[Article] = []
    questions: list[Question] = []
    for fi, path in enumerate(paths):
        a, q = load_squad(path, prefix=f"{fi}-")
        articles += a
        questions += q
    return articles, questions


def split_titles(titles: Sequence[str], dev_share: float, seed: int) -> tuple[set[str], set[str]]:
    """``(train, dev)`` article titles: a fixed-seed shuffle of the sorted distinct titles, the first share is dev
    (the reader's split: ``qa train-reader`` holds these dev articles out of training)."""
    import random

    distinct = sorted(set(titles))
    random.Random(seed).shuffle(distinct)
    n_dev = max(1, round(len(distinct) * dev_share)) if distinct else 0
    return set(distinct[n_dev:]), set(distinct[:n_dev])


def split_questions(
    articles: Sequence[Article], questions: Sequence[Question], split: str, dev_share: float, seed: int
) -> list[Question]:
    """The questions of the ``train`` or ``dev`` articles (by title), or all of them (``all``)."""
    if split == "all":
        return list(questions)
    train, dev = split_titles([a.title or "" for a in articles], dev_share, seed)
    keep = dev if split == "dev" else train
    title_of = {a.id: a.title or "" for a in articles}
    return [q for q in questions if title_of.get(q.doc_id) in keep]


def first_relevant_rank(retrieved_doc_ids: Sequence[str], gold: str) -> int | None:
    """1-based rank of ``gold`` among the distinct retrieved articles, or None."""
    seen: list[str] = []
    for doc_id in retrieved_doc_ids:
        if doc_id not in seen:
            seen.append(doc_id)
            if doc_id == gold:
                return len(seen)
    return None


def recall_at(ranks: Sequence[int | None], k: int) -> float:
    """Share of questions whose gold article is in the top ``k``."""
    return sum(1 for r in ranks if r is not None and r <= k) / len(ranks) if ranks else 0.0


def mrr_at(ranks: Sequence[int | None], k: int = 10) -> float:
    """Mean reciprocal rank, counting only ranks up to ``k``."""
    return sum(1.0 / r for r in ranks if r is not None and r <= k) / len(ranks) if ranks else 0.0


# -- answers -----------------------------------------------------------------------------
_ELIDED_ARTICLES = re.compile(r"\b(?:l|d)['’]", re.IGNORECASE)
_ARTICLES = re.compile(r"\b(?:le|la|les|un|une|des|du|de)\b")
_PUNCT = re.compile(r"[^\w\s]")


def normalize_answer(text: str) -> str:
    """SQuAD normalisation adapted to French: lower case, no punctuation, no articles
    (le, la, les, l', un, une, des, du, de), single spaces."""
    text = unicodedata.normalize("NFC", text.lower())
    text = _ELIDED_ARTICLES.sub(" ", text)
    text = _PUNCT.sub(" ", text)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(prediction: str, golds: Sequence[str]) -> float:
    """1.0 if the normalised prediction equals a normalised gold answer."""
    p = normalize_answer(prediction)
    return float(any(p == normalize_answer(g) for g in golds))


def f1_score(prediction: str, golds: Sequence[str]) -> float:
    """The best token-overlap F1 between the prediction and a gold answer."""
    p_tokens = normalize_answer(prediction).split()
    best = 0.0
    for gold in golds:
        g_tokens = normalize_answer(gold).split()
        if not p_tokens or not g_tokens:
            best = max(best, float(p_tokens == g_tokens))
            continue
        common = Counter(p_tokens) & Counter(g_tokens)
        same = sum(common.values())
        if same:
            precision, recall = same / len(p_tokens), same / len(g_tokens)
            best = max(best, 2 * precision * recall / (precision + recall))
    return best


def quote_contains_answer(quotes: Sequence[str], golds: Sequence[str]) -> bool:
    """Does a cited quote contain a gold answer (compared normalised)?"""
    normalised = [f" {normalize_answer(q)} " for q in quotes]
    return any(f" {normalize_answer(g)} " in q for g in golds if normalize_answer(g) for q in normalised)


# -- the whole evaluation ------------------------------------------------------------------
def _percentile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)


def evaluate_squad(
    kb: Any,
    questions: Sequence[Question],
    *,
    k: int = 5,
    modes: Sequence[str] = ("hybrid",),
    answers: bool = True,
    unanswerable: bool = False,
    answerer: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Retrieval (per mode), answers and abstention metrics of ``kb`` on ``questions``.

    The index must already hold the questions' paragraphs as articles (ids as in
    :func:`load_squad`). Unanswerable questions are the same questions asked with
    their own paragraph left out (``exclude``), so nothing is re-indexed.
    """
    from tqdm import tqdm

    from qa.answering.questions import question_type

    depth = 20
    result: dict[str, Any] = {"questions": len(questions), "k": k, "retrieval": {}, "recall_curve": {}}
    types = [question_type(q.text) for q in questions]
    for mode in modes:
        ranks: list[int | None] = []
        latencies: list[float] = []
        for q in tqdm(questions, desc=f"search ({mode})", unit=" q", disable=not progress):
            t = time.perf_counter()
            hits = kb.search(q.text, k=depth, mode=mode)
            latencies.append((time.perf_counter() - t) * 1000)
            ranks.append(first_relevant_rank([h.doc_id for h in hits], q.doc_id))
        result["retrieval"][mode] = {
            "recall@1": round(recall_at(ranks, 1), 4),
            "recall@5": round(recall_at(ranks, 5), 4),
            "recall@10": round(recall_at(ranks, 10), 4),
            "mrr@10": round(mrr_at(ranks, 10), 4),
            "search_ms_p50": _percentile(latencies, 0.5),
            "search_ms_p95": _percentile(latencies, 0.95),
        }
        result["recall_curve"][mode] = [round(recall_at(ranks, i), 4) for i in range(1, depth + 1)]
        if mode == modes[0]:
            by_type: dict[str, list[int | None]] = {}
            for t_, r in zip(types, ranks, strict=True):
                by_type.setdefault(t_, []).append(r)
            result["by_type"] = {t_: {"questions": len(r), "recall@5": round(recall_at(r, 5), 4)} for t_, r in by_type.items()}

    if answers:
        quote_hits, ems, f1s, abstained, latencies = [], [], [], [], []
        confident: list[tuple[float, float]] = []
        per_type: dict[str, list[tuple[float, float]]] = {}
        for q, qtype in tqdm(list(zip(questions, types, strict=True)), desc="ask", unit=" q", disable=not progress):
            t = time.perf_counter()
            answer = kb.ask(q.text, k=k, answerer=answerer)
            latencies.append((time.perf_counter() - t) * 1000)
            hit = float(not answer.abstained and quote_contains_answer([c.quote for c in answer.citations], q.answers))
            prediction = (
                ""
                if answer.abstained
                else (answer.short_answer or (answer.citations[0].quote if answer.citations else answer.text))
            )
            quote_hits.append(hit)
            ems.append(exact_match(prediction, q.answers))
            f1s.append(f1_score(prediction, q.answers))
            abstained.append(float(answer.abstained))
            per_type.setdefault(qtype, []).append((hit, f1s[-1]))
            if answer.confidence is not None:
                # what the answer would have been without the abstention threshold
                confident.append((answer.confidence, hit or _would_hit(kb, q, k, answerer, answer)))
        n = len(questions) or 1
        result["answers"] = {
            "quote_contains_answer": round(sum(quote_hits) / n, 4),
            "exact_match": round(sum(ems) / n, 4),
            "f1": round(sum(f1s) / n, 4),
            "false_abstention_rate": round(sum(abstained) / n, 4),
            "ask_ms_p50": _percentile(latencies, 0.5),
            "ask_ms_p95": _percentile(latencies, 0.95),
        }
        for qtype, rows in per_type.items():
            result.setdefault("by_type", {}).setdefault(qtype, {})
            result["by_type"][qtype]["quote_contains_answer"] = round(sum(h for h, _ in rows) / len(rows), 4)
            result["by_type"][qtype]["f1"] = round(sum(f for _, f in rows) / len(rows), 4)

    if unanswerable:
        abstained = []
        unanswerable_confidence: list[float] = []
        for q in tqdm(questions, desc="ask without its paragraph", unit=" q", disable=not progress):
            answer = kb.ask(q.text, k=k, answerer=answerer, exclude=[q.doc_id])
            abstained.append(float(answer.abstained))
            if answer.confidence is not None:
                unanswerable_confidence.append(answer.confidence)
        result["unanswerable"] = {"abstention_rate": round(sum(abstained) / (len(abstained) or 1), 4)}
        if answers and confident and unanswerable_confidence:
            result["thresholds"] = threshold_table(confident, unanswerable_confidence)
    return result


def evaluate_news(
    kb: Any, questions: Sequence[Question], *, k: int = 5, answerer: str | None = None, progress: bool = True
) -> dict[str, Any]:
    """Answers on the news question set (:func:`load_news_questions`); the index holds the corpus articles.

    Answerable questions (``plain`` and ``near-miss``): the quote holds a gold answer, EM / F1 of the short answer,
    false abstentions, the cited passage from the question's article, and for near misses how often the trap was
    quoted instead. Unanswerable questions: the abstention rate. The confidences give a threshold table (what each
    abstention threshold would give), to choose one on the train part and read it on the dev part."""
    from tqdm import tqdm

    rows: list[dict[str, Any]] = []
    latencies: list[float] = []
    confident: list[tuple[float, float]] = []
    unanswerable_confidence: list[float] = []
    for q in tqdm(questions, desc="ask", unit=" q", disable=not progress):
        t = time.perf_counter()
        answer = kb.ask(q.text, k=k, answerer=answerer)
        latencies.append((time.perf_counter() - t) * 1000)
        quotes = [c.quote for c in answer.citations]
        row = {
            "id": q.id,
            "kind": q.kind,
            "abstained": bool(answer.abstained),
            "confidence": answer.confidence,
            "quote": quotes[0] if quotes else "",
            "answer": answer.short_answer or answer.text,
        }
        if q.kind == "unanswerable":
            if answer.confidence is not None:
                unanswerable_confidence.append(answer.confidence)
        else:
            hit = float(not answer.abstained and quote_contains_answer(quotes, q.answers))
            prediction = "" if answer.abstained else (answer.short_answer or (quotes[0] if quotes else answer.text))
            row.update(
                hit=hit,
                em=exact_match(prediction, q.answers),
                f1=f1_score(prediction, q.answers),
                article=float(bool(answer.citations) and answer.citations[0].passage.doc_id == q.doc_id),
                trap=float(bool(q.trap) and not hit and not answer.abstained and quote_contains_answer(quotes, [q.trap])),
            )
            if answer.confidence is not None:
                confident.append((answer.confidence, hit or _would_hit(kb, q, k, answerer, answer)))
        rows.append(row)
    answerable = [r for r in rows if r["kind"] != "unanswerable"]
    near = [r for r in answerable if r["kind"] == "near-miss"]
    unanswerable = [r for r in rows if r["kind"] == "unanswerable"]

    def mean(values: Sequence[float]) -> float:
        return round(sum(values) / len(values), 4) if values else 0.0

    result: dict[str, Any] = {
        "questions": len(rows),
        "k": k,
        "kinds": {kind: sum(r["kind"] == kind for r in rows) for kind in NEWS_KINDS},
        "articles_asked": len({q.doc_id for q in questions}),
        "answers": {
            "quote_contains_answer": mean([r["hit"] for r in answerable]),
            "exact_match": mean([r["em"] for r in answerable]),
            "f1": mean([r["f1"] for r in answerable]),
            "false_abstention_rate": mean([float(r["abstained"]) for r in answerable]),
            "cited_article_right": mean([r["article"] for r in answerable]),
            "ask_ms_p50": _percentile(latencies, 0.5),
            "ask_ms_p95": _percentile(latencies, 0.95),
        },
        "near_miss": {
            "quote_contains_answer": mean([r["hit"] for r in near]),
            "trap_quoted": mean([r["trap"] for r in near]),
        },
        "unanswerable": {"abstention_rate": mean([float(r["abstained"]) for r in unanswerable])},
        "per_question": rows,
    }
    if confident and unanswerable_confidence:
        result["thresholds"] = threshold_table(confident, unanswerable_confidence)
    return result


def format_news_report(result: dict[str, Any]) -> str:
    """:func:`evaluate_news`'s figures as Markdown."""
    a, n, u = result["answers"], result["near_miss"], result["unanswerable"]
    kinds = ", ".join(f"{kind} {count}" for kind, count in result["kinds"].items())
    lines = [
        f"# qa eval news — {result.get('file', '')} ({result.get('split', 'all')} part)",
        "",
        f"{result['questions']} questions ({kinds}) over {result['articles_asked']} articles; "
        f"{result.get('articles', '?')} articles indexed ({result.get('chunks', '?')} chunks), k={result['k']}, "
        f"answerer `{result.get('answerer', '?')}`",
        "",
        "| quote holds the answer | EM | F1 | false abstentions | cited article right | near misses: right / trap quoted "
        "| abstains when unanswerable | ask p50 ms | p95 ms |",
        "|---|---|---|---|---|---|---|---|---|",
        _row(
            a["quote_contains_answer"],
            a["exact_match"],
            a["f1"],
            a["false_abstention_rate"],
            a["cited_article_right"],
            f"{n['quote_contains_answer']} / {n['trap_quoted']}",
            u["abstention_rate"],
            a["ask_ms_p50"],
            a["ask_ms_p95"],
        ),
    ]
    lines += _threshold_lines(result)
    return "\n".join(lines) + "\n"


def _would_hit(kb: Any, q: Question, k: int, answerer: str | None, answer: Any) -> float:
    """For an abstention: would the best sentence have contained the answer?"""
    if not answer.abstained:
        return 0.0
    scorer = kb.answerer(answerer) if answerer else kb.answerer()
    if not hasattr(scorer, "score_sentences"):
        return 0.0
    ranked = scorer.score_sentences(answer.question or q.text, answer.passages)
    return float(bool(ranked) and quote_contains_answer([ranked[0].text], q.answers))


def threshold_table(
    answerable: Sequence[tuple[float, float]], unanswerable: Sequence[float], thresholds: Sequence[float] | None = None
) -> list[dict[str, float]]:
    """For each abstention threshold: false abstentions and quote hits on answerable questions
    (``(confidence, hit)`` pairs), abstentions on unanswerable ones — to choose ``min_confidence``."""
    thresholds = thresholds or [round(0.05 * i, 2) for i in range(2, 15)]
    rows = []
    for t in thresholds:
        rows.append(
            {
                "threshold": t,
                "false_abstention_rate": round(sum(c < t for c, _ in answerable) / len(answerable), 4),
                "quote_contains_answer": round(sum(h for c, h in answerable if c >= t) / len(answerable), 4),
                "unanswerable_abstention_rate": round(sum(c < t for c in unanswerable) / len(unanswerable), 4),
            }
        )
    return rows


def _threshold_lines(result: dict[str, Any]) -> list[str]:
    """The threshold table of a report (none without thresholds)."""
    if not result.get("thresholds"):
        return []
    header = _row("threshold", "false abstentions", "quote contains answer", "abstains when unanswerable")
    lines = ["", "## Abstention threshold", "", header, "|---|---|---|---|"]
    for r in result["thresholds"]:
        lines.append(
            _row(r["threshold"], r["false_abstention_rate"], r["quote_contains_answer"], r["unanswerable_abstention_rate"])
        )
    return lines


def _row(*cells: Any) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


TYPE_LABELS = {"quand": "Quand", "qui": "Qui", "ou": "Où", "combien": "Combien", "quel": "Quel", "other": "other"}


def plot_recall_curves(result: dict[str, Any], path: str | Path) -> Path:
    """A PNG of recall@k for k = 1..20, one line per retriever."""
    import matplotlib

    matplotlib.use("Agg")  # no display; must come before pyplot
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    try:
        for mode, curve in result["recall_curve"].items():
            ax.plot(range(1, len(curve) + 1), curve, marker="o", markersize=3, label=mode)
        ax.set_xlabel("k (passages retrieved)")
        ax.set_ylabel("recall@k (gold paragraph in the top k)")
        ax.set_title(f"{Path(result.get('file', '')).name}: {result['questions']} questions, {result.get('chunks', '?')} chunks")
        ax.set_xticks(range(1, 21))
        ax.grid(True, alpha=0.3)
        ax.legend(loc="lower right")
        fig.tight_layout()
        fig.savefig(path)
    finally:
        plt.close(fig)
    return Path(path)


def format_report(result: dict[str, Any], plot: str | None = None) -> str:
    """The evaluation as Markdown tables (``plot``: the recall@k PNG to link, relative to the report)."""
    lines = [
        f"# qa eval — {result.get('file', '')}" + (f" ({result['split']} split)" if result.get("split", "all") != "all" else ""),
        "",
    ]
    lines += [f"{result['questions']} questions, {result.get('articles', '?')} articles ({result.get('chunks', '?')} chunks), "
              f"k={result['k']}, model `{result.get('model', '?')}`, answerer `{result.get('answerer', '?')}`", ""]  # fmt: skip
    if result.get("ingest_chunks_per_second"):
        lines += [f"Ingest: {result['ingest_seconds']} s, {result['ingest_chunks_per_second']} chunks/s", ""]
    lines += [
        "## Retrieval",
        "",
        "| retriever | recall@1 | recall@5 | recall@10 | MRR@10 | search p50 ms | p95 ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for mode, r in result["retrieval"].items():
        lines.append(
            _row(mode, r["recall@1"], r["recall@5"], r["recall@10"], r["mrr@10"], r["search_ms_p50"], r["search_ms_p95"])
        )
    if plot:
        lines += ["", f"![recall@k for k = 1..20 per retriever]({plot})"]
    if "answers" in result:
        a = result["answers"]
        lines += [
            "",
            "## Answers",
            "",
            "| quote contains answer | EM | F1 | false abstentions | ask p50 ms | p95 ms |",
            "|---|---|---|---|---|---|",
        ]
        lines.append(
            _row(
                a["quote_contains_answer"],
                a["exact_match"],
                a["f1"],
                a["false_abstention_rate"],
                a["ask_ms_p50"],
                a["ask_ms_p95"],
            )
        )
    if result.get("stages"):
        lines += [
            "",
            "## Stage by stage",
            "",
            "| answerer | quote contains answer | EM | F1 | false abstentions | abstains when unanswerable | ask p50 ms |",
            "|---|---|---|---|---|---|---|",
        ]
        for stage, r in result["stages"].items():
            columns = ("quote_contains_answer", "exact_match", "f1", "false_abstention_rate", "unanswerable_abstention_rate")
            lines.append(_row(f"`{stage}`", *(r.get(c, "") for c in columns), r.get("ask_ms_p50", "")))
    if "unanswerable" in result:
        lines += [
            "",
            f"Abstention rate on unanswerable questions (own paragraph removed): **{result['unanswerable']['abstention_rate']}**",
        ]
    lines += _threshold_lines(result)
    lines += [
        "",
        "## By question type",
        "",
        "| type | questions | recall@5 | quote contains answer | F1 |",
        "|---|---|---|---|---|",
    ]
    for qtype, r in sorted(result.get("by_type", {}).items(), key=lambda kv: -kv[1].get("questions", 0)):
        cells = (r.get(c, "") for c in ("questions", "recall@5", "quote_contains_answer", "f1"))
        lines.append(_row(TYPE_LABELS.get(qtype, qtype), *cells))
    return "\n".join(lines) + "\n"
