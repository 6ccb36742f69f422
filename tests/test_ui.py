"""The chat's pure formatting (qa.ui.chat) and browser uploads (qa.ui.uploads), without Streamlit."""

from datetime import date
from pathlib import Path

import pytest

from qa import Answer, Citation, DocumentError, KnowledgeBase, Passage
from qa.ui.chat import (
    answer_markdown,
    answer_view,
    answerer_choices,
    context_markdown,
    escape_markdown,
    history_pairs,
    ingest_summary,
    passage_markdown,
    search_filters,
)
from qa.ui.i18n import MESSAGES, translator
from qa.ui.uploads import ingest_uploads, safe_filename, save_upload

from helpers import SEED

PASSAGE_TEXT = "Le port a rouvert le 3 mars. Il était fermé depuis mai."
ARTICLE = "Premier paragraphe sur autre chose. " * 30 + PASSAGE_TEXT + " " + "Suite. " * 200
P_START = ARTICLE.index("Le port")


def passage(**changes) -> Passage:
    fields = dict(
        doc_id="d1",
        chunk_id="d1#0",
        text=PASSAGE_TEXT,
        title="Port *fermé*",
        date="2020-03-04",
        source="AFP",
        url="https://example.org/a",
        score=0.8,
        start=P_START,
        end=P_START + len(PASSAGE_TEXT),
    )
    fields.update(changes)
    return Passage(**fields)


def cited_answer() -> Answer:
    p = passage()
    quote = "Le port a rouvert le 3 mars."
    return Answer(
        text="Le 3 mars.", citations=[Citation(p, quote, 0, len(quote))], passages=[p], question="Quand le port a-t-il rouvert ?"
    )


def test_answer_view_numbers_sources_and_highlights_the_quote():
    view = answer_view(cited_answer(), article_text=lambda doc_id: ARTICLE if doc_id == "d1" else None)
    assert view.reply == "**Le 3 mars.**" and not view.abstained and view.note is None
    [source] = view.sources
    assert source.heading == "**\\[1\\] Port \\*fermé\\* — 2020-03-04 · AFP**  \n<https://example.org/a>"
    assert source.passage == "> :orange-background[**Le port a rouvert le 3 mars.**] Il était fermé depuis mai."
    # the context: text on both sides of the passage, cut at spaces, the same sentence highlighted
    assert source.context.startswith("… ") and source.context.endswith(" …")
    assert ":orange-background[**Le port a rouvert le 3 mars.**]" in source.context
    assert "Premier paragraphe" in source.context and "Suite." in source.context
    assert len(source.context) < 2000


def test_answer_view_notes_a_rewritten_follow_up_and_a_missing_article():
    answer = cited_answer()
    view = answer_view(answer, translator("en"), article_text=lambda doc_id: None, asked="Et le port ?")
    assert view.note == "Understood as: “Quand le port a-t-il rouvert ?”"
    assert view.sources[0].context is None
    assert answer_view(answer, asked="Quand le port a-t-il rouvert ?").note is None


def test_context_falls_back_to_the_passage_when_the_article_changed():
    md = context_markdown("un tout autre texte", passage(), 0, 5)
    assert md == ":orange-background[**Le po**]rt a rouvert le 3 mars. Il était fermé depuis mai."


def test_abstention_view_lists_closest_passages_without_highlight():
    others = [passage(chunk_id=f"d1#{i}", score=0.5 - i / 10) for i in range(5)]
    answer = Answer(text="Je ne trouve pas cela dans le corpus.", citations=[], passages=others, abstained=True)
    view = answer_view(answer)
    assert view.abstained and view.note == "Le corpus ne contient pas la réponse."
    assert view.sources_title == "Passages les plus proches :" and len(view.sources) == 3
    assert all(":orange-background" not in s.passage for s in view.sources)
    md = answer_markdown(answer)
    assert md.startswith("Je ne trouve pas cela dans le corpus.") and "\\[3\\] Port" in md


def test_escape_markdown_neutralises_markup_and_directives():
    assert escape_markdown("a_b *c* :red[x] [l](u) #h") == "a\\_b \\*c\\* \\:red\\[x\\] \\[l\\]\\(u\\) \\#h"
    md = passage_markdown(passage(text="*Pas* de #titre\nligne 2", url=""), 2)
    assert md.startswith("**\\[2\\] Port \\*fermé\\* — 2020-03-04 · AFP \\(score 0.800\\)**")
    assert "> \\*Pas\\* de \\#titre\n> ligne 2" in md


