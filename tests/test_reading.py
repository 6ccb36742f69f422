"""The reading answerer (the trained reader + the combiner over the lexical answerer's candidates), the combiner's
fit, the answerer specs, and ``qa eval``'s dev split and stage table. Fast tests use stand-in models; the tests
marked ``reader`` answer with the shipped reader, combiner and span model, as the product does by default."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from qa.answering.answerers import make_answerer
from qa.answering.extractive import ExtractiveAnswerer
from qa.answering.llm import parse_answerer
from qa.answering.reading import CANDIDATES, DEFAULT_ARTIFACT, ReadingAnswerer, SpanReading, reply_of
from qa.answering.reading.combiner import COMBINER_FILE, FEATURES, FORMAT, Candidate, Combiner, features, first_candidates
from qa.answering.text import REFUSAL
from qa.errors import ModelError
from qa.evaluation import format_report, load_squads, split_questions
from qa.schema import Passage
from qa.training.combiner import fit_logistic

from helpers import SEED

QUESTION = "Quand le bureau de l'UE a-t-il ouvert à Almaty ?"
ALMATY = "En novembre 1994, la délégation de l’UE au Kazakhstan a commencé ses travaux à Almaty."
PASSAGE = (
    "La délégation de l’UE à Bruxelles a été créée en décembre 1993. "
    f"{ALMATY} "
    "Le Kazakhstan est le plus grand pays d’Asie centrale."
)


class FakeReader:
    """Scores by a fixed preference: sentences holding ``prefer`` get ``high``, the others ``low``."""

    def __init__(self, prefer: str, high: float = 3.0, low: float = -3.0) -> None:
        self.prefer, self.high, self.low = prefer, high, low
        self.calls: list[int] = []

    def load(self) -> FakeReader:
        return self

    def score(self, question: str, sentences: list[str], store: object = None) -> np.ndarray:
        self.calls.append(len(sentences))
        return np.array([self.high if self.prefer in s else self.low for s in sentences], dtype=np.float32)


class FakeSpans:
    def __init__(self, answer: str) -> None:
        self.answer = answer

    def load(self) -> FakeSpans:
        return self

    null = False

    def read(self, question: str, sentences: list[str]) -> list[SpanReading | None]:
        found = [(s.find(self.answer), s) for s in sentences]
        return [None if at < 0 else SpanReading(at, at + len(self.answer), 1.0, 1.0) for at, s in found]


def reader_only_combiner(threshold: float = 0.5) -> Combiner:
    """A combiner that reads the reader's logit alone (probability = sigmoid(logit))."""
    coef = [1.0 if f == "reader_logit" else 0.0 for f in FEATURES]
    zeros, ones = [0.0] * len(FEATURES), [1.0] * len(FEATURES)
    return Combiner(
        {
            "format": FORMAT,
            "features": list(FEATURES),
            "mean": zeros,
            "scale": ones,
            "coef": coef,
            "intercept": 0.0,
            "threshold": threshold,
        }
    )


def answerer(reader: FakeReader, spans: FakeSpans | None = None, threshold: float = 0.5) -> ReadingAnswerer:
    return ReadingAnswerer(
        ExtractiveAnswerer(nlp=False),
        Path("/nonexistent"),
        reader=reader,
        combiner=reader_only_combiner(threshold),
        spans=spans if spans is not None else False,
    )


def passages() -> list[Passage]:
    return [Passage(text=PASSAGE, doc_id="seed", chunk_id="seed:0", score=1.0, title="UE")]


# -- the answerer, with stand-in models ---------------------------------------------------------------------------
def test_the_reader_choice_is_quoted_verbatim() -> None:
    answer = answerer(FakeReader("Bruxelles")).answer(QUESTION, passages())
    assert not answer.abstained
    citation = answer.citations[0]
    assert "Bruxelles" in citation.quote and citation.passage.text[citation.start : citation.end] == citation.quote
    assert answer.confidence == pytest.approx(1 / (1 + np.exp(-3.0)), abs=1e-4)


def test_low_probability_everywhere_abstains() -> None:
    answer = answerer(FakeReader("nowhere", low=-2.0)).answer(QUESTION, passages())
    assert answer.abstained and answer.text == REFUSAL and not answer.citations
    assert answer.confidence == pytest.approx(1 / (1 + np.exp(2.0)), abs=1e-4)


def test_the_span_model_gives_the_short_answer_and_the_rules_their_phrasing() -> None:
    answer = answerer(FakeReader("Almaty"), FakeSpans("novembre 1994")).answer(QUESTION, passages())
    assert answer.short_answer == "novembre 1994"
    assert answer.text == "En novembre 1994."  # the date rule found the same answer: its reply
    other = answerer(FakeReader("Almaty"), FakeSpans("la délégation")).answer(QUESTION, passages())
    assert other.short_answer == "la délégation" and other.text == "La délégation."  # the model's answer wins
    untyped = answerer(FakeReader("Asie"), FakeSpans("le plus grand pays")).answer("Que dit-on du Kazakhstan ?", passages())
    assert untyped.short_answer == "le plus grand pays" and untyped.text == "Le plus grand pays."


