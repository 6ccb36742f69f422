from qa.chunking import chunk_text, split_sentences


def words(texts):
    return [len(t.split()) for t in texts]


def sentences(text):
    return [text[s:e] for s, e in split_sentences(text)]


def test_french_abbreviations_do_not_end_a_sentence():
    text = "M. Dupont et Mme Durand ont relu l’art. 3 du code civil. J. Chirac est arrivé en retard."
    assert sentences(text) == [
        "M. Dupont et Mme Durand ont relu l’art. 3 du code civil.",
        "J. Chirac est arrivé en retard.",
    ]


def test_glued_sentences_from_scraped_news_are_split():
    text = "Il a soutenu la réforme du pays.Le président a répondu.En 1994.Puis rien."
    assert sentences(text) == ["Il a soutenu la réforme du pays.", "Le président a répondu.", "En 1994.", "Puis rien."]


def test_urls_acronyms_and_quotes_stay_inside_their_sentence():
    text = "Voir pic.twitter.com/abc et l'U.E. aujourd'hui. « Vraiment ? » dit-il. Oui !"
    assert sentences(text) == ["Voir pic.twitter.com/abc et l'U.E. aujourd'hui.", "« Vraiment ? » dit-il.", "Oui !"]


def test_line_breaks_end_sentences_and_spans_are_trimmed():
    text = "Titre sans point\n\n  Première phrase. Deuxième phrase  \nFin"
    spans = split_sentences(text)
    assert [text[s:e] for s, e in spans] == ["Titre sans point", "Première phrase.", "Deuxième phrase", "Fin"]


def test_chunks_are_exact_slices_within_budget_with_overlap():
    sentence = "La délégation a ouvert un bureau à Almaty en novembre {}."
    text = " ".join(sentence.format(i) for i in range(40))
    chunks = chunk_text(text, words, target_tokens=40, overlap_tokens=12)
    assert len(chunks) > 5
    for c in chunks:
        assert text[c.start : c.end] == c.text
        assert c.tokens <= 40
    # every sentence is in some chunk, and consecutive chunks share the overlap sentence
    for i in range(40):
        assert any(sentence.format(i) in c.text for c in chunks)
    assert all(chunks[i].start < chunks[i - 1].end for i in range(1, len(chunks)))
    assert [c.index for c in chunks] == list(range(len(chunks)))


def test_a_sentence_longer_than_the_budget_is_cut_at_spaces():
    text = " ".join(f"mot{i}" for i in range(100)) + "."
    chunks = chunk_text(text, words, target_tokens=30, overlap_tokens=0)
    assert all(c.tokens <= 30 for c in chunks)
    assert " ".join(c.text for c in chunks) == text


def test_empty_text_has_no_chunks():
    assert chunk_text("   \n ", words) == []
