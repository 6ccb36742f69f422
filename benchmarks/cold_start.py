"""Cold start against the floor, in one run: `qa ask`, `qa search`, `qa serve` → /ready and the Streamlit chat usable,
each as a ratio to the least a cold question can cost on this machine, measured in the same run.

    python benchmarks/cold_start.py                        # this checkout, reader off and on, 5 interleaved runs
    python benchmarks/cold_start.py --before 347f422       # also a baseline commit (its own worktree and model cache)
    python benchmarks/cold_start.py --no-chat --runs 3     # without the browser

**The floor** is a Python process that imports ONNX Runtime and `tokenizers`, opens the three e5 segment graphs of the
project's model cache, loads the tokenizer, embeds the question and takes 3 dot products — what any answer to a cold
question must pay before it reads a passage. Every figure is reported as its median over `--runs` (all variants
interleaved run by run, so each sees the same machine) and as a ratio to the floor's median; peak memory as the
difference to the floor's peak (`ru_maxrss` of the process).

Measured per variant and `QA_READER` mode (`off`, `on`): `qa ask` (wall, peak RSS, the answer's first line),
`qa search` (wall, peak RSS), `qa serve` until `/ready` answers ready (wall, RSS then), and `streamlit run app.py`
until the chat box is enabled in Debian's chromium (Playwright, a new browser context each time), then, the seed
question typed and sent at once, until its answer is shown (the whole cold path, whatever the page lets one do
before the model is loaded). For reference, `streamlit run` of a page with a title and a chat box and nothing of qa:
what Streamlit and the browser cost alone. Also the heaviest imports of a cold `qa ask` (`python -X importtime`; with
the model loading on threads, an import's time includes its waits for the GIL). Results: Markdown on stdout, JSON
with every run in `benchmarks/results/cold_start.json`.
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
QUESTION = "Quand le bureau de l'UE a-t-il ouvert à Almaty ?"
CACHE = Path(os.environ.get("QA_MODEL_CACHE") or Path.home() / ".cache" / "qa" / "models")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

FLOOR = r"""
import sys
import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

tokenizer_json, question, threads, *graphs = sys.argv[1:]
options = ort.SessionOptions()
options.add_session_config_entry("session.intra_op.allow_spinning", "0")
if threads.isdigit():
    options.intra_op_num_threads = int(threads)
sessions = [ort.InferenceSession(g, options, providers=["CPUExecutionProvider"]) for g in graphs]
tokenizer = Tokenizer.from_file(tokenizer_json)
encoded = tokenizer.encode("query: " + question)
x = np.array([encoded.ids], dtype=np.int64)
mask = np.ones_like(x)
for session in sessions:
    x = session.run(None, {session.get_inputs()[0].name: x, "attention_mask": mask})[0]
