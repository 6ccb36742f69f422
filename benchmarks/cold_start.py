"""Cold start and memory: a fresh `qa ask`, step by step, and `qa serve` until /ready — before and after, in one run.

    python benchmarks/cold_start.py                       # this checkout only
    python benchmarks/cold_start.py --before bda02a6      # also a baseline commit, runs interleaved

Each variant runs in fresh processes over the same index of the shipped corpus (built once with
this checkout). A baseline gets its own git worktree and its own model cache (copied from this
one, so its ONNX file is built in its own format once, before timing). Reports, per variant:
`qa ask` wall time (best and median of --runs) and peak RSS, with the answer; the time and RSS
after each step of open → first search → first answer; the heaviest imports (`python -X
importtime`); seconds from `qa serve` to `/ready` and the server's RSS then. Ratios after/before.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
QUESTION = "Quand le bureau de l'UE a-t-il ouvert à Almaty ?"
CACHE = Path(os.environ.get("QA_MODEL_CACHE") or Path.home() / ".cache" / "qa" / "models")

STEPS = r"""
import json, resource, sys, time
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) // 1024
rows = []
t = time.perf_counter()
def mark(step):
    global t
    now = time.perf_counter()
    rows.append([step, round(now - t, 3), rss(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024])
    t = now
import qa
mark("import qa")
kb = qa.KnowledgeBase.open(sys.argv[1])
mark("KnowledgeBase.open")
hits = kb.search(sys.argv[2])
mark("first search (model load)")
answer = kb.ask(sys.argv[2])
mark("first answer")
heavy = [m for m in ("torch", "transformers", "sentence_transformers", "spacy", "fastapi", "streamlit") if m in sys.modules]
print(json.dumps({"rows": rows, "answer": answer.text, "imported": heavy}))
"""


def variant_env(src: Path, cache: Path) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(src),
        "QA_MODEL_CACHE": str(cache),
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2"),
        "OMP_WAIT_POLICY": "PASSIVE",
        "TOKENIZERS_PARALLELISM": "false",
    }


def timed(command: list[str], env: dict[str, str]) -> tuple[float, int, str]:
    """Wall seconds, peak RSS (MB) of the process, its stdout."""
    started = time.perf_counter()
    proc = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    out = proc.stdout.read() if proc.stdout else ""
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(command)} failed (exit {os.waitstatus_to_exitcode(status)})")
    return wall, usage.ru_maxrss // 1024, out


def ask_command(index: Path) -> list[str]:
    return [PYTHON, "-m", "qa.cli", "ask", QUESTION, "--index", str(index)]


def import_times(index: Path, env: dict[str, str], top: int = 8) -> list[tuple[str, float]]:
    """The packages a cold `qa ask` imports, heaviest first (seconds, from `python -X importtime`)."""
    done = subprocess.run([PYTHON, "-X", "importtime", *ask_command(index)[1:]], env=env, capture_output=True, text=True)
    by_package: dict[str, float] = {}
    for line in done.stderr.splitlines():
        m = re.match(r"import time:\s+\d+ \|\s+(\d+) \| ( *)(\S+)", line)
        if m and len(m.group(2)) == 1:  # imported by qa (or the interpreter), not by another library
            package = m.group(3).split(".")[0]
            by_package[package] = by_package.get(package, 0.0) + int(m.group(1)) / 1e6
    return sorted(by_package.items(), key=lambda kv: -kv[1])[:top]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve_until_ready(index: Path, env: dict[str, str], timeout: float = 180) -> tuple[float, int]:
    port = free_port()
    started = time.perf_counter()
    proc = subprocess.Popen(
        [PYTHON, "-m", "qa.cli", "serve", "--index", str(index), "--port", str(port)],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        while time.perf_counter() - started < timeout:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=2) as r:
                    if r.status == 200 and json.loads(r.read()).get("ready"):
                        ready = time.perf_counter() - started
                        rss = next(int(x.split()[1]) // 1024 for x in open(f"/proc/{proc.pid}/status") if x.startswith("VmRSS"))
                        return ready, rss
            except OSError:
                pass
            time.sleep(0.1)
        raise SystemExit("qa serve did not become ready")
    finally:
        proc.terminate()
        proc.wait(30)


def prepare_before(ref: str, work: Path) -> tuple[Path, Path]:
    tree = work / "before"
    subprocess.run(["git", "worktree", "add", "--detach", str(tree), ref], cwd=ROOT, check=True, capture_output=True)
    cache = work / "before-cache"
    cache.mkdir()
    if (CACHE / "multilingual-e5-small").is_dir():
        shutil.copytree(CACHE / "multilingual-e5-small", cache / "multilingual-e5-small", copy_function=os.link)
    return tree / "src", cache


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", help="a git ref to compare against (e.g. the commit before a change)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-serve", action="store_true", help="skip the qa serve measurement")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="qa-cold-"))
    variants = {"after": (ROOT / "src", CACHE)}
    try:
        if args.before:
            variants = {"before": prepare_before(args.before, work), **variants}
        index = work / "index"
        subprocess.run(
            [PYTHON, "-m", "qa.cli", "ingest", "-q", "--index", str(index), str(ROOT / "corpus")],
            env=variant_env(*variants["after"]),
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
        for src, cache in variants.values():  # builds each variant's ONNX file once, outside the timings
            timed(ask_command(index), variant_env(src, cache))
        walls: dict[str, list[float]] = {name: [] for name in variants}
        peaks: dict[str, list[int]] = {name: [] for name in variants}
        answers: dict[str, str] = {}
        for _ in range(args.runs):  # interleaved, so both see the same machine
            for name, (src, cache) in variants.items():
                wall, peak, out = timed(ask_command(index), variant_env(src, cache))
                walls[name].append(wall)
                peaks[name].append(peak)
                answers[name] = out.strip().splitlines()[0] if out.strip() else ""
        print(f"## Cold `qa ask` ({args.runs} runs each, interleaved; load average {os.getloadavg()[0]:.2f})\n")
        print("| variant | best wall | median wall | peak RSS | answer |\n|---|---|---|---|---|")
        for name in variants:
            print(
                f"| {name} | {min(walls[name]):.2f} s | {statistics.median(walls[name]):.2f} s | "
                f"{max(peaks[name])} MB | {answers[name]} |"
            )
        if "before" in variants:
            print(
                f"\nafter/before: best wall {min(walls['after']) / min(walls['before']):.2f}×, "
                f"peak RSS {max(peaks['after']) / max(peaks['before']):.2f}×"
            )
        for name, (src, cache) in variants.items():
            env = variant_env(src, cache)
            done = subprocess.run([PYTHON, "-c", STEPS, str(index), QUESTION], env=env, capture_output=True, text=True)
            steps = json.loads(done.stdout.strip().splitlines()[-1])
            print(f"\n## Steps, {name} (heavy modules imported: {', '.join(steps['imported']) or 'none'})\n")
            print("| step | seconds | RSS after | peak RSS so far |\n|---|---|---|---|")
            for step, seconds, rss, peak in steps["rows"]:
                print(f"| {step} | {seconds:.2f} | {rss} MB | {peak} MB |")
            heaviest = ", ".join(f"{m} {s:.2f} s" for m, s in import_times(index, env))
            print(f"\nheaviest imports of a cold `qa ask` ({name}): {heaviest}")
        if not args.no_serve:
            print("\n## `qa serve` until /ready\n\n| variant | seconds to /ready | RSS when ready |\n|---|---|---|")
            for name, (src, cache) in variants.items():
                ready, rss = serve_until_ready(index, variant_env(src, cache))
                print(f"| {name} | {ready:.2f} s | {rss} MB |")
    finally:
        if args.before:
            subprocess.run(["git", "worktree", "remove", "--force", str(work / "before")], cwd=ROOT, capture_output=True)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
