"""End to end in a real browser: Debian chromium driven by Playwright, against `streamlit run app.py`
with the real model and the shipped corpus. Writes a screenshot and timings to test-artifacts/browser/.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from helpers import CORPUS, MODEL_CACHE, ROOT

pytestmark = [pytest.mark.browser, pytest.mark.slow]  # chromium, and the real model

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
OUT = ROOT / "test-artifacts" / "browser"
# the first non-transparent background colour from an element up to its chat message
BACKGROUND_JS = """e => {
  for (let n = e; n && !n.matches('[data-testid=stChatMessage]'); n = n.parentElement) {
    const c = getComputedStyle(n).backgroundColor;
    if (c && c !== 'transparent' && c !== 'rgba(0, 0, 0, 0)') return c;
  }
  return null;
}"""
QUESTION = "Quand le bureau de l'UE a-t-il ouvert à Almaty ?"
ALMATY = "En novembre 1994, la délégation de l’UE au Kazakhstan a commencé ses travaux à Almaty."
NEW_ARTICLE = (
    "---\ntitle: Astana inaugure un musée du textile\ndate: 2022-03-15\nsource: Test\n---\n"
    "La ville d'Astana a inauguré un musée consacré au textile des steppes. "
    "Le musée du textile a ouvert ses portes le 12 mars 2022, en présence du maire. "
    "Il présente plus de trois cents tapis anciens.\n"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"streamlit exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.25)
    pytest.fail(f"{url} did not answer within {timeout:.0f} s:\n{log.read_text()[-3000:]}")


@pytest.fixture
def app_url(tmp_path):
    """The shipped corpus indexed with the real model (as `make run` does), then `streamlit run app.py`, with the
    default settings (the reading answerer: ``QA_READER`` unset)."""
    if not Path(CHROMIUM).exists():
        pytest.fail("chromium is not installed: run `make browser` (apt-get install chromium), then run the tests again")
    OUT.mkdir(parents=True, exist_ok=True)
    env = {
        **{k: v for k, v in os.environ.items() if k != "QA_READER"},
        "QA_INDEX_DIR": str(tmp_path / "index"),
        "QA_CORPUS_DIR": str(tmp_path / "corpus"),
        "QA_MODEL_CACHE": str(MODEL_CACHE),
        "HF_HUB_OFFLINE": "1",
        "NO_PROXY": "127.0.0.1,localhost",
    }
    shutil.copytree(CORPUS, tmp_path / "corpus", ignore=shutil.ignore_patterns("uploads"))
    qa = Path(sys.executable).parent / "qa"
    subprocess.run([str(qa), "ingest"], env=env, cwd=ROOT, check=True, capture_output=True, timeout=600)
    port = free_port()
    log = OUT / "streamlit.log"
    started = time.monotonic()
    with log.open("w") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port), "--server.address", "127.0.0.1"],
            cwd=ROOT,  # .streamlit/config.toml: headless, no usage statistics
            env=env,
            stdout=fh,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_http(f"http://127.0.0.1:{port}/_stcore/health", 180, proc, log)
        yield f"http://127.0.0.1:{port}", started, tmp_path
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_ask_in_a_real_browser(app_url):
    from playwright.sync_api import expect, sync_playwright

    url, started, tmp_path = app_url
    timings: dict[str, float] = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1200, "height": 1400})
        try:
            page.goto(url)
            chat = page.get_by_placeholder(QUESTION)  # the chat box (its placeholder is the example question)
            expect(chat).to_be_enabled(timeout=240_000)
            expect(page.get_by_text("Prêt")).to_be_visible(timeout=240_000)  # the loading status has finished
            timings["start_to_ready_s"] = time.monotonic() - started

            def ask(question: str, expected: str) -> float:
                before = page.get_by_test_id("stChatMessage").count()
                t0 = time.monotonic()
                chat.fill(question)
                chat.press("Enter")
                answer = page.get_by_test_id("stChatMessage").nth(before + 1)
                expect(answer).to_contain_text(expected, timeout=180_000)
                return time.monotonic() - t0

            timings["first_answer_s"] = ask(QUESTION, "novembre 1994")
            answer = page.get_by_test_id("stChatMessage").nth(1)
            expect(answer.get_by_text("[1] ue-kazakhstan", exact=False)).to_be_visible()
            highlighted = answer.locator("strong").filter(has_text="Almaty").first
            expect(highlighted).to_have_text(ALMATY)
            # the quote has a background colour of its own; the rest of the passage does not
            quote_bg = highlighted.evaluate(BACKGROUND_JS)
            assert quote_bg and quote_bg != answer.locator("blockquote").first.evaluate(BACKGROUND_JS)
            page.screenshot(path=str(OUT / "answer.png"), full_page=True)

            timings["follow_up_answer_s"] = ask("Et à Bruxelles ?", "décembre 1993")
            timings["warm_answer_s"] = ask("Quand les relations diplomatiques ont-elles été établies ?", "1993")

            # a new article uploaded from the sidebar can be asked about at once
            page.get_by_text("Ajouter des articles").click()
            upload = tmp_path / "musee-textile.md"
            upload.write_text(NEW_ARTICLE, encoding="utf-8")
            page.locator("input[type=file]").set_input_files(str(upload))
            page.get_by_role("button", name="Indexer").click()
            expect(page.get_by_text("Ajoutés : 1", exact=False)).to_be_visible(timeout=120_000)
            assert (tmp_path / "corpus" / "uploads" / "musee-textile.md").read_text(encoding="utf-8") == NEW_ARTICLE
            timings["answer_about_upload_s"] = ask("Quand le musée du textile a-t-il ouvert ?", "12 mars 2022")
            page.screenshot(path=str(OUT / "after-upload.png"), full_page=True)
        except Exception:
            page.screenshot(path=str(OUT / "failure.png"), full_page=True)
            (OUT / "failure.html").write_text(page.content(), encoding="utf-8")
            raise
        finally:
            browser.close()
    timings = {k: round(v, 2) for k, v in timings.items()}
    (OUT / "timings.json").write_text(json.dumps(timings, indent=2) + "\n", encoding="utf-8")
    print("browser timings:", timings, "screenshot:", OUT / "answer.png")
