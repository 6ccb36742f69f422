"""Hostile inputs: each bad file gives one line naming the file (and line) and the reason, is
skipped, and everything good beside it is ingested; the exit code says something failed."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from qa.cli import main

from helpers import write

GOOD = "Le port de Marseille a battu un record de trafic en 2021, selon la direction du port."


@pytest.fixture
def hostile(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A folder with every hostile case; returns it and ``{file or file:line → expected reason}``."""
    d = tmp_path / "inbox"
    expected: dict[str, str] = {}

    def bad(name: str, content: str | bytes, reason: str) -> None:
        write(d / name, content)
        expected[name] = reason

    bad("binary.txt", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + os.urandom(2000), "binary file (NUL bytes)")
    bad("controls.txt", bytes(range(1, 9)) * 400, "binary file (control characters)")
    bad("empty.txt", "", "empty article")
    bad("blank.md", " \n\t\n\u00a0\n", "empty article")
    bad("scripts-only.html", "<html><body><script>alert('x')</script><style>p{}</style></body></html>", "no article text")
    with (d / "huge.txt").open("wb") as fh:  # 50 MB of text, over the 20 MB default limit
        fh.write(("mot " * 250_000 + "\n").encode() * 50)
    expected["huge.txt"] = "file is 50.0 MB, over the 20 MB limit"
    feed = [
        json.dumps({"id": "j1", "text": "Premier article du flux, sur le port de Marseille."}),
        "{not json",
        json.dumps({"id": "j2"}),
        json.dumps({"id": "j3", "text": 42}),
        json.dumps({"id": "j4", "text": "Titre faux.", "title": 7}),
        json.dumps({"id": "j1", "text": "Doublon."}),
        json.dumps({"id": ["x"], "text": "Id faux."}),
        json.dumps({"id": "j5", "text": "Second article du flux, sur la lavande de Provence."}),
    ]
    write(d / "feed.jsonl", "\n".join(feed) + "\n")
    expected.update(
        {
            "feed.jsonl:2": "invalid JSON",
            "feed.jsonl:3": "missing or invalid 'text'",
            "feed.jsonl:4": "missing or invalid 'text'",
            "feed.jsonl:5": "field 'title' must be a string",
            "feed.jsonl:6": "duplicate id 'j1' (first on line 1)",
            "feed.jsonl:7": "missing or invalid 'id'",
        }
    )
    os.symlink("loop.txt", d / "loop.txt")  # a file symlink loop
    expected["loop.txt"] = "cannot read the file (Too many levels of symbolic links)"
    os.symlink("nowhere.txt", d / "dangling.txt")
    expected["dangling.txt"] = "cannot read the file (No such file or directory)"
    os.mkfifo(d / "pipe.txt")  # would block a naive reader forever
    expected["pipe.txt"] = "not a regular file"
    os.symlink(".", d / "again")  # a directory symlink loop: skipped, not an error
    bad_name = os.fsencode(d) + b"/vide-\xff\nnom.txt"  # undecodable byte and a newline in the name, empty content
    Path(os.fsdecode(bad_name)).write_bytes(b"")
    expected["vide-\\xff\\nnom.txt"] = "empty article"
    if os.geteuid() != 0:  # root reads anything
        write(d / "secret.txt", GOOD).chmod(0)
        expected["secret.txt"] = "cannot read the file (Permission denied)"

    # good files beside them
    write(d / "good.txt", GOOD)
    write(d / "notes.md", "# Sommet\n\nLes ministres se sont réunis à Bruxelles pour parler de la lavande.")
    write(
        d / "latin1.txt", "L’économie française coûte 5 € à l’État ; « déjà » très fragile, a déclaré le député.".encode("cp1252")
    )
    write(
        d / "page.html",
        """<html><head><title>Almaty</title><style>.x{color:red}</style><script>var spy = "tracking-code";</script></head>
        <body><nav>Accueil | Monde</nav><article><h1>Le bureau de l'UE à Almaty</h1>
        <p>En novembre 1994, la délégation de l'UE au Kazakhstan a commencé ses travaux à Almaty, selon un communiqué.</p>
        <iframe src="https://ads.example/pub">publicité iframe</iframe>
        <p>Le Kazakhstan avait ouvert son propre bureau à Bruxelles en décembre 1993, après les relations diplomatiques.</p>
        </article><script>document.write("injected")</script></body></html>""",
    )
    Path(os.fsdecode(os.fsencode(d) + b"/caf\xe9 \xe0 l'\xe9t\xe9 (2).txt")).write_bytes("Un café à Almaty, l'été.".encode())
    write(d / "espace et accents é #1.txt", "Les accents et les espaces ne gênent pas l'ingestion.")
    write(d / "rapport.pdf", b"%PDF-1.4")
    return d, expected


def test_hostile_inputs_are_reported_one_line_each_and_the_rest_is_ingested(hostile, use_fake_embedder, capsys):
    folder, expected = hostile
    index = folder.parent / "index"
    assert main(["ingest", "-q", "--index", str(index), str(folder)]) == 1  # something failed
    out = capsys.readouterr().out
    lines = out.splitlines()
    errors = [line for line in lines if line.startswith("  error   ")]
    print("\n| case | message |\n|---|---|")
    for case, reason in expected.items():
        name, _, lineno = case.partition(":")
        where = f"/{name}:{lineno}: " if lineno else f"/{name}: "
        [line] = [e for e in errors if where in e]  # exactly one line per case, naming the file (and line)
        assert reason in line, line
        print(f"| {case} | {line.split(': ', 1)[1]} |")
    assert len(errors) == len(expected)
    assert lines[0].startswith("8 added, 0 updated, 0 unchanged, 2 skipped, ")  # 6 good files + 2 good JSON lines
    skipped = "\n".join(line for line in lines if line.startswith("  skipped "))
    assert "rapport.pdf: unsupported file type .pdf" in skipped and "symlink loop" in skipped

    from qa import KnowledgeBase

    with KnowledgeBase.open(index, embedder=use_fake_embedder) as kb:
        titles = {kb.article(d).title: kb.article(d) for d in kb.manifest.doc_ids()}
        assert {"j1", "j5"} <= set(kb.manifest.doc_ids())
        assert "L’économie française coûte 5 € à l’État" in titles["latin1"].text  # cp1252, not mojibake
        page = next(a for a in titles.values() if "Almaty" in a.title and "1994" in a.text)
        assert "tracking-code" not in page.text and "injected" not in page.text and "color:red" not in page.text
        assert "publicité iframe" not in page.text
        assert kb.search("tracking code injected publicité", k=5, mode="lexical") == []
        assert any("café" in a.text for a in titles.values())
        assert kb.check().ok


def test_large_jsonl_is_streamed_and_only_oversized_lines_are_refused(tmp_path, use_fake_embedder, monkeypatch, capsys):
    monkeypatch.setenv("QA_MAX_FILE_MB", "0.01")  # 10 kB: per article line, not per file
    path = tmp_path / "feed.jsonl"
    with path.open("w", encoding="utf-8") as fh:
        for i in range(300):
            fh.write(json.dumps({"id": f"a{i}", "text": f"Article numéro {i} du flux. " * 20}) + "\n")
        fh.write(json.dumps({"id": "big", "text": "trop long " * 5000}) + "\n")
        fh.write(json.dumps({"id": "after", "text": "La ligne après la trop longue est lue."}) + "\n")
    assert path.stat().st_size > 100_000
    assert main(["ingest", "-q", str(path)]) == 1
    out = capsys.readouterr().out
    assert out.startswith("301 added") and "feed.jsonl:301: line over the 0 MB limit" in out