def test_without_a_span_model_the_rules_cut_the_short_answer() -> None:
    answer = answerer(FakeReader("Almaty")).answer(QUESTION, passages())
    assert answer.text == "En novembre 1994." and answer.short_answer == "novembre 1994"


def test_the_reader_reads_at_most_the_lexical_top_candidates() -> None:
    reader = FakeReader("Almaty")
    many = [
        Passage(text=f"Phrase numéro {i} sur le bureau de l'UE. Autre phrase {i}.", doc_id=f"d{i}", chunk_id=f"d{i}:0", score=1.0)
        for i in range(10)
    ]
    answerer(reader).answer(QUESTION, many)
    assert reader.calls == [CANDIDATES]


def test_no_passage_abstains_without_reading() -> None:
    reader = FakeReader("x")
    answer = answerer(reader).answer(QUESTION, [])
    assert answer.abstained and reader.calls == []


def test_reply_of() -> None:
    assert reply_of(" novembre 1994 ") == "Novembre 1994."
    assert reply_of("Quoi ?") == "Quoi ?"
    assert reply_of("") == ""


# -- specs ---------------------------------------------------------------------------------------------------------
def test_stage_specs_parse() -> None:
    assert parse_answerer("extractive:reader") == ("extractive", "reader")
    assert parse_answerer("Extractive:Lexical") == ("extractive", "lexical")
    assert parse_answerer("extractive") == ("extractive", "")


