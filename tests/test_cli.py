import json
import subprocess
import sys

import pytest

from qa.cli import main

from helpers import ROOT, SEED, write


@pytest.fixture(autouse=True)
def _fake(use_fake_embedder):
    return use_fake_embedder


def test_ingest_prints_a_summary_and_second_run_adds_nothing(capsys):
    assert main(["ingest", str(SEED)]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("1 added, 0 updated, 0 unchanged, 0 skipped, 0 errors")
    assert "chunks/s" in out
    assert "ingest" in err  # the progress bar
    assert main(["ingest", "-q", str(SEED)]) == 0
    assert capsys.readouterr().out.startswith("0 added, 0 updated, 1 unchanged")


def test_ingest_defaults_to_the_corpus_dir_and_reports_errors_with_exit_1(tmp_path, capsys, monkeypatch):
    write(tmp_path / "corpus" / "ok.txt", "Un article.")
    write(tmp_path / "corpus" / "bad.jsonl", '{"id": "b1", "text": ""}\n')
    assert main(["ingest", "-q"]) == 1
    out = capsys.readouterr().out
    assert "1 added" in out and "1 errors" in out
    assert "bad.jsonl:1: empty 'text'" in out


def test_search_json_gives_passages_with_offsets(capsys):
    main(["ingest", "-q", str(SEED)])
    capsys.readouterr()
    assert main(["search", "délégation UE Almaty novembre 1994", "-k", "2", "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert len(hits) == 2
    assert "Almaty" in hits[0]["text"]
    assert {"doc_id", "chunk_id", "title", "start", "end", "score", "url", "date", "source"} <= set(hits[0])


def test_search_text_output_and_options_after_the_command(tmp_path, capsys):
    main(["ingest", "-q", "--index", str(tmp_path / "other"), str(SEED)])
    capsys.readouterr()
    assert main(["search", "--index", str(tmp_path / "other"), "Almaty", "-k", "1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("[1] ue-kazakhstan  (score ")


def test_user_errors_are_one_line_with_exit_code_1(capsys):
    main(["ingest", "-q", str(SEED)])
    capsys.readouterr()
    assert main(["delete", "nope"]) == 1
    err = capsys.readouterr().err
    assert err == "qa: error: no article with id 'nope' in the index: `qa info` lists what is there\n"
    assert main(["search", "Almaty", "--from", "2022-13-45"]) == 1
    assert "YYYY-MM-DD" in capsys.readouterr().err


def test_delete_and_info(capsys):
    main(["ingest", "-q", str(SEED)])
    main(["info", "--json"])
    out = capsys.readouterr().out
    stats = json.loads(out[out.index("{") :])
    assert stats["articles"] == 1 and stats["model"] == "fake/hashed-bag-of-words"
    doc_id = main(["search", "Almaty", "--json"]) or json.loads(capsys.readouterr().out)[0]["doc_id"]
    assert main(["delete", doc_id]) == 0
    assert f"deleted {doc_id}" in capsys.readouterr().out
    main(["info"])
    assert "articles: 0" in capsys.readouterr().out


def test_ingest_py_is_the_same_command():
    result = subprocess.run([sys.executable, str(ROOT / "ingest.py"), "--help"], capture_output=True, text=True, check=True)
    assert "usage: qa ingest" in result.stdout and "--rebuild" in result.stdout
