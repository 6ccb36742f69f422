"""Another reader inside the combiner, without collecting every feature again.

    .venv/bin/python benchmarks/combiner_reader.py --reader DIR [--train-questions 600] [--candidates 5]

``qa fit-combiner`` caches each question's candidate features for the shipped reader and span model (in
``--work-dir``). This finds each cached row's candidate sentences again (the same retrieval and lexical ranking over
the same index; rows whose candidate count differs are counted and keep the cached logits), replaces the reader's logits by
those of the reader artifact in ``--reader`` (e.g. one trained with ``qa train-reader --neg-hard``), refits the
combiner exactly as ``qa fit-combiner`` does (:func:`qa.training.combiner.fit_rows`) and reports the dev split's
stages for both readers. ``--reader src/qa/answering/reading/models`` is the control: it gives the shipped fit's numbers.
Writes ``benchmarks/results/combiner_reader.json``.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

from tqdm import tqdm

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from common import RESULTS  # noqa: E402

from qa.answering.reading.combiner import FEATURES, first_candidates, set_relative  # noqa: E402
from qa.answering.reading.finetuned import DEFAULT_ARTIFACT  # noqa: E402
from qa.answering.reading.reader import READER, Reader  # noqa: E402
from qa.training.combiner import _load, feature_caches, fit_rows, models_key, used_features  # noqa: E402
from qa.training.data import load_examples, split_examples  # noqa: E402
from qa.training.retrieval import doc_id, knowledge_base  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reader", required=True, help="the reader artifact folder to put in the combiner")
    ap.add_argument("--artifact", default=str(DEFAULT_ARTIFACT), help="the shipped artifact (its cache)")
    ap.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--work-dir", default=str(Path.home() / ".cache" / "qa" / "combiner-fit"))
    ap.add_argument("--cache-dir", default=str(Path.home() / ".cache" / "qa" / "models"))
    ap.add_argument("--train-questions", type=int, default=600)
    ap.add_argument("--collected", type=int, default=8, help="the candidate count the cache was collected for")
    ap.add_argument("--candidates", type=int, default=5)
    ap.add_argument("--k", type=int, default=5)
    args = ap.parse_args()

    artifact, work = Path(args.artifact), Path(args.work_dir).expanduser()
    manifest = READER.load_manifest(artifact)
    paths = feature_caches(work, args.k, models_key(artifact), args.collected, args.train_questions)
    caches = dict(zip(("train", "dev"), paths, strict=True))
    missing = [str(p) for p in caches.values() if not p.is_file()]
    if missing:
        print(f"no cached features {', '.join(missing)}: run `make fit-combiner` first", file=sys.stderr)
        return 1
    dataset = load_examples(sorted(Path(args.data_dir).glob("piaf-v1.*.json")))
    split = manifest["split"]
    train, dev = split_examples(dataset, split["dev_share"], split["seed"])
    random.Random(split["seed"]).shuffle(train)
    by_id = {e.id: e for e in train[: args.train_questions] + dev}
    kb = knowledge_base(dataset, work)
    lexical = kb.answerer("extractive:combined").lexical
    reader = Reader(Path(args.cache_dir).expanduser(), artifact=Path(args.reader)).load()

    rows: dict[str, dict[str, list]] = {}
    drift = 0
    for side, path in caches.items():
        shipped, other = [], []
        for r in tqdm(_load(path), desc=f"{side} rows", unit=" row", file=sys.stderr, mininterval=5):
            ex = by_id[r["id"]]
            passages = kb.search(ex.question, k=args.k, exclude=[doc_id(ex)] if r["removed"] else None)
            texts = [s.text for s in lexical.score_sentences(ex.question, passages)[: args.collected]]
            x = r["x"].copy()
            if len(texts) != len(x):
                drift += 1
            elif len(x):
                x[:, FEATURES.index("reader_logit")] = reader.score(ex.question, texts)
            shipped.append(first_candidates(r, args.candidates))
            other.append(first_candidates({**r, "x": set_relative(x)}, args.candidates))
        rows[side] = {"shipped": shipped, "other": other}
    names = used_features("")
    out = {"reader": str(args.reader), "rows_not_found_again": drift}
    for which in ("shipped", "other"):
        _, scores = fit_rows(rows["train"][which], rows["dev"][which], names, 1.0, 0.075)
        out[which] = scores
        print(which, json.dumps({k: scores[k] for k in ("top1", "reader_at_threshold", "combined_at_threshold")}))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "combiner_reader.json").write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