vector = x[0]
print([round(float(vector @ vector), 4) for _ in range(3)])
"""


@dataclass
class Variant:
    """A checkout to measure: its root (src/, app.py) and its model cache."""

    name: str
    root: Path
    cache: Path
    walls: dict[str, list[float]] = field(default_factory=dict)
    peaks: dict[str, list[int]] = field(default_factory=dict)
    answers: dict[str, str] = field(default_factory=dict)

    def env(self, reader: str = "off", **extra: str) -> dict[str, str]:
        return {
            **os.environ,
            "PYTHONPATH": str(self.root / "src"),
            "QA_MODEL_CACHE": str(self.cache),
            "QA_READER": reader,
            "HF_HUB_OFFLINE": "1",
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2"),
            "OMP_WAIT_POLICY": "PASSIVE",
            "TOKENIZERS_PARALLELISM": "false",
            "NO_PROXY": "127.0.0.1,localhost",
            **extra,
        }

    def record(self, figure: str, wall: float, peak: int = 0) -> None:
        self.walls.setdefault(figure, []).append(wall)
        if peak:
            self.peaks.setdefault(figure, []).append(peak)


def run_child(command: list[str], env: dict[str, str], cwd: Path = ROOT) -> tuple[float, int, str]:
    """Wall seconds, peak RSS (MB) of the process (``wait4``), its stdout."""
    with tempfile.TemporaryFile(mode="w+") as errors:
        started = time.perf_counter()
        proc = subprocess.Popen(command, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=errors, text=True)
        out = proc.stdout.read() if proc.stdout else ""
        _, status, usage = os.wait4(proc.pid, 0)  # reaped here, for its own peak RSS
        wall = time.perf_counter() - started
        proc.returncode = code = os.waitstatus_to_exitcode(status)
        if code:
            errors.seek(0)
            raise SystemExit(f"{' '.join(command)} failed (exit {code}):\n{errors.read()[-2000:]}")
    return wall, usage.ru_maxrss // 1024, out


def floor_command(variant: Variant) -> list[str]:
    """The floor process, on the model cache's own files (paths found by the project, outside the timing)."""
    from qa.embeddings import resolve_model_folder
    from qa.embeddings.onnx_build import MODEL_FILE, built_segments, onnx_folder_for

    folder = resolve_model_folder("multilingual-e5-small", variant.cache)
    graphs = [str(f) for _, _, f in built_segments(onnx_folder_for(folder, variant.cache, "onnx") / MODEL_FILE)]
    threads = os.environ.get("OMP_NUM_THREADS", "2")
    return [PYTHON, "-c", FLOOR, str(folder / "tokenizer.json"), QUESTION, threads, *graphs]


def qa_command(index: Path, *args: str) -> list[str]:
    return [PYTHON, "-m", "qa.cli", *args, "--index", str(index)]