def test_qa_reader_off_keeps_the_lexical_answerer(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("QA_READER", "off")
    assert isinstance(make_answerer("extractive", model_cache=tmp_path), ExtractiveAnswerer)
    monkeypatch.setenv("QA_READER", "on")
    reading = make_answerer("extractive", model_cache=tmp_path)
    assert isinstance(reading, ReadingAnswerer) and reading.stage == "combined" and reading.name == "extractive"
    assert isinstance(make_answerer("extractive:lexical", model_cache=tmp_path), ExtractiveAnswerer)
    staged = make_answerer("extractive:reader", model_cache=tmp_path)
    assert isinstance(staged, ReadingAnswerer) and staged.stage == "reader"


def test_the_reading_answerer_reports_its_first_builds_through_the_knowledge_base(monkeypatch, tmp_path) -> None:
    """A first `qa ask` with the reader on builds two ONNX models (~20 s): the CLI's progress is told so."""
    from qa.answering.answerers import Answerers

    monkeypatch.setenv("QA_READER", "on")
    told: list[str] = []
    reading = Answerers("extractive", model_cache=tmp_path, progress=told.append).get()
    assert isinstance(reading, ReadingAnswerer) and reading.progress == told.append


# -- the combiner --------------------------------------------------------------------------------------------------
def test_features_describe_each_candidate_relative_to_the_question() -> None:
    candidates = [Candidate(0, 1.2, 0.8, 0.9, True, True, 1.0), Candidate(1, 0.6, 0.4, 0.5, True, False, 0.5)]
    x = features("quand", candidates, [0.5, 2.0], [2.0, 1.0])
    assert x.shape == (2, len(FEATURES))
    row = dict(zip(FEATURES, x[0], strict=True))
    assert row["reader_margin"] == pytest.approx(-1.5) and row["reader_best"] == 0.0 and row["lexical_best"] == 1.0
    assert row["type_found"] == 1.0 and row["type_missing"] == 0.0 and row["passage_share"] == 1.0
    second = dict(zip(FEATURES, x[1], strict=True))
    assert second["reader_best"] == 1.0 and second["type_missing"] == 1.0 and second["passage_share"] == 0.5
    assert second["lexical_share"] == pytest.approx(0.5) and second["passage_prior"] == 0.5
    assert row["name_coverage"] == 1.0 and second["name_coverage"] == 0.5


def test_span_margins_and_a_prefix_of_the_candidates_give_the_features_of_that_prefix() -> None:
    candidates = [
        Candidate(0, 1.2, 0.8, 0.9, True, True, 1.0, span_margin=-2.0),
        Candidate(1, 0.9, 0.4, 0.5, True, False, 0.5, span_margin=3.0),
        Candidate(0, 0.6, 0.4, 0.5, False, False, 1.0, span_margin=1.0),
    ]
    logits = [0.5, 2.0, 1.0]
    x = features("quand", candidates, logits, [2.0, 1.0])
    margin, gap = FEATURES.index("span_margin"), FEATURES.index("span_margin_gap")
    assert x[:, margin].tolist() == [-2.0, 3.0, 1.0] and x[:, gap].tolist() == [-5.0, 0.0, -2.0]
    for n in (1, 2, 3):  # what fit-combiner --candidates n reads from features collected for 3
        cut = first_candidates({"x": x, "y": np.arange(3.0)}, n)
        assert np.allclose(cut["x"], features("quand", candidates[:n], logits[:n], [2.0, 1.0])) and len(cut["y"]) == n


def test_fit_combiner_drops_features_by_name_or_group() -> None:
    from qa.training.combiner import used_features

    assert used_features("") == [f for f in FEATURES if f not in ("near_miss", "span_fits")]  # rules, never fitted
    kept = used_features("reader, name_coverage")
    assert "reader_logit" not in kept and "reader_best" not in kept and "name_coverage" not in kept
    assert "span_margin" in kept and len(kept) == len(FEATURES) - 6
    with pytest.raises(SystemExit, match="--drop wordcount: not a feature"):
        used_features("wordcount")


def test_name_coverage_counts_the_question_names_a_sentence_holds() -> None:
    reading = answerer(FakeReader("Almaty"))
    ranked = reading.lexical.score_sentences(QUESTION, passages())
    x = reading.features(QUESTION, ranked, np.zeros(len(ranked)), passages())
    by_text = {s.text: x[i, FEATURES.index("name_coverage")] for i, s in enumerate(ranked)}
    assert by_text[ALMATY] == 1.0  # « UE » and « Almaty »
    assert by_text["La délégation de l’UE à Bruxelles a été créée en décembre 1993."] == 0.5  # « UE » only


def test_anchor_coverage_weighs_the_names_and_numbers_few_candidates_hold() -> None:
    from qa.answering.reading.combiner import anchor_coverages

    held = [{"ue", "almaty", "ouvrir"}, {"ue", "bureau"}, {"bureau", "ouvrir"}]
    shares, absent = anchor_coverages({"ue", "almaty", "2021"}, held)
    # « almaty » (1 candidate) weighs 1, « ue » (2 candidates) 1/2 each; « 2021 » is in none
    assert shares == pytest.approx([1.0, 1 / 3, 0.0]) and absent == pytest.approx(1 / 3)
    assert anchor_coverages({"kazakhstan"}, [{"bureau"}, set()]) == ([1.0, 1.0], 1.0)  # held by none: no preference
    assert anchor_coverages(set(), held) == ([1.0, 1.0, 1.0], 0.0)


def test_anchor_features_tell_the_almaty_sentence_from_the_brussels_one() -> None:
    reading = answerer(FakeReader("Almaty"))
    ranked = reading.lexical.score_sentences(QUESTION, passages())
    x = reading.features(QUESTION, ranked, np.zeros(len(ranked)), passages())
    by_text = {s.text: x[i, FEATURES.index("anchor_coverage")] for i, s in enumerate(ranked)}
    assert by_text[ALMATY] == max(by_text.values()) > by_text["La délégation de l’UE à Bruxelles a été créée en décembre 1993."]
    assert set(x[:, FEATURES.index("anchors_absent")]) == {0.0}
    gdp = "Quel est le PIB du Kazakhstan en 2021 ?"  # neither « PIB » nor « 2021 » is in the passage
    ranked = reading.lexical.score_sentences(gdp, passages())
    x = reading.features(gdp, ranked, np.zeros(len(ranked)), passages())
    assert np.allclose(x[:, FEATURES.index("anchors_absent")], 2 / 3)


def test_slots_pair_each_name_or_number_with_its_preposition() -> None:
    from qa.answering.reading.combiner import slots

    assert slots("Quand le bureau de l'UE a-t-il ouvert à Almaty ?") == [("de", "ue"), ("a", "almaty")]
    assert slots("En décembre 1993, le Kazakhstan a ouvert son bureau à Bruxelles.") == [("en", "1993"), ("a", "bruxel")]
    assert slots("Paris est loin de tout.") == []  # the first word is no name; « tout » is no name


def test_anchor_conflict_tells_a_near_miss_from_a_sentence_that_leaves_a_name_out() -> None:
    from qa.answering.reading.combiner import anchor_conflicts

    question = "Quand le bureau de l'UE a-t-il ouvert à Almaty ?"
    texts = [
        ALMATY,
        "En décembre 1993, le Kazakhstan a ouvert son bureau à Bruxelles.",  # « à Bruxelles » where « à Almaty » is asked
        "Il a ouvert ses portes en 1994.",  # no name where one is asked: not a conflict
    ]
    held = [{"ue", "almaty", "ouvert"}, {"bureau", "ouvert"}, {"ouvert"}]
    assert anchor_conflicts(question, {"ue", "almaty"}, texts, held) == [0.0, 0.5, 0.0]
    assert anchor_conflicts("Quand le bureau a-t-il ouvert ?", set(), texts, held) == [0.0, 0.0, 0.0]
    gdp = anchor_conflicts("Quel est le PIB du Kazakhstan en 2021 ?", {"pib", "kazakhstan", "2021"}, texts[1:], [set(), set()])
    assert gdp == [0.5, 0.5]  # « en décembre 1993 », « en 1994 » where « en 2021 » is asked; « du Kazakhstan » unfilled


BRUSSELS = "En décembre 1993, le Kazakhstan a ouvert son bureau à Bruxelles."
SEED_ALMATY = "En novembre 1994, la délégation de l’UE au Kazakhstan a commencé ses travaux à Almaty."


def test_near_misses_say_of_another_place_what_another_candidate_says_of_the_asked_one() -> None:
    from qa.answering.reading.combiner import near_misses

    anchors, content = {"ue", "almaty"}, {"bureau", "ouvert"}
    held = [{"ue", "almaty"}, {"bureau", "ouvert"}, {"ouvert"}]
    pronoun = "Il a ouvert ses portes en 1994."  # leaves the place out: not a near miss
    assert near_misses(QUESTION, anchors, content, [SEED_ALMATY, BRUSSELS, pronoun], held) == [False, True, False]
    # no candidate says « à Almaty »: nothing tells which sentence the question means
    assert near_misses(QUESTION, anchors, content, [BRUSSELS, pronoun], held[1:]) == [False, False]
    # « à Bruxelles » far from what the question asks of the place (no « ouvert », « bureau » within 4 words)
    far = "Le Kazakhstan, dont la capitale est Astana, compte un bureau de liaison et un consulat à Bruxelles."
    assert near_misses(QUESTION, anchors, content, [SEED_ALMATY, far], [{"ue", "almaty"}, {"bureau"}]) == [False, False]
    # a sentence holding the asked place elsewhere is no near miss
    both = "Le bureau ouvert à Bruxelles a précédé celui d'Almaty."
    assert near_misses(QUESTION, anchors, content, [SEED_ALMATY, both], [{"almaty"}, {"bureau", "ouvert", "almaty"}]) == [
        False,
        False,
    ]
    # a time slot: « publié en 2014 » when « publié en 2015 » is asked and said
    asked = "Quel livre Ingrid Chauvin a-t-elle publié en 2015 ?"
    texts = ["Elle a publié en 2014 un premier roman.", "Elle a publié en 2015 « Rien n'est impossible »."]
    assert near_misses(asked, {"ingrid", "chauvin", "2015"}, {"livr", "publi"}, texts, [{"publi"}, {"publi", "2015"}]) == [
        True,
        False,
    ]
    assert near_misses("Quand le bureau a-t-il ouvert ?", set(), {"bureau", "ouvert"}, [BRUSSELS], [{"bureau"}]) == [False]


def test_the_choice_passes_over_a_near_miss_however_the_models_score_it() -> None:
    reading = answerer(FakeReader("Bruxelles"), FakeSpans("En décembre 1993"), threshold=0.01)  # the models prefer Brussels
    text = f"{BRUSSELS} {SEED_ALMATY}"
    seed = [Passage(text=text, doc_id="seed", chunk_id="seed:0", score=1.0, title="UE")]
    answer = reading.answer(QUESTION, seed)
    assert not answer.abstained and answer.citations[0].quote == SEED_ALMATY
    # the same preference without the Almaty sentence: nothing contests Brussels, the models' choice stands
    alone = [Passage(text=BRUSSELS, doc_id="seed", chunk_id="seed:0", score=1.0, title="UE")]
    assert reading.answer(QUESTION, alone).citations[0].quote == BRUSSELS
    # the combiner: a near miss is never chosen while another candidate is not one; all of them, the best as before
    x = np.zeros((3, len(FEATURES)))
    x[:, FEATURES.index("reader_logit")] = [5.0, 1.0, 0.0]
    x[:, FEATURES.index("near_miss")] = [1.0, 0.0, 0.0]
    combiner = reader_only_combiner()
    assert combiner.choose(x) == 1
    x[:, FEATURES.index("near_miss")] = 1.0
    assert combiner.choose(x) == 0


def test_an_answer_not_of_the_kind_the_question_wants_abstains() -> None:
    """« Comment s'appelle… » wants a name: a sentence whose answer is « brièvement » gets no confidence."""
    question = "Comment s'appelle le détenu monté sur un toit de la prison de la Santé ?"
    text = "Un détenu est brièvement monté sur un toit de la prison de la Santé lundi."
    seed = [Passage(text=text, doc_id="sante", chunk_id="sante:0", score=1.0, title="Santé")]
    reading = answerer(FakeReader("détenu"), NullSpans("brièvement"), threshold=0.5)  # sigmoid(3): 0.95
    answer = reading.answer(question, seed)
    assert answer.abstained and answer.text == REFUSAL and answer.confidence == 0.0
    named = "Rédoine Faïd, un détenu, est brièvement monté sur un toit de la prison de la Santé lundi."
    seed = [Passage(text=named, doc_id="sante", chunk_id="sante:0", score=1.0, title="Santé")]
    answer = answerer(FakeReader("détenu"), NullSpans("Rédoine Faïd"), threshold=0.5).answer(question, seed)
    assert not answer.abstained and answer.short_answer == "Rédoine Faïd"
    # a kind that may be phrased otherwise (a date) is no rule: the fit reads what the span model found
    x = np.zeros((2, len(FEATURES)))
    x[:, FEATURES.index("span_fits")] = [0.0, 1.0]
    x[:, FEATURES.index("reader_logit")] = 3.0
    assert np.allclose(reader_only_combiner().confidences(x), [0.0, 1 / (1 + np.exp(-3.0))])


def test_fit_logistic_is_calibrated_on_data_it_can_separate_partly() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4000, len(FEATURES)))
    true_p = 1 / (1 + np.exp(-(2.0 * x[:, 0] - 1.0)))
    y = (rng.random(4000) < true_p).astype(float)
    model = fit_logistic(x, y, l2=1.0)
    assert model["coef"][0] == pytest.approx(2.0, abs=0.25) and abs(model["coef"][1]) < 0.2
    spec = {"format": FORMAT, "features": list(FEATURES), **model, "threshold": 0.5}
    p = Combiner(spec).probabilities(x)
    for lo, hi in ((0.0, 0.2), (0.4, 0.6), (0.8, 1.0)):  # predicted probabilities match observed rates
        sel = (p >= lo) & (p < hi)
        assert abs(y[sel].mean() - p[sel].mean()) < 0.06


