"""Streamlit chat over `qa`: a thin shell, everything it shows comes from qa.* (formatting in qa.ui.chat).

Run with `make run`, or `streamlit run app.py` once the index is built.
"""

from collections.abc import Iterator

import streamlit as st

from qa import Answer, KnowledgeBase, QAError, load_settings
from qa.ui import chat as ui
from qa.ui.i18n import translator
from qa.ui.uploads import UPLOAD_TYPES, ingest_uploads

try:
    settings = load_settings()
except QAError as exc:
    st.error(str(exc))
    st.stop()
t = translator(settings.language)
st.set_page_config(page_title=t("page_title"), page_icon="📰")


@st.cache_resource(show_spinner=False)
def knowledge_base() -> KnowledgeBase:
    """One index per process, shared by every browser session. The model loads in warm(), after the chat box is drawn:
    preloading it as the index opens held the GIL (the tokenizer's load) before the box, 0.5 s later (6 runs)."""
    return KnowledgeBase.open(settings=settings)


def article_text(doc_id: str) -> str | None:
    try:
        return kb.article(doc_id).text
    except QAError:
        return None


def show_answer(view: ui.AnswerView) -> None:
    if view.abstained:
        st.warning(view.reply + "  \n" + view.note, icon="🔎")
    else:
        st.markdown(view.reply)
        if view.note:
            st.caption(view.note)
    if view.sources:
        st.caption(view.sources_title)
    for source in view.sources:
        st.markdown(source.heading)
        st.markdown(source.passage)
        if source.context:
            with st.expander(t("context")):
                st.markdown(source.context)


def reply(events: Iterator[str | Answer]) -> Answer:
    """Show an LLM's text as it streams, then return the final Answer (extractive: the Answer alone)."""
    streamed, placeholder = "", st.empty()
    for event in events:
        if isinstance(event, Answer):
            placeholder.empty()
            return event
        streamed += event
        placeholder.markdown(ui.escape_markdown(streamed) + " ▌")
    raise QAError("the answerer stopped without an answer; try again")


st.title(t("title"))
st.caption(t("intro"))
try:
    kb = knowledge_base()
    stats = kb.stats()
except QAError as exc:
    st.error(str(exc))
    st.stop()
# the chat box first (it stays pinned to the bottom of the page): one can type while the model finishes loading just
# below; a question sent meanwhile is answered once it has loaded, after the history and the sidebar's options
question = st.chat_input(t("placeholder"), disabled=not stats["articles"])
try:
    if not kb.is_warm:
        with st.status(t("loading"), expanded=True) as status:
            # spaCy (« qui » / « où » questions only) loads after the page is drawn: see the end of the script
            kb.warm(progress=lambda step: status.write(t(f"loading_{step}")), nlp=False)
            status.update(label=t("ready"), state="complete", expanded=False)
except QAError as exc:
    st.error(str(exc))
    st.stop()

messages: list[dict] = st.session_state.setdefault("messages", [])

with st.sidebar:
    st.subheader(t("corpus"))
    st.markdown(ui.stats_markdown(stats, t))
    st.subheader(t("options"))
    sources = st.multiselect(t("sources"), stats["sources"], placeholder=t("all_sources"))
    date_from = st.date_input(t("date_from"), value=None, format="YYYY-MM-DD")
    date_to = st.date_input(t("date_to"), value=None, format="YYYY-MM-DD")
    k = st.slider(t("passages"), min_value=1, max_value=20, value=5)
    choices = ui.answerer_choices(settings.answerer)
    answerer = st.selectbox(t("answerer"), choices, format_func=lambda spec: ui.answerer_label(spec, t))
    if st.button(t("new_conversation"), icon=":material/add_comment:"):
        messages.clear()

    with st.expander(t("add_articles")):
        uploader_key = f"uploads-{st.session_state.setdefault('upload_round', 0)}"
        files = st.file_uploader(
            t("upload_label"),
            type=[ext.lstrip(".") for ext in UPLOAD_TYPES],
            accept_multiple_files=True,
            key=uploader_key,
            help=t("upload_help", folder=f"{settings.corpus_dir}/uploads", max_mb=settings.max_file_mb),
        )
        if files and st.button(t("ingest_button"), type="primary"):
            with st.status(t("ingesting", files=len(files))) as status:
                report = ingest_uploads(
                    kb,
                    [(f.name, f.getvalue()) for f in files],
                    settings.corpus_dir,
                    int(settings.max_file_mb * 1e6),
                    progress=lambda r, seen: status.update(label=t("ingest_progress", articles=seen, chunks=r.chunks_written)),
                )
            st.session_state.last_ingest = ui.ingest_summary(report, t)
            st.session_state.upload_round += 1
            st.rerun()
        if "last_ingest" in st.session_state:
            summary, problems = st.session_state.last_ingest
            st.success(summary)
            if problems:
                st.error(t("ingest_errors") + "\n\n" + "\n".join(f"- {p}" for p in problems))

if not stats["articles"]:
    st.warning(t("empty_index"))

for message in messages:
    with st.chat_message(message["role"]):
        if message["role"] == "user":
            st.markdown(ui.escape_markdown(message["text"]))
        elif "answer" in message:
            show_answer(message["view"])
        else:
            st.error(message["error"])

if question:
    history = ui.history_pairs(messages)
    messages.append({"role": "user", "text": question})
    with st.chat_message("user"):
        st.markdown(ui.escape_markdown(question))
    with st.chat_message("assistant"):
        try:
            with st.spinner(t("searching")):
                filters = ui.search_filters(sources, date_from, date_to)
                answer = reply(kb.ask_stream(question, history, k=k, answerer=answerer, **filters))
        except QAError as exc:
            messages.append({"role": "assistant", "error": str(exc)})
            st.error(str(exc))
        else:
            # formatted once (article context included), not again on every rerun of the page
            view = ui.answer_view(answer, t, article_text, asked=question)
            messages.append({"role": "assistant", "answer": answer, "view": view})
            show_answer(view)

kb.preload(model=False, answerer=False, nlp=True)  # once per process, now that the page is drawn
