import json

import pytest

from qa.documents import Article, iter_inputs, normalize_text
from qa.errors import DocumentError
from qa.schema import Skipped

from helpers import SEED, write

MB = 10**6


def load(*paths, max_bytes=20 * MB):
    return list(iter_inputs(paths, max_bytes))


def test_seed_article_loads_with_file_name_title_and_content_id():
    [article] = load(SEED)
    assert isinstance(article, Article)
    assert article.title == "ue-kazakhstan"
    assert "En novembre 1994, la délégation de l’UE au Kazakhstan a commencé ses travaux à Almaty." in article.text
    assert article.derived_id and len(article.id) == 16
    assert load(SEED)[0].id == article.id  # stable


def test_normalize_text_folds_odd_spaces_and_invisible_characters():
    raw = "Le\u00a0président\u202f: « oui\u00a0»\u200b.\r\nFin\u00ad.\n\n\n\nSuite\tici  "
    assert normalize_text(raw) == "Le président : « oui ».\nFin.\n\nSuite ici"
    assert normalize_text("e\u0301te\u0301") == "été"  # NFC


def test_front_matter_sets_id_and_metadata(tmp_path):
    path = write(
        tmp_path / "a.md",
        "---\nid: art-1\ntitle: Le titre\ndate: 2022-02-07\nsource: Astana Times\nurl: https://x.kz/a\n---\n"
        "# Titre markdown\n\nDu **gras** et un [lien](https://y).\n",
    )
    [a] = load(path)
    assert (a.id, a.title, a.date, a.source, a.url) == ("art-1", "Le titre", "2022-02-07", "Astana Times", "https://x.kz/a")
    assert not a.derived_id
    assert a.text == "Titre markdown\n\nDu gras et un lien."


def test_markdown_title_defaults_to_first_heading(tmp_path):
    [a] = load(write(tmp_path / "note.md", "# Sommet UE\nTexte.\n"))
    assert a.title == "Sommet UE"


def test_html_main_text_is_extracted_without_scripts_or_boilerplate(tmp_path):
    html = """<html><head><title>Almaty : le bureau de l'UE</title><style>.x{color:red}</style>
    <script>var secret = "tracking-code";</script></head><body>
    <nav><a href="/">Accueil</a> | <a href="/monde">Monde</a></nav>
    <article><h1>Le bureau de l'UE à Almaty</h1>
    <p>En novembre 1994, la délégation de l'UE au Kazakhstan a commencé ses travaux à Almaty, selon un communiqué publié hier.</p>
    <p>Le Kazakhstan avait ouvert son propre bureau à Bruxelles en décembre 1993,
    quelques mois après les relations diplomatiques.</p>
    </article><footer>© 2022 Journal — tous droits réservés</footer>
    <script>document.write("injected")</script></body></html>"""
    [a] = load(write(tmp_path / "page.html", html))
    assert isinstance(a, Article), a
    assert "En novembre 1994" in a.text and "Bruxelles" in a.text
    assert "tracking-code" not in a.text and "injected" not in a.text and "color:red" not in a.text
    assert "Accueil" not in a.text
    assert "Almaty" in a.title


def test_jsonl_reports_each_bad_line_and_loads_the_rest(tmp_path):
    lines = [
        json.dumps({"id": "a1", "text": "Premier article.", "title": "Un", "date": "2022-02-07", "source": "AFP"}),
        "{not json",
        json.dumps({"id": "a2"}),
        json.dumps({"id": "a3", "text": 42}),
        json.dumps({"id": "a1", "text": "Doublon."}),
        json.dumps({"id": "a4", "text": "Quatre.", "date": "07/02/2022"}),
        "",
        json.dumps({"id": 5, "text": "Cinq.", "date": "2022-02-07T10:00:00Z"}),
        json.dumps(["a", "list"]),
    ]
    path = write(tmp_path / "batch.jsonl", "\n".join(lines) + "\n")
    items = load(path)
    good = [i for i in items if isinstance(i, Article)]
    errors = {e.line: e.reason for e in items if isinstance(e, DocumentError)}
    assert [a.id for a in good] == ["a1", "5"]
    assert good[0].source == "AFP" and good[1].date == "2022-02-07"
    assert set(errors) == {2, 3, 4, 5, 6, 9}
    assert "invalid JSON" in errors[2]
    assert "'text'" in errors[3] and "'text'" in errors[4]
    assert "duplicate id 'a1'" in errors[5] and "line 1" in errors[5]
    assert "YYYY-MM-DD" in errors[6]
    assert "JSON object" in errors[9]
    assert str([e for e in items if isinstance(e, DocumentError)][0]).startswith(f"{path}:2: ")


def test_latin1_text_is_decoded_not_mojibake(tmp_path):
    text = "Le député a déclaré à la presse que l'économie française était très fragile. " * 3
    [a] = load(write(tmp_path / "vieux.txt", text.encode("cp1252")))
    assert isinstance(a, Article)
    assert "député a déclaré" in a.text and "Ã" not in a.text


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("empty.txt", "", "empty article"),
        ("blank.md", "  \n\t\n", "empty article"),
        ("photo.txt", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "binary file"),
        ("scripts.html", "<html><body><script>alert(1)</script></body></html>", "no article text"),
        ("bad-front.md", "---\ntitle: [unclosed\n---\nTexte.", "invalid front matter"),
    ],
)
def test_bad_files_give_one_line_errors_naming_the_file(tmp_path, name, content, reason):
    path = write(tmp_path / name, content)
    [item] = load(path)
    assert isinstance(item, DocumentError)
    assert reason in item.reason
    assert str(item).startswith(str(path)) and "\n" not in str(item)


def test_size_limit_and_missing_paths(tmp_path):
    big = write(tmp_path / "big.txt", "mot " * 5000)
    [item] = load(big, max_bytes=1000)
    assert isinstance(item, DocumentError) and "QA_MAX_FILE_MB" in item.reason
    [missing] = load(tmp_path / "nope.txt")
    assert isinstance(missing, DocumentError) and "no such file" in missing.reason


def test_folders_are_walked_sorted_skipping_hidden_and_unsupported(tmp_path):
    write(tmp_path / "c" / "b.txt", "Bé.")
    write(tmp_path / "c" / "a.md", "A.")
    write(tmp_path / "c" / ".hidden.txt", "caché")
    write(tmp_path / "c" / "image.png", b"\x89PNG")
    items = load(tmp_path / "c")
    assert [i.text for i in items if isinstance(i, Article)] == ["A.", "Bé."]
    [skip] = [i for i in items if isinstance(i, Skipped)]
    assert skip.path.endswith("image.png") and "unsupported" in skip.reason


def test_explicit_unsupported_file_is_an_error(tmp_path):
    [item] = load(write(tmp_path / "doc.pdf", "%PDF"))
    assert isinstance(item, DocumentError) and ".pdf" in item.reason and ".jsonl" in item.reason
