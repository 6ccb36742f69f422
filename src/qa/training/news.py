"""``qa gen-news``: training questions generated from news articles (OrangeSum), in SQuAD 2.0 format.

For each article (one SQuAD paragraph, titled by the article's id, so every split stays by article) and each of its
sentences that stands on its own (no opening pronoun or connective, 40–320 characters), the answers the project's
own finders see in it — dates and quantities (:mod:`qa.answering.spans`), people, places and organisations (spaCy's
French model) — each become a question: the sentence without its answer, asked in one of several phrasings
(« Quand … ? », « À quelle date … ? », « Combien de personnes … ? », « Qui … ? », « Dans quel lieu … ? »).

Two kinds of hard case come with them:

- **near misses**: the other sentences of the article holding an answer of the same kind (another date, another
  place) are counted per question (``near_misses``) — the reader's negatives are drawn from the same article;
- **unanswerable variants** (SQuAD 2.0 ``is_impossible``): a question whose name other than the answer (a person,
  a place, an organisation) is swapped for a name of the same kind from another article — « … l'avion écrasé près
  de Tucson ? » when the article says Savannah; its sentence no longer answers it. The third kind, the question
  asked with its own article left out, is made by ``qa fit-combiner`` itself (``exclude``).

Articles are read in the file's order from ``--start``; the articles of the hand-written question set's dev part
(``--exclude``: the news question set) are never used. Seeded, so a run gives the same file. The output holds the
articles' text: it stays in the cache (``~/.cache/qa/news-gen``), never in the repository.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

DEFAULT_ARTICLES = "../shared/data/orangesum-12k.jsonl.gz"
DEFAULT_OUT = "~/.cache/qa/news-gen/news-gen.json"

_OPENING = re.compile(
    r"^(?:il|elle|ils|elles|on|cela|ça|ce|c['’]|celui|celle|ceux|celles|lui|leur|mais|et|or|donc|puis|ainsi|"
    r"en effet|de plus|par ailleurs|cependant|pourtant|toutefois|selon lui|selon elle|d['’]après lui|ici|là)\b",
    re.IGNORECASE,
)
_LEADING_PREP = re.compile(
    r"(?:\b(?:le|la|les|l['’]|en|à|au|aux|dans|depuis|dès|du|de|des|d['’]|vers|près de|ce|cette|par|pour|avec|sur|"
    r"selon|chez|entre|environ|plus de|moins de|quelque|quelques|jusqu['’]à|jusqu['’]au|jusqu['’]en)\s*)+$",
    re.IGNORECASE,
)
_QUOTES = re.compile(r"[«»\"“”]")
_SPACES = re.compile(r"\s{2,}")
_EMPTY_PUNCT = re.compile(r"\s*([,;:])\s*(?=[,;:.?]|$)")

PHRASINGS: dict[str, tuple[str, ...]] = {
    "date": ("Quand", "À quelle date", "À quel moment"),
    "year": ("En quelle année", "Quand"),
    "quantity": ("Combien de {unit}", "Quel nombre de {unit}"),
    "figure": ("Quel chiffre", "Quelle valeur"),
    "person": ("Qui", "Quelle personne"),
    "place": ("Où", "Dans quel lieu", "À quel endroit"),
    "organisation": ("Quelle organisation", "Quel organisme", "Qui"),
}
_LABELS = {"PER": "person", "LOC": "place", "ORG": "organisation"}


_LOCATIVE = re.compile(r"\b(?:à|au|aux|en|dans|vers|près de|depuis|de|d['’]|du|sur|par)\s*$", re.IGNORECASE)


def fits(kind: str, sentence: str, start: int, end: int) -> bool:
    """Whether a question of ``kind`` can be asked by cutting ``sentence[start:end]`` out: a person or an
    organisation as the subject (the sentence's first words, « Qui … ? »), a place after a locative preposition
    (« Où … ? »), a figure with digits."""
    before = sentence[:start]
    if kind in ("person", "organisation"):
        return not before.strip(' ,«"') and sentence[end:].lstrip()[:1].islower()
    if kind == "place":
        return bool(_LOCATIVE.search(before[-14:]))
    if kind == "figure":
        core = sentence[start:end]
        return sum(c.isdigit() for c in core) >= 2 or "%" in core
    return True


def question_body(sentence: str, start: int, end: int, keep_case: bool = False) -> str | None:
    """The sentence without its answer (and the preposition or article leading to it), as a question's body;
    None when too little is left to ask anything. Its first word is put in lower case unless ``keep_case`` (a
    name)."""
    before = _LEADING_PREP.sub("", sentence[:start])
    body = f"{before} {sentence[end:]}"
    body = _QUOTES.sub("", body)
    body = _EMPTY_PUNCT.sub("", _SPACES.sub(" ", body)).strip(" ,;:.!?-–—")
    body = re.sub(r"\s+([,;:.])", r"\1", body)
    if len(body) > 170:
        cut = body.rfind(",", 0, 170)
        body = body[:cut] if cut > 60 else body[:170].rsplit(" ", 1)[0]
    words = body.split()
    if len(words) < 4:
        return None
    if not keep_case and body[:1].isupper() and not body[1:2].isupper():
        body = body[0].lower() + body[1:]
    return body


def answers_in(sentence: str, doc: Any) -> list[tuple[str, int, int, str]]:
    """``(kind, start, end, unit)`` of every answer the project's finders see in ``sentence`` (``doc``: its spaCy
    parse), longest first where they overlap."""
    from qa.answering.spans import find_dates, find_quantities

    found: list[tuple[str, int, int, str]] = []
    for span in find_dates(sentence):
        kind = "year" if re.fullmatch(r"\d{4}", span.core.strip()) else "date"
        found.append((kind, span.start, span.end, ""))
    for span in find_quantities(sentence):
        if span.strength < 1.0:
            continue
        m = re.match(r"[\d\s.,]+(?:millions?|milliards?|mille)?\s*(?:d['’]|de\s)?(\w+)$", span.core)
        unit = m.group(1) if m else ""
        found.append(("quantity" if unit and unit.isalpha() and len(unit) > 2 else "figure", span.start, span.end, unit))
    for ent in doc.ents:
        label = _LABELS.get(ent.label_)
        core = ent.text.strip(" ,;:.«»\"'’")
        if label and len(core) >= 3 and re.search(r"[^\W\d_]{2}", core):
            start = ent.start_char + ent.text.find(core)
            found.append((label, start, start + len(core), ""))
    found.sort(key=lambda f: (f[1], -(f[2] - f[1])))
    kept: list[tuple[str, int, int, str]] = []
    for f in found:
        if not any(f[1] < k[2] and k[1] < f[2] for k in kept):
            kept.append(f)
    return kept


def generate(
    articles: list[dict[str, Any]], nlp: Any, seed: int, per_article: int, swap_share: float, progress: bool = True
) -> tuple[list[dict[str, Any]], Counter[str]]:
    """SQuAD 2.0 entries (one per article) and counts by kind."""
    from tqdm import tqdm

    from qa.answering.reading.reader import candidate_sentences

    rng = random.Random(seed)
    counts: Counter[str] = Counter()
    parsed = []
    names: dict[str, list[str]] = {"person": [], "place": [], "organisation": []}
    docs = nlp.pipe((a["text"] for a in articles), batch_size=32)
    for article, doc in tqdm(
        zip(articles, docs), total=len(articles), desc="reading", unit=" articles", file=sys.stderr, disable=not progress
    ):
        text = article["text"]
        sentences = []
        for s, e in candidate_sentences(text):
            sentence = text[s:e]
            span = doc.char_span(s, e, alignment_mode="expand")
            if span is None:
                continue
            sentences.append((s, e, answers_in(sentence, span.as_doc())))
            for kind, a0, a1, _ in sentences[-1][2]:
                if kind in names:
                    names[kind].append(sentence[a0:a1])
        parsed.append((article, sentences))
    pools = {kind: sorted(set(values)) for kind, values in names.items()}
    entries = []
    for article, sentences in parsed:
        text = article["text"]
        kinds_by_sentence = [Counter(kind for kind, *_ in found) for _, _, found in sentences]
        options = []
        for i, (s, e, found) in enumerate(sentences):
            sentence = text[s:e]
            if not 40 <= len(sentence) <= 320 or _OPENING.match(sentence) or sentence.rstrip().endswith("?"):
                continue
            for kind, a0, a1, unit in found:
                options.append((i, kind, a0, a1, unit))
        rng.shuffle(options)
        qas: list[dict[str, Any]] = []
        used_sentences: set[int] = set()
        for i, kind, a0, a1, unit in options:
            if len(qas) >= per_article:
                break
            if i in used_sentences:
                continue
            s, e, found = sentences[i]
            sentence = text[s:e]
            if not fits(kind, sentence, a0, a1):
                continue
            # the body's first word is a name when a name (other than the answer) opens what is left
            rest = _LEADING_PREP.sub("", sentence[:a0]).strip() or sentence[a1:].strip()
            opener = sentence.find(rest[:20]) if rest else -1
            named = any(k in _LABELS.values() and b <= opener < c for k, b, c, _ in found if (b, c) != (a0, a1))
            body = question_body(sentence, a0, a1, keep_case=named)
            if body is None:
                continue
            phrasing = re.sub(r"\bde ([aeiouyéèêàh])", r"d'\1", rng.choice(PHRASINGS[kind]).format(unit=unit))
            question = f"{phrasing} {body} ?"
            answer = sentence[a0:a1]
            near = sum(k[kind] for j, k in enumerate(kinds_by_sentence) if j != i)
            qid = f"{article['id']}-{len(qas)}"
            qas.append(
                {
                    "id": qid,
                    "question": question,
                    "answers": [{"text": answer, "answer_start": s + a0}],
                    "is_impossible": False,
                    "kind": kind,
                    "near_misses": near,
                }  # fmt: skip
            )
            counts[kind] += 1
            counts["with_near_miss"] += near > 0
            used_sentences.add(i)
            if rng.random() < swap_share:
                swapped = swap_question(question, sentence, found, (a0, a1), pools, rng, text)
                if swapped:
                    qas.append(
                        {
                            "id": qid + "-swapped",
                            "question": swapped,
                            "answers": [],
                            "is_impossible": True,
                            "plausible_answers": [{"text": answer, "answer_start": s + a0}],
                            "kind": kind,
                        }  # fmt: skip
                    )
                    counts["unanswerable"] += 1
        if qas:
            entries.append({"title": article["id"], "paragraphs": [{"context": text, "qas": qas}]})
    return entries, counts


def swap_question(
    question: str,
    sentence: str,
    found: list[tuple[str, int, int, str]],
    answer: tuple[int, int],
    pools: dict[str, list[str]],
    rng: random.Random,
    article_text: str,
) -> str | None:
    """The question with a name it asks about (a person, a place, an organisation of its sentence, not the answer)
    replaced by a name of the same kind that its article never mentions; None when it has none."""
    names = [
        (kind, sentence[a0:a1])
        for kind, a0, a1, _ in found
        if kind in pools and (a0, a1) != answer and sentence[a0:a1] in question and len(sentence[a0:a1]) >= 4
    ]
    if not names:
        return None
    kind, name = rng.choice(names)
    for _ in range(20):
        other = rng.choice(pools[kind])
        if other.lower() not in article_text.lower() and name.lower() not in other.lower():
            return question.replace(name, other, 1)
    return None


def read_articles(path: Path, start: int, limit: int, excluded: set[str]) -> list[dict[str, Any]]:
    import gzip

    opener = gzip.open if str(path).endswith(".gz") else open
    out: list[dict[str, Any]] = []
    with opener(path, "rt", encoding="utf-8") as fh:
        for n, line in enumerate(fh):
            if n < start or not line.strip():
                continue
            record = json.loads(line)
            if str(record.get("id")) in excluded:
                continue
            out.append({"id": str(record["id"]), "text": record["text"]})
            if len(out) >= limit:
                break
    return out


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``qa gen-news``."""
    p.add_argument("--articles", default=DEFAULT_ARTICLES, help=f"qa ingest's JSONL(.gz) of news (default {DEFAULT_ARTICLES})")
    p.add_argument("--start", type=int, default=2000, help="skip the first N articles (default 2000: the eval corpus)")
    p.add_argument("--limit", type=int, default=10000, help="articles read (default 10000)")
    p.add_argument("--per-article", type=int, default=4, help="questions per article at most (default 4)")
    p.add_argument("--swap-share", type=float, default=0.35, help="share of questions given an unanswerable variant")
    p.add_argument(
        "--exclude",
        default="benchmarks/data/news-questions.jsonl",
        help="the news question set: its dev part's articles are never read (default: the shipped set)",
    )
    p.add_argument("--seed", type=int, default=21)
    p.add_argument("--out", default=DEFAULT_OUT, help=f"the SQuAD 2.0 JSON written (default {DEFAULT_OUT})")
    p.add_argument("-q", "--quiet", action="store_true")