def import_times(variant: Variant, index: Path, reader: str, top: int = 8) -> list[tuple[str, float]]:
    """The packages a cold `qa ask` imports from its own modules (or the interpreter), heaviest first: seconds
    (cumulative, from `python -X importtime`) per top-level package."""
    command = [PYTHON, "-X", "importtime", *qa_command(index, "ask", QUESTION)[1:]]
    done = subprocess.run(command, env=variant.env(reader), cwd=variant.root, capture_output=True, text=True)
    pending: dict[int, list[tuple[str, int, list[Any]]]] = {}
    roots: list[tuple[str, int, list[Any]]] = []
    for line in done.stderr.splitlines():  # children are printed before their parent, one more space deep
        m = re.match(r"import time:\s+\d+ \|\s+(\d+) \| ( *)(\S+)", line)
        if not m:
            continue
        depth = len(m.group(2))
        node = (m.group(3), int(m.group(1)), pending.pop(depth + 1, []))
        pending.setdefault(depth, []).append(node)
    roots = [node for nodes in pending.values() for node in nodes]
    by_package: dict[str, float] = {}

    def walk(node: tuple[str, int, list[Any]]) -> None:
        name, cumulative, children = node
        package = name.split(".")[0]
        if package == "qa":
            for child in children:
                walk(child)
        else:  # a library, where qa (or the interpreter) imported it
            by_package[package] = by_package.get(package, 0.0) + cumulative / 1e6

    for root in roots:
        walk(root)
    return sorted(by_package.items(), key=lambda kv: -kv[1])[:top]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rss_mb(pid: int) -> int:
    return next(int(x.split()[1]) // 1024 for x in open(f"/proc/{pid}/status") if x.startswith("VmRSS"))


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def serve_until_ready(variant: Variant, index: Path, reader: str, timeout: float = 180) -> tuple[float, int]:
    """Seconds from `qa serve` to `/ready` saying ready, and the server's RSS (MB) then."""
    port = free_port()
    started = time.perf_counter()
    proc = subprocess.Popen(
        qa_command(index, "serve", "--port", str(port)),
        env=variant.env(reader),
        cwd=variant.root,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        while time.perf_counter() - started < timeout:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=2) as r:
                    if r.status == 200 and json.loads(r.read()).get("ready"):
                        return time.perf_counter() - started, _rss_mb(proc.pid)
            except OSError:
                pass
            if proc.poll() is not None:
                raise SystemExit(f"qa serve exited with {proc.returncode}")
            time.sleep(0.05)
        raise SystemExit("qa serve did not become ready")
    finally:
        _stop(proc)


STREAMLIT_ALONE = 'import streamlit as st\n\nst.title("qa")\nst.chat_input("Quand ?")\n'
"""The Streamlit reference: a page with a title and a chat box, nothing of qa (what Streamlit itself costs)."""


def chat_until_usable(
    variant: Variant, index: Path, reader: str, browser: Any, script: Path | None = None, timeout: float = 180
) -> tuple[float, float | None, int]:
    """From `streamlit run app.py` (or ``script``), in a new browser context (cold cache; the page loaded as soon as
    the server answers): seconds to the chat box enabled; then, the question typed and sent at once, seconds to its
    answer shown (None for ``script``); and the server's RSS (MB) then."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    started = time.perf_counter()
    command = [PYTHON, "-m", "streamlit", "run", str(script or "app.py"), "--server.port", str(port)]
    command += ["--server.address", "127.0.0.1", "--server.headless", "true", "--browser.gatherUsageStats", "false"]
    proc = subprocess.Popen(
        command,
        env=variant.env(reader, QA_INDEX_DIR=str(index)),
        cwd=variant.root,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    context = browser.new_context()
    page = context.new_page()
    try:
        while True:
            try:
                page.goto(url, timeout=5_000)
                break
            except Exception:  # noqa: BLE001 - playwright's error while the port is still closed
                if proc.poll() is not None or time.perf_counter() - started > timeout:
                    raise SystemExit("streamlit did not serve the app") from None
                time.sleep(0.05)
        chat = page.get_by_test_id("stChatInputTextArea")
        chat.wait_for(state="visible", timeout=timeout * 1000)
        while not chat.is_enabled():
            time.sleep(0.02)
        usable = time.perf_counter() - started
        answered = None
        if script is None:
            chat.fill(QUESTION)
            chat.press("Enter")
            reply = page.get_by_test_id("stChatMessage").nth(1).get_by_text(re.compile(r"199[34]")).first
            reply.wait_for(state="visible", timeout=timeout * 1000)
            answered = time.perf_counter() - started
        return usable, answered, _rss_mb(proc.pid)
    finally:
        context.close()
        _stop(proc)


def prepare_before(ref: str, work: Path) -> Variant:
    tree = work / "before"
    subprocess.run(["git", "worktree", "add", "--detach", str(tree), ref], cwd=ROOT, check=True, capture_output=True)
    cache = work / "before-cache"
    cache.mkdir()
    if (CACHE / "multilingual-e5-small").is_dir():
        shutil.copytree(CACHE / "multilingual-e5-small", cache / "multilingual-e5-small", copy_function=os.link)
    return Variant(f"before ({ref})", tree, cache)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def report(floor: Variant, variants: list[Variant], args: argparse.Namespace) -> dict[str, Any]:
    base_wall, base_peak = median(floor.walls["floor"]), max(floor.peaks["floor"])
    print(f"## Cold start against the floor ({args.runs} runs, interleaved; load average {os.getloadavg()[0]:.2f})\n")
    print(f"floor: median {base_wall:.2f} s (best {min(floor.walls['floor']):.2f} s), peak {base_peak} MB\n")
    print("| variant | figure | median | × floor | best | peak / RSS | over the floor's peak | answer |")
    print("|---|---|---|---|---|---|---|---|")
    rows = []
    for variant in [floor, *variants]:
        for figure, walls in variant.walls.items():
            if figure == "floor":
                continue
            peak = max(variant.peaks.get(figure, [0]))
            row = {
                "variant": variant.name,
                "figure": figure,
                "median_s": round(median(walls), 3),
                "ratio": round(median(walls) / base_wall, 2),
                "best_s": round(min(walls), 3),
                "peak_mb": peak,
                "over_floor_mb": peak - base_peak if peak else None,
                "runs_s": [round(w, 3) for w in walls],
                "answer": variant.answers.get(figure, ""),
            }
            rows.append(row)
            over = f"{row['over_floor_mb']:+d} MB" if peak else ""
            print(
                f"| {variant.name} | {figure} | {row['median_s']:.2f} s | **{row['ratio']:.2f}×** | {row['best_s']:.2f} s "
                f"| {f'{peak} MB' if peak else ''} | {over} | {row['answer']} |"
            )
    return {"floor": {"median_s": base_wall, "peak_mb": base_peak, "runs_s": floor.walls["floor"]}, "rows": rows}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", help="a git ref to compare against (its own worktree and model cache)")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--reader", default="off,on", help="QA_READER modes to measure (default off,on)")
    parser.add_argument("--no-serve", action="store_true", help="skip `qa serve` → /ready")
    parser.add_argument("--no-chat", action="store_true", help="skip the Streamlit chat (no browser)")
    parser.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "cold_start.json"), help="where the runs go")
    args = parser.parse_args()
    readers = [r.strip() for r in args.reader.split(",") if r.strip()]
    work = Path(tempfile.mkdtemp(prefix="qa-cold-"))
    after = Variant("this checkout", ROOT, CACHE)
    variants = [after]
    floor = Variant("reference", ROOT, CACHE)
    playwright = browser = None
    try:
        if args.before:
            variants.insert(0, prepare_before(args.before, work))
        index = work / "index"
        ingest = qa_command(index, "ingest", "-q", str(ROOT / "corpus"))
        subprocess.run(ingest, env=after.env(), cwd=ROOT, check=True, capture_output=True)
        for variant in variants:  # each variant's ONNX files built once, outside the timings
            for reader in readers:
                run_child(qa_command(index, "ask", QUESTION), variant.env(reader), variant.root)
        floor_cmd = floor_command(after)
        alone = work / "streamlit_alone.py"
        alone.write_text(STREAMLIT_ALONE, encoding="utf-8")
        if not args.no_chat:
            from playwright.sync_api import sync_playwright

            playwright = sync_playwright().start()
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        for run in range(args.runs):  # interleaved, so every figure sees the same machine
            print(f"run {run + 1}/{args.runs}…", file=sys.stderr, flush=True)
            wall, peak, _ = run_child(floor_cmd, floor.env())
            floor.record("floor", wall, peak)
            if browser is not None:
                wall, _, rss = chat_until_usable(floor, index, "off", browser, script=alone)
                floor.record("Streamlit alone (title + chat box, no qa)", wall, rss)
            for variant in variants:
                for reader in readers:
                    for command, what in (("ask", QUESTION), ("search", QUESTION)):
                        figure = f"qa {command}, reader {reader}"
                        wall, peak, out = run_child(qa_command(index, command, what), variant.env(reader), variant.root)
                        variant.record(figure, wall, peak)
                        variant.answers[figure] = out.strip().splitlines()[0] if out.strip() else ""
                    if not args.no_serve:
                        wall, rss = serve_until_ready(variant, index, reader)
                        variant.record(f"qa serve → /ready, reader {reader}", wall, rss)
                    if browser is not None:
                        wall, answered, rss = chat_until_usable(variant, index, reader, browser)
                        variant.record(f"chat usable (box enabled), reader {reader}", wall, rss)
                        if answered is not None:
                            variant.record(f"chat: first answer shown, reader {reader}", answered)
        result = report(floor, variants, args)
        for variant in variants:
            heaviest = ", ".join(f"{m} {s:.2f} s" for m, s in import_times(variant, index, readers[0]))
            print(f"\nheaviest imports of a cold `qa ask` ({variant.name}, reader {readers[0]}): {heaviest}")
            result.setdefault("imports", {})[variant.name] = heaviest
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    finally:
        if browser is not None:
            browser.close()
        if playwright is not None:
            playwright.stop()
        if args.before:
            subprocess.run(["git", "worktree", "remove", "--force", str(work / "before")], cwd=ROOT, capture_output=True)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