def test_a_combiner_fitted_for_other_features_is_refused(tmp_path: Path) -> None:
    (tmp_path / COMBINER_FILE).write_text(json.dumps({"format": FORMAT, "features": ["reader_logit", "word_count"]}))
    with pytest.raises(ModelError, match="qa fit-combiner"):
        Combiner.load(tmp_path)
    spec = {"format": FORMAT, "features": ["coverage", "span_margin"], "mean": [0, 0], "scale": [1, 1], "coef": [1.0]}
    (tmp_path / COMBINER_FILE).write_text(json.dumps({**spec, "intercept": 0, "threshold": 0.5}))
    with pytest.raises(ModelError, match="2 features but 1 coefficients"):
        Combiner.load(tmp_path)
    with pytest.raises(ModelError, match=r"cannot read .*combiner.json"):
        Combiner.load(tmp_path / "missing")


def test_a_combiner_on_a_subset_of_the_features_reads_only_its_columns() -> None:
    names = ["coverage", "span_margin"]
    spec = {"format": FORMAT, "features": names, "mean": [0, 0], "scale": [1, 1], "coef": [0.0, 2.0]}
    combiner = Combiner({**spec, "intercept": 0.0, "threshold": 0.5, "choice_coef": [0.0, 1.0]})
    assert combiner.uses("span") and not combiner.uses("reader")
    x = np.zeros((2, len(FEATURES)))
    x[:, FEATURES.index("reader_logit")] = [9.0, -9.0]  # not read
    x[:, FEATURES.index("span_margin")] = [-1.0, 1.0]
    assert combiner.choose(x) == 1
    assert np.allclose(combiner.probabilities(x), [1 / (1 + np.exp(2.0)), 1 / (1 + np.exp(-2.0))])


