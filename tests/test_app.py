"""The Streamlit chat page, driven headless with AppTest (fake embedder, index in tmp_path)."""

import json
from datetime import date

import pytest
from streamlit.testing.v1 import AppTest

from qa import KnowledgeBase

from fake_openai import ScriptedError
from helpers import ROOT, SEED, write

APP = str(ROOT / "app.py")
QUESTION = "Quand le bureau de l'UE a-t-il ouvert à Almaty ?"
ALMATY = "En novembre 1994, la délégation de l’UE au Kazakhstan a commencé ses travaux à Almaty."


@pytest.fixture(autouse=True)
def _fake(use_fake_embedder):
    import streamlit as st

    st.cache_resource.clear()
    yield
    st.cache_resource.clear()


@pytest.fixture
def seeded(fake_embedder):
    with KnowledgeBase.open(embedder=fake_embedder) as kb:
        kb.ingest([SEED])


def start() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception, at.exception
    return at


def ask(at: AppTest, question: str) -> AppTest:
    at.chat_input[0].set_value(question).run()
    assert not at.exception, at.exception
    return at


def assistant_text(at: AppTest, turn: int = -1) -> str:
    """Everything the assistant's chat message ``turn`` shows, as one text."""
    message = [m for m in at.chat_message if m.name == "assistant"][turn]
    parts = [m.value for m in message.markdown] + [w.value for w in message.warning] + [e.value for e in message.error]
    parts += [c.value for c in message.caption]
    for expander in message.expander:
        parts += [expander.label] + [m.value for m in expander.markdown]
    return "\n".join(parts)


def test_empty_index_tells_how_to_fill_it_and_disables_the_chat():
    at = start()
    assert "L'index est vide" in at.warning[0].value
    assert at.chat_input[0].disabled
    assert "**0** articles" in at.sidebar.markdown[0].value


def test_loading_status_is_shown_once_per_process(seeded):
    at = start()
    [status] = [e for e in at.main.children.values() if e.type == "status"]
    assert status.label == "Prêt"  # the loading status, completed, with its steps
    # spaCy is not a step: it loads once the page is drawn (only « qui » / « où » questions need it)
    steps = ["Modèle d'embeddings multilingue…", "Index des passages…"]
    assert [m.value for m in status.markdown] == steps
    again = start()  # a second browser session: the loaded index is shared, no loading status
    assert not [e for e in again.main.children.values() if e.type == "status"]


def test_answer_shows_the_reply_the_source_and_the_highlighted_quote(seeded):
    at = ask(start(), QUESTION)
    assert [m.name for m in at.chat_message] == ["user", "assistant"]
    shown = assistant_text(at)
    assert "**En novembre 1994.**" in shown
    assert "**\\[1\\] ue-kazakhstan" in shown
    assert f":orange-background[**{ALMATY.replace(':', '')}**]" in shown.replace("\\", "")
    # the expander shows the surrounding article text, with the same sentence highlighted
    message = at.chat_message[1]
    [expander] = message.expander
    assert expander.label == "Lire la suite de l'article"
    assert "Tokaïev" in expander.markdown[0].value and ":orange-background[**En novembre 1994" in expander.markdown[0].value


def test_follow_up_uses_the_conversation(seeded):
    at = ask(ask(start(), QUESTION), "Et à Bruxelles ?")
    shown = assistant_text(at)
    assert "Question comprise : « Quand le bureau de l'UE a-t-il ouvert à Bruxelles ? »" in shown
    assert "Bruxelles" in shown and "En décembre 1993" in shown
    assert len(at.chat_message) == 4 and "novembre 1994" in assistant_text(at, 0)  # earlier turns stay


def test_abstention_looks_different_and_lists_the_closest_passages(seeded):
    at = ask(start(), "Quel est le PIB du Kazakhstan en 2021 ?")
    message = at.chat_message[1]
    [warning] = message.warning
    assert warning.value.startswith("Je ne trouve pas cela dans le corpus.")
    assert "Le corpus ne contient pas la réponse." in warning.value
    shown = assistant_text(at)
    assert "Passages les plus proches" in shown and ":orange-background" not in shown


def test_new_conversation_clears_the_chat(seeded):
    at = ask(start(), QUESTION)
    assert len(at.chat_message) == 2
    at.sidebar.button[0].click().run()
    assert not at.chat_message


def test_filters_apply_to_the_next_question(fake_embedder, tmp_path):
    articles = [
        {"id": "a", "title": "Dépêche A", "text": "Le port de Marseille a rouvert le 3 mars 2020.", "source": "AFP"},
        {"id": "b", "title": "Dépêche B", "text": "Le port de Marseille a fermé le 9 mai 2021.", "source": "Reuters"},
    ]
    articles[0]["date"], articles[1]["date"] = "2020-03-04", "2021-05-10"
    jsonl = write(tmp_path / "wires.jsonl", "\n".join(json.dumps(a) for a in articles))
    with KnowledgeBase.open(embedder=fake_embedder) as kb:
        kb.ingest([jsonl])
    at = start()
    assert at.sidebar.multiselect[0].options == ["AFP", "Reuters"]
    at.sidebar.multiselect[0].select("Reuters").run()
    shown = assistant_text(ask(at, "Que s'est-il passé au port de Marseille ?"))
    assert "Dépêche B" in shown and "Dépêche A" not in shown
    at.sidebar.multiselect[0].unselect("Reuters").run()
    at.sidebar.date_input[1].set_value(date(2020, 12, 31)).run()  # published until the end of 2020
    shown = assistant_text(ask(at, "Que s'est-il passé au port de Marseille ?"))
    assert "Dépêche A" in shown and "Dépêche B" not in shown


def test_llm_answerer_streams_and_cites(seeded, fake_openai, monkeypatch):
    monkeypatch.setenv("QA_ANSWERER", "openai:test-model")
    monkeypatch.setenv("QA_LLM_BASE_URL", fake_openai.base_url)
    monkeypatch.setenv("QA_LLM_API_KEY", "x")
    fake_openai.add("La délégation de l'UE a commencé ses travaux à Almaty en novembre 1994 [1].")
    at = start()
    assert at.sidebar.selectbox[0].options == ["openai:test-model", "Extractive (hors ligne)"]
    shown = assistant_text(ask(at, QUESTION))
    assert "en novembre 1994" in shown and "\\[1\\] ue-kazakhstan" in shown
    assert len(fake_openai.chat_requests) == 1
    # a failing model is a one-line error in the chat, and the page keeps working
    fake_openai.add(ScriptedError(500, "model crashed"))
    at = ask(at, "Et à Bruxelles ?")
    [error] = at.chat_message[3].error
    assert "model crashed" in error.value or "500" in error.value
    at.sidebar.selectbox[0].select("extractive").run()
    assert "novembre 1994" in assistant_text(ask(at, QUESTION))


def test_english_interface(seeded, monkeypatch):
    monkeypatch.setenv("QA_LANGUAGE", "en")
    at = ask(start(), QUESTION)
    assert at.title[0].value == "Questions about the corpus"
    assert "Last ingest" in at.sidebar.markdown[0].value
    assert at.chat_message[1].expander[0].label == "Read more of the article"


def test_a_bad_setting_is_an_error_not_a_traceback(monkeypatch):
    monkeypatch.setenv("QA_RETRIEVAL", "magic")
    at = start()
    [error] = at.error
    assert "QA_RETRIEVAL" in error.value and "hybrid" in error.value
