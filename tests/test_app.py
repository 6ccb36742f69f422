"""The Streamlit page, driven headless with AppTest (fake embedder, index in tmp_path)."""

import pytest
from streamlit.testing.v1 import AppTest

from qa import KnowledgeBase, Passage
from qa.ui import escape_markdown, passage_markdown

from conftest import ROOT, SEED

APP = str(ROOT / "app.py")


@pytest.fixture(autouse=True)
def _fake(use_fake_embedder):
    import streamlit as st

    st.cache_resource.clear()
    yield
    st.cache_resource.clear()


def test_empty_index_tells_how_to_build_it():
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception
    assert "L'index est vide" in at.warning[0].value


def test_question_shows_the_answer_and_the_highlighted_quote(tmp_path, fake_embedder):
    with KnowledgeBase.open(embedder=fake_embedder) as kb:
        kb.ingest([SEED])
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert "**1** articles" in at.sidebar.markdown[0].value
    at.text_input[0].input("Quand le bureau de l'UE a-t-il ouvert à Almaty ?").run()
    assert not at.exception
    [shown] = [m.value for m in at.markdown if "novembre 1994" in m.value]
    assert shown.startswith("### En novembre 1994.")
    assert "\\[1\\] ue-kazakhstan" in shown
    assert (
        ":orange-background[**En novembre 1994, la délégation de l’UE au Kazakhstan a commencé ses travaux à Almaty.**]" in shown
    )


def test_abstention_looks_different_and_lists_the_closest_passages(fake_embedder):
    with KnowledgeBase.open(embedder=fake_embedder) as kb:
        kb.ingest([SEED])
    at = AppTest.from_file(APP, default_timeout=60).run()
    at.text_input[0].input("Quel est le PIB du Kazakhstan en 2021 ?").run()
    [shown] = [m.value for m in at.markdown if "corpus" in m.value]
    assert shown.startswith("**Je ne trouve pas cela dans le corpus.**") and "Passages les plus proches" in shown


def test_passage_markdown_escapes_and_quotes():
    p = Passage(
        doc_id="d", chunk_id="c", text="*Pas* de #titre\nligne 2", title="T", date="2022-02-07", url="https://x", score=0.5
    )
    md = passage_markdown(p, 2)
    assert md.startswith("**\\[2\\] T — 2022-02-07 \\(score 0.500\\)**")
    assert "<https://x>" in md and "> \\*Pas\\* de \\#titre\n> ligne 2" in md
    assert escape_markdown("a_b") == "a\\_b"