class NullSpans(FakeSpans):
    """A span model trained with the null answer: its margins are features."""

    null = True
    reads = 0

    def __init__(self, answer: str) -> None:
        super().__init__(answer)
        self.read_texts: list[str] = []

    def read(self, question: str, sentences: list[str]) -> list[SpanReading | None]:
        self.reads += 1
        self.read_texts.extend(sentences)
        return super().read(question, sentences)


def test_the_span_model_reads_only_the_candidates_near_the_readers_best() -> None:
    from qa.answering.reading.answerer import NO_ANSWER, SPAN_GAP

    reader, spans = FakeReader("1994", high=2.0, low=2.0 - SPAN_GAP - 0.5), NullSpans("novembre 1994")
    reading = ReadingAnswerer(
        ExtractiveAnswerer(nlp=False), Path("/nonexistent"), reader=reader, combiner=Combiner.load(DEFAULT_ARTIFACT), spans=spans
    )
    ranked = reading.lexical.score_sentences(QUESTION, passages())[:5]
    logits, readings, x = reading.candidates(QUESTION, ranked, passages())
    near = [s.text for s, logit in zip(ranked, logits, strict=True) if logit >= max(logits) - SPAN_GAP]
    assert spans.read_texts == near and 0 < len(near) < len(ranked)
    margins = x[:, FEATURES.index("span_margin")]
    for s, reading_, margin in zip(ranked, readings, margins, strict=True):
        if s.text not in near:
            assert reading_ is None and margin == NO_ANSWER


