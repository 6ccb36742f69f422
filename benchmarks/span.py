"""The span reader on the dev split it never saw: the short answer cut out of each question's gold sentence.

    .venv/bin/python benchmarks/span.py [--artifact src/qa/answering/reading/models] [--limit N] [--rules] [--predictions FILE]

The dev split is the shipped model's own (``span.json``: data files, seed, dev share: whole articles held out).
Each dev question gets its gold sentence (the one that holds the answer, :mod:`qa.training.data`); the span reader,
run by ONNX Runtime on 1 thread (``OMP_NUM_THREADS=1``), cuts the answer out of it. Measured: exact match and F1
(:mod:`qa.evaluation`) against the gold answers; ``--rules``: the same for today's extractive answerer's short
answer (regex/spaCy rules) given that sentence alone; ``--predictions``: the trainer's own dev predictions
(``--dev-predictions``), to count where ONNX and torch differ; ms per ``extract`` call (median wall and CPU time).

Writes ``benchmarks/results/span.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from common import dev_split_arguments  # noqa: E402

from qa.answering.reading.span import SPAN, SpanReader  # noqa: E402
from qa.evaluation import exact_match, f1_score  # noqa: E402
from qa.schema import Passage  # noqa: E402
from qa.training.data import load_examples, split_examples  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    dev_split_arguments(ap)
    ap.add_argument("--rules", action="store_true", help="also today's extractive answerer's short answer")
    ap.add_argument("--predictions", default="", help="the trainer's dev predictions (--dev-predictions), JSON")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "span.json"))
    args = ap.parse_args()

    manifest = SPAN.load_manifest(Path(args.artifact))
    split = manifest["split"]
    dataset = load_examples([Path(args.data_dir) / f["file"] for f in manifest["data"]])
    _, dev = split_examples(dataset, split["dev_share"], split["seed"])
    dev = dev[: args.limit] if args.limit else dev
    reader = SpanReader(Path(args.cache_dir), artifact=Path(args.artifact)).load()
    rules = None
    if args.rules:
        from qa.answering.extractive import ExtractiveAnswerer

        rules = ExtractiveAnswerer(min_confidence=0.0)
    torch_predictions = {}
    if args.predictions:
        torch_predictions = {p["id"]: p["prediction"] for p in json.loads(Path(args.predictions).read_text())}

    wall, cpu, em, f1, rule_em, rule_f1, differ = [], [], [], [], [], [], 0
    for e in dev:
        s, t = e.paragraph.sentences[e.positives[0]]
        sentence = e.paragraph.text[s:t]
        w0, c0 = time.perf_counter(), time.process_time()
        found = reader.extract(e.question, sentence)
        wall.append(time.perf_counter() - w0)
        cpu.append(time.process_time() - c0)
        prediction = sentence[found[0] : found[1]] if found else ""
        em.append(exact_match(prediction, e.answers))
        f1.append(f1_score(prediction, e.answers))
        if e.id in torch_predictions and torch_predictions[e.id] != prediction:
            differ += 1
        if rules is not None:
            short = rules.answer(e.question, [Passage("d", "d:0", sentence, end=len(sentence))]).short_answer or ""
            rule_em.append(exact_match(short, e.answers))
            rule_f1.append(f1_score(short, e.answers))

    n = max(1, len(dev))
    result = {
        "artifact": str(args.artifact),
        "weights_sha256": manifest["weights_sha256"],
        "questions": len(dev),
        "span_reader_onnx": {"exact_match": round(sum(em) / n, 4), "f1": round(sum(f1) / n, 4)},
        "ms_per_extract": {
            "threads": os.environ.get("OMP_NUM_THREADS", "default"),
            "median_wall": round(1000 * statistics.median(wall), 1),
            "median_cpu": round(1000 * statistics.median(cpu), 1),
        },
    }
    if rules is not None:
        result["rules_short_answer"] = {"exact_match": round(sum(rule_em) / n, 4), "f1": round(sum(rule_f1) / n, 4)}
    if torch_predictions:
        result["onnx_differs_from_torch"] = differ
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
