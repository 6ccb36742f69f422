"""The span reader (the short answer cut out of one sentence): the decoding helpers, the training labels, the int8
storage, the shipped artifact (manifest, hash, size) and, with the real model (slow), its answers on a few
sentences. Nothing here trains and nothing needs the PIAF files: the tests load the shipped artifact."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

import qa
from qa.answering.reading import DEFAULT_ARTIFACT, SPAN, SpanReader, sha256_file
from qa.answering.reading.span import (
    MAX_ANSWER_TOKENS,
    MAX_TOKENS,
    SPAN_MANIFEST,
    SPAN_WEIGHTS,
    best_span,
    decode,
    dequantise,
    sentence_tokens,
    strip_span,
    widen_to_words,
)
from qa.errors import ModelError
from qa.training.data import Example, Paragraph
from qa.training.span import answer_in_sentence, quantise_rows, token_span

from helpers import MODEL_CACHE

ALMATY_QUESTION = "Quand le bureau de l'UE a-t-il ouvert à Almaty ?"
ALMATY_SENTENCE = "Le bureau de l'Union européenne à Almaty a ouvert ses portes en novembre 1994."


@dataclass
class FakeEncoding:
    """What the decoder reads of a ``tokenizers`` Encoding."""

    sequence_ids: list[int | None]
    offsets: list[tuple[int, int]]
    ids: list[int]


def encoding_of(sentence: str, question_tokens: int = 3) -> FakeEncoding:
    """<s> q q q </s></s> then one token per whitespace word of ``sentence`` (offsets with the leading space, like
    the e5 tokenizer), </s>."""
    seq: list[int | None] = [None] + [0] * question_tokens + [None, None]
    offsets = [(0, 0)] + [(i, i + 1) for i in range(question_tokens)] + [(0, 0), (0, 0)]
    pos = 0
    for word in sentence.split(" "):
        start = max(0, pos - 1)
        seq.append(1)
        offsets.append((start, pos + len(word)))
        pos += len(word) + 1
    seq.append(None)
    offsets.append((0, 0))
    return FakeEncoding(seq, offsets, list(range(len(seq))))


# -- decoding -------------------------------------------------------------------------------------------------------
def test_best_span_keeps_start_before_end_and_the_length_limit() -> None:
    start = np.array([0.0, 5.0, 0.0, 0.0, 0.0])
    end = np.array([9.0, 0.0, 0.0, 1.0, 0.0])  # the best end (0) lies before the best start (1)
    assert best_span(start, end, [0, 1, 2, 3, 4])[:2] == (0, 0)  # 0 + 9 beats 5 + 1
    assert best_span(start, end, [1, 2, 3, 4])[:2] == (1, 3)
    assert best_span(start, end, [3, 4])[:2] == (3, 3)
    assert best_span(start, end, []) is None
    n = MAX_ANSWER_TOKENS + 5
    start, end = np.zeros(n), np.zeros(n)
    start[0], end[n - 1] = 10.0, 10.0
    i, j, _ = best_span(start, end, list(range(n)))
    assert i <= j and j - i < MAX_ANSWER_TOKENS


def test_best_span_ignores_positions_outside_the_sentence() -> None:
    start = np.array([100.0, 0.0, 1.0, 0.0])
    end = np.array([100.0, 0.0, 0.0, 1.0])
    assert best_span(start, end, [1, 2, 3])[:2] == (2, 3)


def test_widen_to_words() -> None:
    text = "Jean-Pierre Dupont a vu 3,5 millions de personnes."
    assert text[slice(*widen_to_words(text, 6, 9))] == "Jean-Pierre"
    assert text[slice(*widen_to_words(text, 13, 15))] == "Dupont"
    assert text[slice(*widen_to_words(text, 24, 25))] == "3,5"
    assert text[slice(*widen_to_words(text, 27, 32))] == " millions"  # a token's leading space is kept, then stripped
    assert widen_to_words("d'Almaty", 2, 5) == (2, 8)  # the elided article stays out


def test_strip_span() -> None:
    text = "Il est né en 1994. (ONU) « Paris », 52 av. J.-C., les Nations unies (ONU)."

    def stripped(piece: str) -> str:
        at = text.index(piece)
        return text[slice(*strip_span(text, at, at + len(piece)))]

    assert stripped("1994.") == "1994"
    assert stripped(" (ONU) ") == "ONU"
    assert stripped(" « Paris », ") == "Paris"
    assert stripped(" 52 av. J.-C.,") == "52 av. J.-C."  # an initial keeps its dot
    assert stripped("Nations unies (ONU).") == "Nations unies (ONU)"  # a bracket opened inside stays closed
    at = text.index(". (")
    assert strip_span(text, at, at + 3) == (at + 3, at + 3)  # only punctuation: empty


def test_decode_maps_tokens_to_whole_words_without_punctuation() -> None:
    sentence = "Le bureau a ouvert en novembre 1994."
    enc = encoding_of(sentence)
    positions = sentence_tokens(enc)
    assert positions == list(range(6, 6 + len(sentence.split(" "))))
    start, end = np.full(len(enc.ids), -5.0), np.full(len(enc.ids), -5.0)
    start[1], end[1] = 50.0, 50.0  # a question token: never chosen
    start[positions[5]], end[positions[6]] = 3.0, 4.0  # « novembre », « 1994. »
    s, e, score = decode(sentence, enc, start, end)
    assert sentence[s:e] == "novembre 1994" and score == pytest.approx(7.0)
    assert decode("", FakeEncoding([None, None], [(0, 0), (0, 0)], [0, 1]), np.zeros(2), np.zeros(2)) is None


# -- training labels and storage ------------------------------------------------------------------------------------
def _example(text: str, answer: str, start: int) -> Example:
    paragraph = Paragraph("0:0-0", "T", text, [(0, text.index(".") + 1), (text.index(".") + 2, len(text))])
    k = 0 if start < paragraph.sentences[0][1] else 1
    return Example("q", "Question ?", paragraph, [answer], [k], [start])


def test_answer_in_sentence_uses_answer_start_then_the_first_occurrence() -> None:
    text = "Il pleut. Paris aime Paris en 1990."
    example = _example(text, "Paris", text.rindex("Paris"))
    assert answer_in_sentence(example) == ("Paris aime Paris en 1990.", 11, 16)
    example.answer_starts = [-1]
    assert answer_in_sentence(example) == ("Paris aime Paris en 1990.", 0, 5)
    example.answers = ["PARIS aime"]
    assert answer_in_sentence(example) == ("Paris aime Paris en 1990.", 0, 10)
    example.answers = ["Lyon"]
    assert answer_in_sentence(example) is None
    legacy = Example("q", "Question ?", example.paragraph, ["1990"], [1])  # no answer_starts: still fine
    assert answer_in_sentence(legacy) == ("Paris aime Paris en 1990.", 20, 24)


def test_token_span_covers_the_answer_characters() -> None:
    sentence = "Le bureau a ouvert en novembre 1994."
    enc = encoding_of(sentence)
    at = sentence.index("novembre 1994")
    first, last = token_span(enc, at, at + len("novembre 1994"))
    assert (first, last) == (6 + 5, 6 + 6)
    assert token_span(enc, len(sentence) + 5, len(sentence) + 9) is None  # truncated away


def test_int8_rows_round_trip() -> None:
    rng = np.random.default_rng(13)
    matrix = rng.normal(size=(8, 16)).astype(np.float32)
    q, scale = quantise_rows(matrix)
    assert q.dtype == np.int8 and scale.shape == (8,)
    back = dequantise({"w": q, "w.scale": scale, "b": np.ones(3, dtype=np.float16)})
    assert set(back) == {"w", "b"} and back["b"].dtype == np.float32
    assert np.abs(back["w"] - matrix).max() <= np.abs(matrix).max() / 127
    with pytest.raises(ModelError, match="without its w.scale"):
        dequantise({"w": q})


# -- the shipped artifact -------------------------------------------------------------------------------------------
def test_shipped_span_artifact_matches_its_manifest() -> None:
    manifest = SPAN.load_manifest(DEFAULT_ARTIFACT)
    weights = DEFAULT_ARTIFACT / manifest["weights"]
    assert sha256_file(weights) == manifest["weights_sha256"] == manifest["weights_sha256"].lower()
    assert weights.stat().st_size <= 8.5 * 1e6
    total = sum(p.stat().st_size for p in DEFAULT_ARTIFACT.glob("*.safetensors"))
    assert total < 30 * 1e6
    assert manifest["input"]["max_tokens"] == MAX_TOKENS
    assert all(len(f["sha256"]) == 64 for f in manifest["data"])
    assert manifest["command"].startswith("qa train-span")
    assert manifest["split"] == manifest["split"] | {"by": "article title", "seed": 13, "dev_share": 0.15}
    assert 0.0 < manifest["dev"]["exact_match"] <= manifest["dev"]["f1"] <= 1.0


def test_tampered_or_missing_span_weights_are_refused(tmp_path: Path) -> None:
    copy = tmp_path / "reader"
    copy.mkdir()
    for name in (SPAN_WEIGHTS, SPAN_MANIFEST):
        shutil.copy(DEFAULT_ARTIFACT / name, copy / name)
    with open(copy / SPAN_WEIGHTS, "r+b") as fh:
        fh.seek(-1, 2)
        last = fh.read(1)
        fh.seek(-1, 2)
        fh.write(bytes([last[0] ^ 1]))
    with pytest.raises(ModelError, match=r"span\.safetensors does not match .*span\.json.*qa train-span"):
        SPAN.load_manifest(copy)
    (copy / SPAN_WEIGHTS).unlink()
    with pytest.raises(ModelError, match="span weights .* are missing: run `qa train-span`"):
        SPAN.load_manifest(copy)
    manifest = json.loads((copy / SPAN_MANIFEST).read_text())
    (copy / SPAN_MANIFEST).write_text(json.dumps(manifest | {"format": 99}))
    with pytest.raises(ModelError, match="format 99"):
        SPAN.load_manifest(copy)
    (copy / SPAN_MANIFEST).unlink()
    with pytest.raises(ModelError, match="no span model in .*: run `qa train-span`"):
        SPAN.load_manifest(copy)


def test_cli_has_train_span() -> None:
    from qa.cli import build_parser

    args = build_parser().parse_args(["train-span", "--layers", "4", "--quantize", "int8", "--budget-min", "5", "--resume"])
    assert (args.layers, args.quantize, args.budget_min, args.resume, args.seed) == (4, "int8", 5.0, True, 13)
    assert Path(args.out) == DEFAULT_ARTIFACT and args.work_dir == "~/.cache/qa/span-train"
    assert [Path(d).name for d in args.data] == ["piaf-v1.0.json", "piaf-v1.1-extra.json"]


# -- the real span reader (ONNX Runtime; built once from the e5 folder and the artifact) ----------------------------
@pytest.fixture(scope="module")
def span_reader() -> SpanReader:
    return SpanReader(MODEL_CACHE).load()


def _answer(reader: SpanReader, question: str, sentence: str) -> str:
    found = reader.extract(question, sentence)
    assert found is not None
    start, end, _ = found
    return sentence[start:end]


@pytest.mark.slow
def test_real_span_reader_finds_the_date(span_reader: SpanReader) -> None:
    assert _answer(span_reader, ALMATY_QUESTION, ALMATY_SENTENCE) in ("novembre 1994", "en novembre 1994")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("question", "sentence", "answers"),
    [
        (
            "Qui a fondé la ville de Montréal ?",
            "La ville de Montréal a été fondée en 1642 par Paul de Chomedey de Maisonneuve.",
            ("Paul de Chomedey de Maisonneuve",),
        ),
        (
            "Où est né Napoléon ?",
            "Napoléon Bonaparte est né le 15 août 1769 à Ajaccio, en Corse.",
            ("Ajaccio", "à Ajaccio"),
        ),
        (
            "Combien d'habitants compte la commune ?",
            "En 2015, la commune comptait 12 345 habitants, soit une hausse de 3 % en dix ans.",
            ("12 345", "12 345 habitants"),
        ),
    ],
)
def test_real_span_reader_finds_a_person_a_place_a_number(
    span_reader: SpanReader, question: str, sentence: str, answers: tuple[str, ...]
) -> None:
    assert _answer(span_reader, question, sentence) in answers


@pytest.mark.slow
def test_extract_returns_none_without_a_sentence(span_reader: SpanReader) -> None:
    assert span_reader.extract(ALMATY_QUESTION, "   ") is None


@pytest.mark.slow
def test_extracting_does_not_import_torch(span_reader: SpanReader) -> None:
    code = (
        "import sys; from pathlib import Path; from qa.answering.reading import SpanReader; "
        f"r = SpanReader(Path({str(MODEL_CACHE)!r})); x = r.extract('Qui est président ?', 'Jean Martin est président.'); "
        "assert x is not None, x; assert 'torch' not in sys.modules, 'torch imported'"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(qa.__file__).resolve().parents[1])}
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300, env=env)


def test_batch_order_covers_every_pair_once_an_epoch_with_little_padding() -> None:
    from qa.training.span import batch_order

    lengths = [(i * 37) % 100 + 10 for i in range(500)]
    order = batch_order(lengths, 16, 2, 13)
    assert order == batch_order(lengths, 16, 2, 13)
    first = order[: len(order) // 2]
    assert sorted(i for b in first for i in b) == list(range(500))
    assert all(len(b) <= 16 for b in order)
    assert sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in order) / len(order) < 20


# -- the null answer (a sentence that does not hold the answer) -------------------------------------------------------
def test_null_pairs_never_hold_the_answer_and_target_position_zero() -> None:
    from qa.training.span import negative_features

    text = "Il pleut à Lyon. Paris aime Paris en 1990. Le maire parle. Les trains roulent."
    ends = [i + 1 for i, c in enumerate(text) if c == "."]
    sentences = [(0 if k == 0 else ends[k - 1] + 1, end) for k, end in enumerate(ends)]
    paragraph = Paragraph("t:0", "T", text, sentences)
    example = Example("q", "Quand ?", paragraph, ["1990"], [1], [text.index("1990")])
    other = Paragraph("t:1", example.paragraph.title, "Rome fut fondée en 753. Elle compte 1990 fontaines.", [(0, 23), (24, 51)])

    class Tokenizer:  # the fake encodings, padded to the longest like the real tokenizer pads a batch
        def encode_batch(self, pairs: list[tuple[str, str]]) -> list[FakeEncoding]:
            encoded = [encoding_of(s) for _, s in pairs]
            width = max(len(e.ids) for e in encoded)
            for e in encoded:
                e.attention_mask = [1] * len(e.ids) + [0] * (width - len(e.ids))  # type: ignore[attr-defined]
                e.ids += [1] * (width - len(e.ids))
            return encoded

    features = negative_features(Tokenizer(), [example], {example.paragraph.key: [other]}, same=5, other=5, seed=13)
    sentences = [f.sentence for f in features]
    assert sorted(sentences) == sorted(["Il pleut à Lyon.", "Le maire parle.", "Les trains roulent.", "Rome fut fondée en 753."])
    assert all(f.null and f.start == 0 and f.end == 0 and f.example is example for f in features)
    # unpadded: the trainer's bottom layers attend to every token of an encoding
    assert all(f.encoding.ids == encoding_of(f.sentence).ids for f in features)


def test_evaluate_null_reads_the_best_margin_per_question_and_condition() -> None:
    from qa.training.span import Feature, evaluate_null

    rows = []
    margins = []
    for n in range(10):
        text = f"Le chat {n} dort. Le chien mange en {1990 + n}."
        example = _example(text, str(1990 + n), text.index(str(1990 + n)))
        example.id = f"q{n}"
        sentences = example.paragraph.sentence_texts()
        # question n: the answer sentence scores n - 1 (< 0 for n = 0), the other -2; the other paragraph n - 5
        for sentence, margin in zip(sentences, (-2.0, n - 1.0), strict=True):
            rows.append((example, False, Feature(example, sentence, None)))
            margins.append(margin)
        rows.append((example, True, Feature(example, "Rien ici.", None)))
        margins.append(n - 5.0)
    result = evaluate_null(margins, rows, false_abstention=0.1)
    # question 0: the other sentence (-2) beats nothing: its answer sentence scores -1 > -2, so all ten are right
    assert result["questions"] == 10 and result["sentence_top1"] == 1.0
    # best margins of the answerable: -1, 0, ..., 8; 10 % may abstain: the threshold is the second lowest (0)
    assert result["threshold"] == 0.0
    # the other paragraph's margins -5..4: below 0 for five of them
    assert result["abstains_other_paragraph"] == 0.5
    assert result["abstains_at_zero"] == {"answerable": 0.1, "other_paragraph": 0.5}


def test_swap_name_replaces_a_question_name_with_another_name_of_the_article() -> None:
    import random

    from qa.training.data import swap_name

    text = "En décembre 1993, le Kazakhstan a ouvert son bureau à Bruxelles. En novembre 1994, l’UE a ouvert à Almaty."
    paragraph = Paragraph("t:0", "T", text, [(0, 63), (64, len(text))])
    example = Example("q", "Quand le bureau de l'UE a-t-il ouvert à Almaty ?", paragraph, ["novembre 1994"], [1], [67])
    swapped = swap_name(example, text[64:], [], random.Random(13))
    assert swapped is not None and "Almaty" not in swapped and "novembre 1994" in swapped
    assert swapped.replace("Bruxelles", "Almaty") == text[64:] or swapped.replace("Kazakhstan", "Almaty") == text[64:]
    # the question's names are not in the sentence, or the name is the answer itself: no swap
    assert swap_name(example, "Le bureau a ouvert en 1994.", [], random.Random(13)) is None
    example.answers = ["Almaty"]
    assert swap_name(example, text[64:], [], random.Random(13)) is None


@pytest.mark.slow
def test_real_span_reader_reads_the_null_answer(span_reader: SpanReader) -> None:
    """The shipped span model was trained with the null answer: its margin says which sentence answers, and that
    none does for a question the sentences do not answer."""
    sentences = [
        "En novembre 1994, la délégation de l’UE au Kazakhstan a commencé ses travaux à Almaty.",
        "En décembre 1993, le Kazakhstan a ouvert son bureau à Bruxelles.",
        "Le Kazakhstan est le plus grand pays d’Asie centrale.",
    ]
    assert span_reader.null
    brussels = span_reader.read("Quand le Kazakhstan a-t-il ouvert son bureau à Bruxelles ?", sentences)
    margins = [r.margin for r in brussels if r is not None]
    assert len(margins) == 3 and margins[1] > 0 and margins[1] == max(margins)
    assert sentences[1][brussels[1].start : brussels[1].end] in ("décembre 1993", "En décembre 1993")
    gdp = span_reader.read("Quel est le PIB du Kazakhstan en 2021 ?", sentences)
    assert all(r is not None and r.margin < 0 for r in gdp)
    assert span_reader.read("Quand ?", ["  ", sentences[0]])[0] is None


# -- the listwise null answer (qa train-span --listwise K) ------------------------------------------------------------
SEED_TEXT = (
    "Le 2 février 1993, les relations diplomatiques ont été établies. En décembre 1993, le Kazakhstan a ouvert son "
    "bureau à Bruxelles. En novembre 1994, la délégation de l'UE a commencé ses travaux à Almaty. Il fait beau."
)


def _seed_example() -> Example:
    from qa.answering.reading.reader import candidate_sentences

    paragraph = Paragraph("t:0", "T", SEED_TEXT, candidate_sentences(SEED_TEXT))
    answer = "novembre 1994"
    positives = [i for i, s in enumerate(paragraph.sentence_texts()) if answer in s]
    return Example("q", "Quand le bureau de l'UE a-t-il ouvert à Almaty ?", paragraph, [answer], positives)


def test_hard_group_puts_the_answer_first_then_the_near_misses_most_like_the_question() -> None:
    import random

    from qa.training.listwise import hard_group

    example = _seed_example()
    other = Paragraph("t:1", "T", "Le bureau de Bruxelles a ouvert. Rien à voir ici.", [(0, 32), (33, 49)])
    group = hard_group(example, [other], 3, random.Random(1))
    assert group is not None and group.positives == [0]
    assert "novembre 1994" in group.sentences[0]
    # the two sentences sharing most of « bureau … ouvert » come next, nothing that holds the answer
    assert set(group.sentences[1:]) == {
        "En décembre 1993, le Kazakhstan a ouvert son bureau à Bruxelles.",
        "Le bureau de Bruxelles a ouvert.",
    }
    # its paragraph left out: only the article's other sentences, and nothing to find (abstain)
    removed = hard_group(example, [other], 3, random.Random(1), removed=True)
    assert removed is not None and removed.positives == [] and all("1994" not in s for s in removed.sentences)
    assert removed.sentences[0] == "Le bureau de Bruxelles a ouvert."
    # an unanswerable question: its paragraph's sentences, none of them right (its plausible one included)
    example.impossible = True
    unanswerable = hard_group(example, [], 4, random.Random(1))
    assert unanswerable is not None and unanswerable.positives == [] and len(unanswerable.sentences) == 4


def test_listwise_loss_rewards_the_answer_above_zero_and_every_margin_below_zero_without_one() -> None:
    import torch

    from qa.training.listwise import Group, listwise_loss

    example = _seed_example()
    answerable = Group(example, ["a", "b", "c"], [0])
    none = Group(example, ["d", "e"], [])  # a shorter group: its missing slot never counts

    def loss(*margins: float) -> float:
        return float(listwise_loss(torch.tensor(margins, dtype=torch.float64), [answerable, none], 3))

    good, wrong_first, all_positive = loss(4, -1, -1, -3, -3), loss(-1, 4, -1, -3, -3), loss(4, -1, -1, 3, 3)
    assert good < wrong_first and good < all_positive
    # exact value: -log softmax of the answer among (4, -1, -1, none 0), and of none among (-3, -3, 0)
    expected = (-(4 - np.log(np.exp(4) + 2 * np.exp(-1) + 1)) - (0 - np.log(2 * np.exp(-3) + 1))) / 2
    assert abs(good - expected) < 1e-5


def test_span_margins_match_the_runtime_decoding() -> None:
    import torch

    from qa.training.span import span_margins

    rng = np.random.default_rng(7)
    start, end = rng.normal(size=(3, 40)), rng.normal(size=(3, 40))
    allowed = np.zeros((3, 40), dtype=bool)
    allowed[:, 0] = True
    allowed[0, 5:35], allowed[1, 3:9], allowed[2, 10:40] = True, True, True
    got = span_margins(torch.tensor(start), torch.tensor(end), torch.tensor(allowed)).numpy()
    for row in range(3):
        positions = [i for i in range(1, 40) if allowed[row, i]]
        found = best_span(start[row], end[row], positions)
        assert found is not None
        assert abs(got[row] - (found[2] - (start[row, 0] + end[row, 0]))) < 1e-9


def test_train_span_refuses_news_without_listwise_and_negatives_with_it(capsys: pytest.CaptureFixture[str]) -> None:
    from qa.cli import main

    data = str(Path(__file__).parent / "data")  # any existing file: the options are checked first
    existing = next(p for p in Path(data).rglob("*") if p.is_file())
    assert main(["train-span", str(existing), "--news", "x.jsonl"]) == 1
    assert "--news is read only by --listwise" in capsys.readouterr().err
    assert main(["train-span", str(existing), "--listwise", "5", "--negatives-same", "2"]) == 1
    assert "--listwise draws its own near misses" in capsys.readouterr().err