def cmd_gen_news(args: argparse.Namespace) -> int:
    from qa.answering.spans import load_nlp
    from qa.evaluation import load_news_questions

    started = time.time()
    source = Path(args.articles)
    if not source.is_file():
        print(f"qa: error: no such articles file: {source} (give --articles the OrangeSum JSONL)", file=sys.stderr)
        return 1
    excluded: set[str] = set()
    if args.exclude and Path(args.exclude).is_file():
        excluded = {q.doc_id for q in load_news_questions(args.exclude) if q.split == "dev"}
    articles = read_articles(source, args.start, args.limit, excluded)
    nlp = load_nlp()
    entries, counts = generate(articles, nlp, args.seed, args.per_article, args.swap_share, progress=not args.quiet)
    out = Path(args.out).expanduser()
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "generated_by": "qa gen-news " + " ".join(sys.argv[sys.argv.index("gen-news") + 1 :] if "gen-news" in sys.argv else []),
        "articles_file": source.name,
        "articles": len(entries),
        "excluded_dev_articles": len(excluded),
        "counts": dict(counts),
        "seconds": round(time.time() - started, 1),
    }
    out.write_text(json.dumps({"version": "v2.0", "meta": meta, "data": entries}, ensure_ascii=False), encoding="utf-8")
    answerable = sum(counts[k] for k in PHRASINGS)
    print(
        f"wrote {out}: {answerable} questions ({counts['with_near_miss']} with a near miss in their article) and "
        f"{counts['unanswerable']} unanswerable variants from {len(entries)} articles in {meta['seconds']} s",
        file=sys.stderr,
    )
    return 0