def test_the_runtime_runs_only_the_models_its_combiner_reads_and_fitting_runs_them_all() -> None:
    from qa.training.combiner import all_features

    names = ["coverage", "lexical_score"]  # neither the reader's nor the span model's features
    spec = {"format": FORMAT, "features": names, "mean": [0, 0], "scale": [1, 1], "coef": [1.0, 0.0]}
    reader, spans = FakeReader("Almaty"), NullSpans("novembre 1994")
    reading = ReadingAnswerer(
        ExtractiveAnswerer(nlp=False),
        Path("/nonexistent"),
        reader=reader,
        combiner=Combiner({**spec, "intercept": 0.0, "threshold": 0.5}),
        spans=spans,
    )
    ranked = reading.lexical.score_sentences(QUESTION, passages())
    logits, readings, x = reading.candidates(QUESTION, ranked, passages())
    assert reader.calls == [] and spans.reads == 0 and readings == [None] * len(ranked)
    assert not x[:, FEATURES.index("reader_logit")].any() and not x[:, FEATURES.index("span_margin")].any()
    every = all_features(reading, QUESTION, ranked, passages())
    assert reader.calls == [len(ranked)] and spans.reads == 1
    by_text = {s.text: i for i, s in enumerate(ranked)}
    assert every[by_text[ALMATY], FEATURES.index("reader_logit")] == 3.0
    assert every[by_text[ALMATY], FEATURES.index("span_margin")] == 1.0  # the null-trained model's margin
    assert min(every[:, FEATURES.index("span_margin")]) == -20.0  # a sentence without the answer: NO_ANSWER
    lexical = [FEATURES.index(n) for n in FEATURES if n not in ("reader_logit", "reader_margin", "reader_best")]
    lexical = [i for i in lexical if FEATURES[i] not in ("span_margin", "span_margin_gap", "span_fits")]
    assert np.array_equal(every[:, lexical], x[:, lexical])
    # « Quand… » wants a date, which may be phrased otherwise (« à la Renaissance »): no rule
    assert set(every[:, FEATURES.index("span_fits")]) == set(x[:, FEATURES.index("span_fits")]) == {1.0}


def test_the_reading_package_loads_its_modules_on_first_use() -> None:
    import os
    import subprocess
    import sys

    import qa

    code = (
        "import sys; import qa.answering.reading as r; r.enabled(); "
        "assert not [m for m in sys.modules if m.startswith('qa.answering.reading.')], sorted(sys.modules); "
        "assert r.ReadingAnswerer.__module__ == 'qa.answering.reading.answerer'; "
        "assert 'qa.answering.reading.reader' in sys.modules and 'qa.answering.reading.span' not in sys.modules"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(qa.__file__).resolve().parents[1]), "QA_READER": "off"}
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120, env=env)


def test_the_shipped_models_are_package_data() -> None:
    import tomllib

    import qa

    package = Path(qa.__file__).resolve().parent
    assert DEFAULT_ARTIFACT == package / "answering" / "reading" / "models"
    pyproject = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text(encoding="utf-8"))
    globs = pyproject["tool"]["setuptools"]["package-data"]["qa"]
    shipped = {p for p in DEFAULT_ARTIFACT.iterdir() if p.is_file()}
    assert {"manifest.json", "reader.safetensors", "span.json", "span.safetensors", "combiner.json"} <= {p.name for p in shipped}
    assert shipped <= {p for g in globs for p in package.glob(g)}  # a wheel carries every one


def test_shipped_combiner_was_fitted_on_the_training_split_with_its_dev_scores() -> None:
    combiner = Combiner.load(DEFAULT_ARTIFACT)
    spec = combiner.spec
    assert 0.0 < combiner.threshold < 1.0
    manifest = json.loads((DEFAULT_ARTIFACT / "manifest.json").read_text())
    assert spec["reader_weights_sha256"] == manifest["weights_sha256"]
    assert spec["split"]["seed"] == manifest["split"]["seed"] and spec["split"]["dev_share"] == manifest["split"]["dev_share"]
    scores = spec["scores"]
    assert scores["combined_at_threshold"]["false_abstention_rate"] <= spec["false_abstention_target"] + 0.01
    assert scores["top1"]["combined"] >= scores["top1"]["lexical"]
    assert spec["command"].startswith("qa fit-combiner")
    # its span features were those of the shipped span model, a null-trained one
    span = json.loads((DEFAULT_ARTIFACT / "span.json").read_text())
    assert spec["span_weights_sha256"] == span["weights_sha256"] and "null" in span["decode"]
    assert combiner.uses("span") and combiner.uses("reader") and 1 <= spec["candidates"] <= 16


# -- qa eval: the dev split and the stage table --------------------------------------------------------------------
def _squad(path: Path, titles: list[str]) -> Path:
    data = [
        {
            "title": t,
            "paragraphs": [
                {
                    "context": f"{t} a ouvert en 1990.",
                    "qas": [
                        {
                            "id": f"{t}-q",
                            "question": f"Quand {t} a-t-il ouvert ?",
                            "answers": [{"text": "1990", "answer_start": len(t) + 13}],
                        }
                    ],
                }
            ],
        }
        for t in titles
    ]
    path.write_text(json.dumps({"data": data}), encoding="utf-8")
    return path


def test_eval_split_is_the_readers_split_over_several_files(tmp_path: Path) -> None:
    a = _squad(tmp_path / "a.json", [f"A{i}" for i in range(10)])
    b = _squad(tmp_path / "b.json", [f"B{i}" for i in range(10)])
    articles, questions = load_squads([a, b])
    assert [x.id for x in articles[:2]] == ["0-0-0", "0-1-0"] and articles[10].id == "1-0-0"
    dev = split_questions(articles, questions, "dev", 0.2, 13)
    train = split_questions(articles, questions, "train", 0.2, 13)
    assert len(dev) == 4 and len(train) == 16
    title = {x.id: x.title for x in articles}
    assert not {title[q.doc_id] for q in dev} & {title[q.doc_id] for q in train}
    from qa.training.data import load_examples, split_examples

    t_train, t_dev = split_examples(load_examples([a, b]), 0.2, 13)  # what qa train-reader holds out
    assert {e.title for e in t_dev} == {title[q.doc_id] for q in dev}


