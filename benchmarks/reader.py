"""The reader on the dev split it never saw: sentence choice vs today's extractive answerer, no-answer, speed.

    .venv/bin/python benchmarks/reader.py [--artifact src/qa/answering/reading/models] [--cosine] [--no-answer] [--limit N]

The dev split is the shipped model's own (its manifest's data files, seed and dev share: whole articles held
out of training). Each dev question gets its gold paragraph; the candidates are the project's sentences
(:func:`qa.answering.reading.reader.candidate_sentences`, what the extractive answerer reads). Measured:

- top-1 sentence holds the answer (compared like ``qa eval``'s quote metric), for the ``ExtractiveAnswerer``
  (``score_sentences``), the untrained e5-small cosine (``--cosine``) and the reader run by ONNX Runtime;
  by question type, and where each is right alone;
- ``--no-answer``: the reader's best logit on the gold paragraph vs on another paragraph of the same article
  (the question's paragraph removed); abstention there at the threshold giving 8 % false abstentions;
- ms to score ~22 sentences (5 paragraphs) with ONNX Runtime on 1 thread (``OMP_NUM_THREADS=1``), median wall
  time and median CPU time of the process (the CPU time is what a shared, loaded machine does not distort).

Writes ``benchmarks/results/reader.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from common import dev_split_arguments  # noqa: E402

from qa.answering.extractive import ExtractiveAnswerer, question_type  # noqa: E402
from qa.answering.reading.reader import READER, Reader  # noqa: E402
from qa.evaluation import quote_contains_answer  # noqa: E402
from qa.schema import Passage  # noqa: E402
from qa.training.data import load_examples, other_paragraphs, split_examples  # noqa: E402
from qa.training.trainer import removed_paragraph  # noqa: E402


def fusion(dev: list, logits: list[np.ndarray], lexical: list[np.ndarray]) -> dict:
    """How far a one-weight blend ``a * sigmoid(reader) + (1 - a) * lexical / max(lexical)`` goes, its weight chosen
    on one half of the dev articles and measured on the other (then swapped): an estimate of what combining pays,
    not the calibrated combiner (that one is fitted on the training split)."""
    titles = sorted({e.title for e in dev})
    fold = {t: i % 2 for i, t in enumerate(titles)}
    grid = [round(0.1 * i, 1) for i in range(11)]

    def hit(i: int, a: float) -> bool:
        lex = lexical[i] / max(1e-9, float(lexical[i].max()))
        combined = a / (1.0 + np.exp(-logits[i])) + (1.0 - a) * lex
        best = int(np.argmax(combined))
        s, t = dev[i].paragraph.sentences[best]
        return quote_contains_answer([dev[i].paragraph.text[s:t]], dev[i].answers)

    out, total = {}, []
    for f in (0, 1):
        tune = [i for i, e in enumerate(dev) if fold[e.title] == f]
        test = [i for i, e in enumerate(dev) if fold[e.title] != f]
        a = max(grid, key=lambda a: np.mean([hit(i, a) for i in tune]))
        total += [hit(i, a) for i in test]
        out[f"weight_fold{f}"] = a
    out["top1_sentence_holds_answer"] = round(float(np.mean(total)), 4)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    dev_split_arguments(ap)
    ap.add_argument("--cosine", action="store_true", help="also the untrained e5-small cosine")
    ap.add_argument("--no-answer", action="store_true", help="also the paragraph-removed no-answer signal")
    ap.add_argument("--reader-limit", type=int, default=0, help="score only the first N dev questions with ONNX (parity check)")
    ap.add_argument("--hits", default="", help="per-question hits of the trainer's own dev evaluation (--dev-hits), JSON")
    ap.add_argument("--timing-reps", type=int, default=20)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "reader.json"))
    args = ap.parse_args()

    artifact = Path(args.artifact)
    manifest = READER.load_manifest(artifact)
    files = [Path(args.data_dir) / f["file"] for f in manifest["data"]]
    dataset = load_examples(files)
    if [f["sha256"] for f in dataset.files] != [f["sha256"] for f in manifest["data"]]:
        print("warning: the data files differ from the ones the reader was trained on", file=sys.stderr)
    _, dev = split_examples(dataset, manifest["split"]["dev_share"], manifest["split"]["seed"])
    if args.limit:
        dev = dev[: args.limit]
    print(f"{len(dev)} dev questions ({len({e.title for e in dev})} articles never seen in training)", file=sys.stderr)

    results: dict[str, list[bool]] = {}
    t0 = time.monotonic()
    answerer = ExtractiveAnswerer()
    hits, lexical = [], []
    for e in dev:
        ranked = answerer.score_sentences(e.question, [Passage("dev", "dev:0", e.paragraph.text)])
        hits.append(bool(ranked) and quote_contains_answer([ranked[0].text], e.answers))
        by_start = {r.start: r.score for r in ranked}
        lexical.append(np.array([by_start.get(start, 0.0) for start, _ in e.paragraph.sentences]))
    results["extractive"] = hits
    print(f"extractive: {np.mean(hits):.3f} ({time.monotonic() - t0:.0f} s)", file=sys.stderr)

    if args.cosine:
        from qa.embeddings import make_embedder

        t0 = time.monotonic()
        embedder = make_embedder("multilingual-e5-small", Path(args.cache_dir), backend="onnx")
        hits = []
        for e in dev:
            texts = e.paragraph.sentence_texts()
            sims = embedder.embed_documents(texts) @ embedder.embed_query(e.question)
            hits.append(quote_contains_answer([texts[int(np.argmax(sims))]], e.answers))
        results["e5_cosine_untrained"] = hits
        print(f"e5 cosine: {np.mean(hits):.3f} ({time.monotonic() - t0:.0f} s)", file=sys.stderr)

    if args.hits:
        torch_hits = json.loads(Path(args.hits).read_text())
        results["reader_torch"] = [bool(torch_hits[e.id]) for e in dev]
        print(f"reader (torch, trainer's eval): {np.mean(results['reader_torch']):.3f}", file=sys.stderr)
    reader = Reader(Path(args.cache_dir), artifact=artifact).load()
    t0 = time.monotonic()
    hits, best_gold, logits = [], [], []
    scored = dev[: args.reader_limit] if args.reader_limit else dev
    for e in scored:
        texts = e.paragraph.sentence_texts()
        scores = reader.score(e.question, texts)
        hits.append(quote_contains_answer([texts[int(np.argmax(scores))]], e.answers))
        best_gold.append(float(scores.max()))
        logits.append(scores)
    reader_seconds = time.monotonic() - t0
    print(f"reader (ONNX): {np.mean(hits):.3f} on {len(scored)} questions ({reader_seconds:.0f} s)", file=sys.stderr)
    onnx_hits = hits
    if len(scored) == len(dev):
        results["reader_onnx"] = hits

    report: dict = {
        "artifact": {
            "weights_sha256": manifest["weights_sha256"],
            "bytes": manifest.get("weights_bytes"),
            "trained_layers": manifest["trained_layers"],
        },
        "dev_questions": len(dev),
        "top1_sentence_holds_answer": {k: round(float(np.mean(v)), 4) for k, v in results.items()},
        "manifest_dev_torch": manifest["dev"]["top1_sentence_holds_answer"],
        "onnx_questions": len(scored),
        "onnx_top1": round(float(np.mean(onnx_hits)), 4),
    }
    if "reader_torch" in results:
        report["torch_top1_same_questions"] = round(float(np.mean(results["reader_torch"][: len(scored)])), 4)
        report["onnx_torch_same_outcome"] = round(
            float(np.mean([a == b for a, b in zip(onnx_hits, results["reader_torch"], strict=False)])), 4
        )
    ex, rd = results["extractive"], results.get("reader_onnx") or results.get("reader_torch") or []
    report["right_alone"] = (
        {}
        if not rd
        else {
            "reader": sum(r and not x for r, x in zip(rd, ex, strict=True)),
            "extractive": sum(x and not r for r, x in zip(rd, ex, strict=True)),
        }
    )
    types = [question_type(e.question) for e in dev]
    report["by_type"] = {
        t: {
            "n": n,
            **{k: round(float(np.mean([h for h, ty in zip(v, types, strict=True) if ty == t])), 3) for k, v in results.items()},
        }
        for t, n in Counter(types).most_common()
    }

    if len(scored) == len(dev):
        report["fusion_2fold_on_dev"] = fusion(dev, logits, lexical)

    if args.no_answer:
        others = other_paragraphs(dataset)
        best_absent = []
        for e in scored:
            p = removed_paragraph(e, others, manifest["split"]["seed"])
            if p is not None:
                best_absent.append(float(reader.score(e.question, p.sentence_texts()).max()))
        # today's answerer at its own threshold, on the same questions
        gold_abstained = [answerer.answer(e.question, [Passage("dev", "dev:0", e.paragraph.text)]).abstained for e in scored]
        absent_abstained = []
        for e in scored:
            p = removed_paragraph(e, others, manifest["split"]["seed"])
            if p is not None:
                absent_abstained.append(answerer.answer(e.question, [Passage("dev", "dev:0", p.text)]).abstained)
        report["no_answer_extractive"] = {
            "false_abstention": round(float(np.mean(gold_abstained)), 4),
            "abstention_paragraph_removed": round(float(np.mean(absent_abstained)), 4),
        }
        threshold = float(np.quantile(best_gold, 0.08))
        report["no_answer"] = {
            "questions": len(best_absent),
            "threshold_logit": round(threshold, 4),
            "false_abstention": round(float(np.mean(np.array(best_gold) < threshold)), 4),
            "abstention_paragraph_removed": round(float(np.mean(np.array(best_absent) < threshold)), 4),
        }

    # speed: ~22 sentences from 5 dev paragraphs, one question, ONNX Runtime (threads: OMP_NUM_THREADS)
    sentences: list[str] = []
    for e in dev:
        if len(sentences) >= 22:
            break
        sentences += e.paragraph.sentence_texts()[: 22 - len(sentences)]
    question = dev[0].question
    for _ in range(3):
        reader.score(question, sentences)
    times, cpu = [], []
    for _ in range(args.timing_reps):
        t, c = time.perf_counter(), time.process_time()
        reader.score(question, sentences)
        times.append((time.perf_counter() - t) * 1000)
        cpu.append((time.process_time() - c) * 1000)
    report["ms_per_22_sentences"] = {
        "sentences": len(sentences),
        "median": round(statistics.median(times), 1),
        "min": round(min(times), 1),
        "cpu_median": round(statistics.median(cpu), 1),
        "threads": os.environ.get("OMP_NUM_THREADS", "default"),
        "load_average": round(os.getloadavg()[0], 2),
    }
    report["ms_per_question_dev_mean"] = round(1000 * reader_seconds / max(1, len(scored)), 1)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    print(json.dumps(report, indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