def test_history_pairs_skip_failed_turns():
    a1 = Answer(text="En novembre 1994.", citations=[], passages=[])
    messages = [
        {"role": "user", "text": "Quand… Almaty ?"},
        {"role": "assistant", "answer": a1},
        {"role": "user", "text": "Et ?"},
        {"role": "assistant", "error": "boom"},
        {"role": "user", "text": "Et à Bruxelles ?"},
    ]
    assert history_pairs(messages) == [("Quand… Almaty ?", "En novembre 1994.")]


def test_search_filters_and_answerer_choices():
    assert search_filters() == {}
    assert search_filters(["AFP"], date(2020, 1, 1), None) == {"source": ["AFP"], "date_from": "2020-01-01"}
    assert search_filters((), None, date(2021, 12, 31)) == {"date_to": "2021-12-31"}
    assert answerer_choices("extractive") == ["extractive"]
    assert answerer_choices("ollama:qwen2.5") == ["ollama:qwen2.5", "extractive"]


def test_every_language_has_every_message():
    assert set(MESSAGES["fr"]) == set(MESSAGES["en"])


# -- uploads -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("article.txt", "article.txt"),
        ("../../etc/passwd.txt", "passwd.txt"),
        ("C:\\Users\\x\\Dépêche du 3 mars.MD", "Dépêche du 3 mars.md"),
        ("a<b>|c?.html", "a_b_c_.html"),
        ("..hidden.jsonl", "hidden.jsonl"),
    ],
)
def test_safe_filename(name, expected):
    assert safe_filename(name) == expected


@pytest.mark.parametrize("name", ["script.py", "archive.tar.gz", ".txt", "noext", "../.."])
def test_safe_filename_refuses_other_types(name):
    with pytest.raises(DocumentError, match="unsupported file type"):
        safe_filename(name)


def test_save_upload_stays_in_the_corpus_folder_and_never_overwrites(tmp_path):
    corpus = tmp_path / "corpus"
    first = save_upload("../../evil.txt", b"un", corpus, 1000)
    assert first == (corpus / "uploads" / "evil.txt").resolve() and first.read_bytes() == b"un"
    assert save_upload("evil.txt", b"un", corpus, 1000) == first  # same content: same file
    second = save_upload("evil.txt", b"deux", corpus, 1000)
    assert second.name == "evil-2.txt" and first.read_bytes() == b"un"
    with pytest.raises(DocumentError, match="over the 0.001 MB limit"):
        save_upload("big.txt", b"x" * 1001, corpus, 1000)
    with pytest.raises(DocumentError, match="empty"):
        save_upload("blank.txt", b"  \n", corpus, 1000)
    assert sorted(p.name for p in (corpus / "uploads").iterdir()) == ["evil-2.txt", "evil.txt"]


def test_ingest_uploads_indexes_good_files_and_drops_bad_ones(kb, tmp_path):
    corpus = tmp_path / "corpus"
    kb.ingest([SEED])
    before = kb.stats()
    files = [
        ("port.md", b"---\ntitle: Le port\n---\nLe port de Marseille a rouvert le 3 mars 2020."),
        ("image.txt", b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4),
        ("notes.py", b"print(1)"),
    ]
    report = ingest_uploads(kb, files, corpus, 10_000)
    assert len(report.added) == 1 and kb.stats()["articles"] == before["articles"] + 1
    problems = [str(p) for p in report.errors]
    assert problems[0].startswith("notes.py: unsupported file type")
    assert problems[1].startswith("image.txt: ") and "binary" in problems[1]
    assert [p.name for p in (corpus / "uploads").iterdir()] == ["port.md"]  # the bad file is not kept
    [hit] = kb.search("Quand le port de Marseille a-t-il rouvert ?", k=1)
    assert hit.title == "Le port"
    summary, lines = ingest_summary(report)
    assert summary.startswith("Ajoutés : 1, mis à jour : 0, inchangés : 0 ;") and len(lines) == 2


def test_a_jsonl_upload_keeps_its_good_lines(kb, tmp_path):
    data = b'{"id": "ok", "text": "Le port a rouvert."}\n{"id": 3}\n'
    report = ingest_uploads(kb, [("wires.jsonl", data)], tmp_path / "corpus", 10_000)
    assert report.added == ["ok"] and [e.line for e in report.errors] == [2]
    assert str(report.errors[0]).startswith("wires.jsonl:2: ")
    assert Path(tmp_path / "corpus" / "uploads" / "wires.jsonl").exists()


def test_uploads_reach_kb_open_like_the_cli(tmp_path, use_fake_embedder):
    with KnowledgeBase.open() as kb:
        ingest_uploads(kb, [("a.txt", b"Texte de l'article.")], tmp_path / "corpus", 10_000)
        assert kb.stats()["articles"] == 1
