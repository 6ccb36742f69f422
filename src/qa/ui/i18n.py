"""The web interface's text in French (the default) and English (``QA_LANGUAGE``)."""

from __future__ import annotations

from collections.abc import Callable

MESSAGES: dict[str, dict[str, str]] = {
    "fr": {
        "page_title": "qa — questions sur le corpus",
        "title": "Questions sur le corpus",
        "intro": "Posez une question sur les articles du corpus : la réponse cite le passage d'où elle vient.",
        "loading": "Chargement du modèle et de l'index (une seule fois)…",
        "loading_model": "Modèle d'embeddings multilingue…",
        "loading_answerer": "Modèles de lecture (reader)…",
        "loading_index": "Index des passages…",
        "ready": "Prêt",
        "corpus": "Corpus",
        "stats": "**{articles}** articles, **{chunks}** passages  \nModèle : `{model}`  \nDernier ajout : {last_ingest}",
        "options": "Prochaine question",
        "sources": "Sources",
        "all_sources": "Toutes les sources",
        "date_from": "Articles publiés depuis le",
        "date_to": "Articles publiés jusqu'au",
        "passages": "Nombre de passages",
        "answerer": "Réponse",
        "answerer_extractive": "Extractive (hors ligne)",
        "new_conversation": "Nouvelle conversation",
        "add_articles": "Ajouter des articles",
        "upload_label": "Fichiers .txt, .md, .html ou .jsonl",
        "upload_help": "Enregistrés dans {folder} puis indexés ; {max_mb:g} Mo au plus par fichier.",
        "ingest_button": "Indexer",
        "ingesting": "Indexation de {files} fichier(s)…",
        "ingest_progress": "{articles} article(s) lu(s), {chunks} passage(s) indexé(s)…",
        "ingest_done": "Ajoutés : {added}, mis à jour : {updated}, inchangés : {unchanged} ; "
        "{chunks} passages indexés en {seconds:.1f} s.",
        "ingest_errors": "Non indexés :",
        "empty_index": "L'index est vide : ajoutez des articles dans la barre latérale, ou lancez `make index` "
        "(ou `qa ingest corpus/`) puis rechargez la page.",
        "placeholder": "Quand le bureau de l'UE a-t-il ouvert à Almaty ?",
        "searching": "Recherche de la réponse…",
        "sources_title": "Sources",
        "abstained": "Le corpus ne contient pas la réponse.",
        "closest": "Passages les plus proches :",
        "context": "Lire la suite de l'article",
        "article_gone": "Cet article n'est plus dans l'index.",
        "score": "score",
        "rewritten": "Question comprise : « {question} »",
    },
    "en": {
        "page_title": "qa — questions about the corpus",
        "title": "Questions about the corpus",
        "intro": "Ask a question about the articles in the corpus: the answer cites the passage it comes from.",
        "loading": "Loading the model and the index (once)…",
        "loading_model": "Multilingual embedding model…",
        "loading_answerer": "Reading models (reader)…",
        "loading_index": "Passage index…",
        "ready": "Ready",
        "corpus": "Corpus",
        "stats": "**{articles}** articles, **{chunks}** passages  \nModel: `{model}`  \nLast ingest: {last_ingest}",
        "options": "Next question",
        "sources": "Sources",
        "all_sources": "All sources",
        "date_from": "Articles published from",
        "date_to": "Articles published until",
        "passages": "Number of passages",
        "answerer": "Answerer",
        "answerer_extractive": "Extractive (offline)",
        "new_conversation": "New conversation",
        "add_articles": "Add articles",
        "upload_label": ".txt, .md, .html or .jsonl files",
        "upload_help": "Saved in {folder}, then indexed; at most {max_mb:g} MB per file.",
        "ingest_button": "Index",
        "ingesting": "Indexing {files} file(s)…",
        "ingest_progress": "{articles} article(s) read, {chunks} passage(s) indexed…",
        "ingest_done": "Added: {added}, updated: {updated}, unchanged: {unchanged}; "
        "{chunks} passages indexed in {seconds:.1f} s.",
        "ingest_errors": "Not indexed:",
        "empty_index": "The index is empty: add articles in the sidebar, or run `make index` "
        "(or `qa ingest corpus/`) and reload the page.",
        "placeholder": "When did the EU office open in Almaty?",
        "searching": "Looking for the answer…",
        "sources_title": "Sources",
        "abstained": "The corpus does not hold the answer.",
        "closest": "Closest passages:",
        "context": "Read more of the article",
        "article_gone": "This article is no longer in the index.",
        "score": "score",
        "rewritten": "Understood as: “{question}”",
    },
}

Translator = Callable[..., str]


def translator(language: str) -> Translator:
    """``t(key, **values)`` for ``language`` (``fr`` or ``en``)."""
    table = MESSAGES[language]

    def t(key: str, **values: object) -> str:
        text = table[key]
        return text.format(**values) if values else text

    return t
