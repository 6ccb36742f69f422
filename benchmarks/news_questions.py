"""Write and check the hand-written news question set (`benchmarks/data/news-questions.jsonl`).

The questions are written by reading articles of OrangeSum (`../shared/data/orangesum-12k.jsonl.gz`, outside the
repository); only the questions, the article ids and the answer strings with their offsets are kept here.

    python benchmarks/news_questions.py list 0 200            # ids and titles of the corpus articles 0–199
    python benchmarks/news_questions.py show orangesum-16055  # one article, with character offsets every sentence
    python benchmarks/news_questions.py find orangesum-16055 "neuf personnes"  # its offset(s) in the article
    python benchmarks/news_questions.py grep "Almaty"         # which corpus articles contain a string (case-insensitive)
    python benchmarks/news_questions.py check FILE.jsonl      # every line valid, offsets right, counts by kind

One question per line: {"id", "question", "article", "kind": "plain" | "near-miss" | "unanswerable",
"answers": [{"text", "start"}] (empty when unanswerable), "trap": {"article", "start", "text"} (near-miss only)}.
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import sys
from collections import Counter
from pathlib import Path

ORANGESUM = Path(__file__).resolve().parents[2] / "shared" / "data" / "orangesum-12k.jsonl.gz"
CORPUS_SIZE = 2000  # the eval indexes the first 2,000 articles of the file; questions come from the first 1,000
KINDS = ("plain", "near-miss", "unanswerable")


def load(path: Path = ORANGESUM, limit: int = CORPUS_SIZE) -> list[dict]:
    out = []
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        for line in fh:
            out.append(json.loads(line))
            if len(out) >= limit:
                break
    return out


def check(path: Path, articles: dict[str, dict]) -> int:
    errors = 0
    kinds: Counter[str] = Counter()
    used: set[str] = set()
    ids: set[str] = set()
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{n}"
        try:
            q = json.loads(line)
        except ValueError as exc:
            print(f"{where}: not JSON ({exc})")
            errors += 1
            continue
        problems = []
        for key in ("id", "question", "article", "kind", "answers"):
            if key not in q:
                problems.append(f"missing '{key}'")
        if problems:
            print(f"{where}: " + "; ".join(problems))
            errors += 1
            continue
        if q["id"] in ids:
            problems.append(f"duplicate id {q['id']}")
        ids.add(q["id"])
        if q["kind"] not in KINDS:
            problems.append(f"kind must be one of {KINDS}")
        article = articles.get(q["article"])
        if article is None:
            problems.append(f"article {q['article']} is not among the first {CORPUS_SIZE} of the file")
        else:
            text = article["text"]
            if q["kind"] == "unanswerable" and q["answers"]:
                problems.append("an unanswerable question has no answers")
            if q["kind"] != "unanswerable" and not q["answers"]:
                problems.append("an answerable question needs at least one answer")
            for a in q["answers"]:
                got = text[a["start"] : a["start"] + len(a["text"])]
                if got != a["text"]:
                    found = text.find(a["text"])
                    problems.append(f"answer {a['text']!r} not at {a['start']} (found at {found})")
            if q["kind"] == "near-miss":
                trap = q.get("trap")
                if not trap:
                    problems.append("a near-miss needs 'trap': {article, start, text}")
                else:
                    other = articles.get(trap.get("article", ""))
                    if other is None or other["text"][trap["start"] : trap["start"] + len(trap["text"])] != trap["text"]:
                        problems.append(f"trap {trap.get('text')!r} not at {trap.get('start')} of {trap.get('article')}")
            if not q["question"].strip().endswith("?"):
                problems.append("a question ends with '?'")
        if problems:
            print(f"{where}: " + "; ".join(problems))
            errors += 1
        kinds[q["kind"]] += 1
        used.add(q["article"])
    total = sum(kinds.values()) or 1
    print(
        f"{sum(kinds.values())} questions over {len(used)} articles: "
        + ", ".join(f"{k} {kinds[k]} ({kinds[k] / total:.0%})" for k in KINDS)
        + f"; {errors} with errors"
    )
    return 1 if errors else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("list")
    p.add_argument("start", type=int)
    p.add_argument("end", type=int)
    p = sub.add_parser("show")
    p.add_argument("id")
    p = sub.add_parser("find")
    p.add_argument("id")
    p.add_argument("text")
    p = sub.add_parser("grep")
    p.add_argument("pattern")
    p = sub.add_parser("check")
    p.add_argument("file", type=Path, nargs="+")
    args = parser.parse_args()
    articles = load()
    by_id = {a["id"]: a for a in articles}
    if args.cmd == "list":
        for i in range(args.start, min(args.end, len(articles))):
            a = articles[i]
            print(f"{i}\t{a['id']}\t{a['date']}\t{len(a['text'])}\t{a['title']}")
    elif args.cmd == "show":
        a = by_id[args.id]
        print(f"# {a['title']} ({a['date']})")
        for m in re.finditer(r"[^.!?]+[.!?]*\s*", a["text"]):
            print(f"[{m.start()}] {m.group().strip()}")
    elif args.cmd == "find":
        text = by_id[args.id]["text"]
        starts = [m.start() for m in re.finditer(re.escape(args.text), text)]
        print(json.dumps({"text": args.text, "start": starts[0]} if starts else None, ensure_ascii=False), starts)
    elif args.cmd == "grep":
        needle = args.pattern.lower()
        for i, a in enumerate(articles):
            text = a["title"] + "\n" + a["text"]
            at = text.lower().find(needle)
            if at >= 0:
                print(f"{i}\t{a['id']}\t…{text[max(0, at - 60) : at + 80]!r}…")
    else:
        return max(check(f, by_id) for f in args.file)
    return 0


if __name__ == "__main__":
    sys.exit(main())