def test_report_has_the_stage_table() -> None:
    stage = {
        "quote_contains_answer": 0.5,
        "exact_match": 0.2,
        "f1": 0.3,
        "false_abstention_rate": 0.05,
        "unanswerable_abstention_rate": 0.6,
        "ask_ms_p50": 80,
    }
    result = {
        "questions": 3,
        "k": 5,
        "retrieval": {},
        "split": "dev",
        "stages": {"extractive:lexical": stage, "extractive:combined": stage},
    }
    report = format_report(result)
    assert (
        "(dev split)" in report
        and "## Stage by stage" in report
        and "| `extractive:combined` | 0.5 | 0.2 | 0.3 | 0.05 | 0.6 | 80 |" in report
    )


# -- the real models ---------------------------------------------------------------------------------------------------
@pytest.fixture
def real_kb(tmp_path: Path):
    from qa import KnowledgeBase

    kb = KnowledgeBase.open(tmp_path / "index")
    kb.ingest([SEED])
    return kb


@pytest.mark.slow
@pytest.mark.reader
def test_seed_trap_with_the_real_reader(real_kb) -> None:
    assert isinstance(real_kb.answerer(), ReadingAnswerer)
    answer = real_kb.ask(QUESTION)
    assert not answer.abstained and answer.text == "En novembre 1994."
    quote = answer.citations[0]
    assert "Almaty" in quote.quote and "novembre 1994" in quote.quote and "Bruxelles" not in quote.quote
    assert quote.passage.text[quote.start : quote.end] == quote.quote
    assert "1994" in answer.short_answer


@pytest.mark.slow
@pytest.mark.reader
def test_gdp_question_abstains_with_the_real_reader(real_kb) -> None:
    answer = real_kb.ask("Quel est le PIB du Kazakhstan en 2021 ?")
    assert answer.abstained and answer.text == REFUSAL and not answer.citations


@pytest.mark.slow
@pytest.mark.reader
def test_qa_ask_answers_with_the_reader_from_the_command_line(real_kb, capsys: pytest.CaptureFixture[str]) -> None:
    from qa.cli import main

    assert (
        main(["--index", str(real_kb.settings.index_dir), "ask", "Et à Bruxelles, quand le bureau a-t-il ouvert ?", "--json"])
        == 0
    )
    out = json.loads(capsys.readouterr().out)
    assert not out["abstained"] and "1993" in out["text"] and "Bruxelles" in out["citations"][0]["quote"]


