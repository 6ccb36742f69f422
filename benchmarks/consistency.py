"""The reader-consistency guarantee under load: the reader/writer concurrency test, run N times in a row
while another CPU-heavy process works (by default an ingest of the PIAF paragraphs with the real model).

    python benchmarks/consistency.py --runs 20                       # load: ingest PIAF (../shared/data)
    python benchmarks/consistency.py --runs 20 --load "qa eval squad ../shared/data/piaf-v1.0.json"
    python benchmarks/consistency.py --runs 5 --load none

Prints one line per run (queries, failures, partial articles, mixed versions, the load average) and
the totals; exits non-zero if any run failed or saw half an article or mixed versions.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TEST = "tests/test_concurrency.py::test_reader_never_fails_nor_sees_half_an_article_while_a_writer_works"
PIAF = ROOT.parent / "shared" / "data" / "piaf-v1.0.json"


def piaf_jsonl(path: Path, out: Path) -> Path:
    """The PIAF paragraphs as JSON Lines articles (one per paragraph)."""
    data = json.loads(path.read_text(encoding="utf-8"))["data"]
    with out.open("w", encoding="utf-8") as fh:
        for a, article in enumerate(data):
            for p, para in enumerate(article["paragraphs"]):
                record = {"id": f"piaf-{a}-{p}", "title": article["title"], "text": para["context"]}
                fh.write(json.dumps(record, ensure_ascii=False) + "\n")
    return out


def start_load(spec: str, work: Path) -> subprocess.Popen[bytes] | None:
    if spec == "none":
        return None
    env = {**os.environ, "QA_INDEX_DIR": str(work / "load-index"), "HF_HUB_OFFLINE": "1"}
    if spec == "piaf-ingest":
        if not PIAF.exists():
            raise SystemExit(f"{PIAF} is missing: pass --load 'COMMAND' or --load none")
        command = [str(Path(sys.executable).with_name("qa")), "ingest", "-q", str(piaf_jsonl(PIAF, work / "piaf.jsonl"))]
    else:
        command = shlex.split(spec)
    return subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def run_once() -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2"), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", TEST],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    match = re.search(r"reader beside a writer \([^)]*\): (\{.*\})", done.stdout)
    stats = ast.literal_eval(match.group(1)) if match else {"queries": 0, "failures": -1, "partial": -1, "mixed": -1}
    stats["passed"] = done.returncode == 0
    return stats


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--load", default="piaf-ingest", help="'piaf-ingest' (default), 'none', or a command to run")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="qa-consistency-") as tmp:
        load = start_load(args.load, Path(tmp))
        time.sleep(5 if load else 0)  # let the load get going (model loading)
        totals = {"queries": 0, "failures": 0, "partial": 0, "mixed": 0, "failed_runs": 0}
        print("run | passed | queries | failures | partial | mixed | load average (1 min) | load process")
        try:
            for i in range(1, args.runs + 1):
                stats = run_once()
                state = "none" if load is None else ("running" if load.poll() is None else f"ended ({load.returncode})")
                for key in ("queries", "failures", "partial", "mixed"):
                    totals[key] += stats[key]
                totals["failed_runs"] += not stats["passed"]
                print(
                    f"{i} | {stats['passed']} | {stats['queries']} | {stats['failures']} | {stats['partial']} | "
                    f"{stats['mixed']} | {os.getloadavg()[0]:.2f} | {state}",
                    flush=True,
                )
        finally:
            if load is not None and load.poll() is None:
                load.terminate()
                load.wait(30)
    print(f"totals over {args.runs} runs: {totals}")
    return 0 if not (totals["failed_runs"] or totals["failures"] or totals["partial"] or totals["mixed"]) else 1


if __name__ == "__main__":
    sys.exit(main())
