"""Streamlit page over `qa` (a thin shell: everything it shows comes from qa.*).

Run with `make run`, or `streamlit run app.py` once the index is built.
"""

import streamlit as st

from qa import KnowledgeBase, QAError
from qa.ui import answer_markdown, stats_markdown

st.set_page_config(page_title="qa — questions sur le corpus", page_icon="📰")


@st.cache_resource(show_spinner="Chargement du modèle d'embeddings et de l'index…")
def knowledge_base() -> KnowledgeBase:
    kb = KnowledgeBase.open()
    kb.warm()
    return kb


st.title("Questions sur le corpus")
try:
    kb = knowledge_base()
    stats = kb.stats()
except QAError as exc:
    st.error(str(exc))
    st.stop()

with st.sidebar:
    st.subheader("Corpus")
    st.markdown(stats_markdown(stats))
    k = st.slider("Nombre de passages", min_value=1, max_value=20, value=5)

if not stats["articles"]:
    st.warning("L'index est vide : lancez `make index` (ou `qa ingest corpus/`) puis rechargez la page.")
    st.stop()

question = st.text_input("Votre question", placeholder="Quand le bureau de l'UE a-t-il ouvert à Almaty ?")
if question.strip():
    try:
        with st.spinner("Recherche de la réponse…"):
            answer = kb.ask(question, k=k)
    except QAError as exc:
        st.error(str(exc))
    else:
        st.markdown(answer_markdown(answer))