@pytest.mark.slow
def test_qa_ask_with_the_default_settings_reads_and_gets_the_seed_trap_right(
    real_kb, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """What a user gets with nothing set: the reading answerer, the Almaty sentence quoted, the GDP question refused."""
    from qa.cli import main

    monkeypatch.delenv("QA_READER")
    index = str(real_kb.settings.index_dir)
    real_kb.close()
    assert main(["--index", index, "ask", QUESTION, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert not out["abstained"] and out["text"] == "En novembre 1994."
    quote = out["citations"][0]["quote"]
    assert "Almaty" in quote and "novembre 1994" in quote and "Bruxelles" not in quote
    assert main(["--index", index, "ask", "Quel est le PIB du Kazakhstan en 2021 ?", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["abstained"] and out["text"] == REFUSAL and not out["citations"]


@pytest.mark.slow
def test_one_tokenizer_is_shared_with_each_views_own_settings() -> None:
    from qa.answering.reading.reader import load_tokenizer
    from qa.answering.reading.span import load_span_tokenizer
    from qa.embeddings.base import shared_tokenizer

    from helpers import MODEL_CACHE

    folder = MODEL_CACHE / "multilingual-e5-small"
    reader, span, counter = load_tokenizer(folder), load_span_tokenizer(folder), shared_tokenizer(folder, None, padding=False)
    assert reader._tokenizer is span._tokenizer is counter._tokenizer  # one XLM-R vocabulary (~290 MB) per process
    long = " ".join(["mot"] * 300)
    assert len(counter.encode_batch([long], add_special_tokens=False)[0].ids) == 300
    assert len(reader.encode_batch([long])[0].ids) == 96
    question = "Quand le bureau a-t-il ouvert ?"
    pair = span.encode_batch([(question, long)])[0]
    assert len(pair.ids) == 128 and pair.sequence_ids.count(0) == len(reader.encode_batch([question])[0].ids) - 2
    padded = reader.encode_batch(["court", long])
    assert len(padded[0].ids) == len(padded[1].ids) == 96 and padded[0].attention_mask.count(0) > 0
    assert len(counter.encode_batch(["court", long])[0].ids) < 10  # the counter never pads


def test_names_condition_adds_the_answer_sentence_with_a_swapped_name_as_a_wrong_candidate(tmp_path: Path) -> None:
    from qa.training.combiner import collect_swapped
    from qa.training.data import load_examples, other_paragraphs

    squad = {
        "data": [
            {
                "title": "UE",
                "paragraphs": [
                    {
                        "context": PASSAGE,
                        "qas": [
                            {
                                "id": "q1",
                                "question": QUESTION,
                                "answers": [{"text": "novembre 1994", "answer_start": PASSAGE.index("novembre 1994")}],
                            }
                        ],
                    }
                ],
            }
        ]
    }
    path = tmp_path / "squad.json"
    path.write_text(json.dumps(squad), encoding="utf-8")
    dataset = load_examples([path])

    class KB:
        def answerer(self, spec: str) -> ReadingAnswerer:
            return answerer(FakeReader("1994"))

        def search(self, question: str, k: int = 5, exclude: object = None) -> list[Passage]:
            return passages()

    plain = answerer(FakeReader("1994")).lexical.score_sentences(QUESTION, passages())
    rows = collect_swapped(KB(), dataset.examples, 5, "test", 8, other_paragraphs(dataset), 13)
    assert len(rows) == 1 and not rows[0]["removed"]
    x, y = rows[0]["x"], rows[0]["y"]
    assert len(y) == len(plain) + 1 and y.sum() == 1  # the copy holds « novembre 1994 » too, but is labelled 0
    names = x[:, FEATURES.index("name_coverage")]
    assert names[y == 1][0] == 1.0 and names.min() < 1.0
    logits = x[:, FEATURES.index("reader_logit")]
    assert (logits == 3.0).sum() == 2  # the reader (here: anything with « 1994 ») cannot tell the copy apart


def test_refit_extends_the_largest_cached_prefix(tmp_path: Path) -> None:
    from qa.training.combiner import _largest_prefix

    for n in (100, 600, 3000):
        (tmp_path / f"features-k5-abc-def-c8-{n}.npz").touch()
    (tmp_path / "features-k5-other-c8-900.npz").touch()
    assert _largest_prefix(tmp_path, "features-k5-abc-def-c8", 2000) == 600
    assert _largest_prefix(tmp_path, "features-k5-abc-def-c8", 100) == 0


def test_fit_rows_learns_the_informative_feature_and_sets_the_threshold_on_dev() -> None:
    from qa.training.combiner import fit_rows

    rng = np.random.default_rng(0)

    def rows(n: int) -> list[dict]:
        out = []
        for i in range(n):
            removed = i % 2 == 1
            y = np.zeros(4)
            if not removed:
                y[rng.integers(4)] = 1.0
            x = rng.normal(size=(4, len(FEATURES)))
            x[:, FEATURES.index("span_margin")] = 3.0 * y + rng.normal(scale=0.3, size=4)  # tells the answer apart
            x[:, FEATURES.index("near_miss")] = 0.0  # flags (rules), not noise
            x[:, FEATURES.index("span_fits")] = 1.0
            out.append({"id": str(i), "removed": removed, "x": x, "y": y})
        return out

    spec, scores = fit_rows(rows(200), rows(100), list(FEATURES), 1.0, 0.1)
    assert Combiner(spec).features == FEATURES and spec["threshold"] > 0
    assert scores["top1"]["combined"] > 0.95 and scores["top1"]["lexical"] < 0.5
    assert scores["combined_at_threshold"]["false_abstention_rate"] <= 0.1
    assert scores["combined_at_threshold"]["unanswerable_abstention_rate"] > 0.8


def test_cached_features_of_another_feature_list_are_refused_not_misread(tmp_path: Path) -> None:
    from qa.training.combiner import _load, _save

    rows = [{"id": "q1", "removed": False, "x": np.ones((2, len(FEATURES))), "y": np.array([1.0, 0.0])}]
    _save(tmp_path / "now.npz", rows)
    assert _load(tmp_path / "now.npz")[0]["x"].shape == (2, len(FEATURES))
    np.savez_compressed(tmp_path / "old.npz", ids=np.array(["q1"]), removed=np.array([False]), sizes=np.array([2]),
                        x=np.ones((2, len(FEATURES) - 1)), y=np.array([1.0, 0.0]))  # fmt: skip
    with pytest.raises(SystemExit, match=r"old\.npz holds features collected by another qa .*run without --refit"):
        _load(tmp_path / "old.npz")


def test_an_answer_of_another_kind_gives_way_to_the_rules_answer_of_the_wanted_kind() -> None:
    """« Depuis quelle année… » wants a year: the span model's « 27 août » gives way to the rules' « 1999 »."""
    question = "Depuis quelle année Alain Delon est-il citoyen suisse ?"
    text = "Citoyen suisse depuis 1999, Alain Delon a été hospitalisé le 27 août à Genève."
    seed = [Passage(text=text, doc_id="delon", chunk_id="delon:0", score=1.0, title="Delon")]
    answer = answerer(FakeReader("Delon"), NullSpans("27 août"), threshold=0.5).answer(question, seed)
    assert not answer.abstained and answer.short_answer == "1999" and "1999" in answer.text
    assert answer.citations[0].quote == text
