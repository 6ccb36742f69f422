"""The reader's sentence vectors stored beside the index (computed at ingest, read by the questions), and the
length buckets the fine-tuned models run their batches in. The slow tests use the real reader and span model."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from qa import KnowledgeBase
from qa.answering.reading import Reader, ReadingAnswerer, candidate_sentences
from qa.answering.reading.finetuned import buckets
from qa.answering.reading.vectors import FILE, SentenceVectors, rounded

from helpers import MODEL_CACHE, SEED, FakeEmbedder

QUESTION = "Quand le bureau de l'UE a-t-il ouvert à Almaty ?"


# -- the store ---------------------------------------------------------------------------------------------------------
def test_the_store_keeps_float16_vectors_by_sentence_and_reader(tmp_path: Path) -> None:
    path = tmp_path / FILE
    store = SentenceVectors(path, "reader-a")
    v = np.random.default_rng(0).normal(size=(3, 384)).astype(np.float32)
    store.put({"Une phrase.": v[0], "Une autre phrase.": v[1]})
    got = store.get(["Une autre phrase.", "Absente.", "Une phrase.", "Une phrase."])
    assert got[1] is None
    np.testing.assert_array_equal(got[0], rounded(v[1]))
    np.testing.assert_array_equal(got[2], rounded(v[0]))
    np.testing.assert_array_equal(got[3], rounded(v[0]))
    assert got[0].dtype == np.float32 and np.abs(got[0] - v[1]).max() < 1e-2
    assert store.missing(["Absente.", "Une phrase.", "Absente."]) == ["Absente."]
    # another reader's vectors are another model's: never served to this one
    other = SentenceVectors(path, "reader-b")
    assert other.get(["Une phrase."]) == [None] and other.count() == 0
    other.put({"Une phrase.": v[2]})
    np.testing.assert_array_equal(store.get(["Une phrase."])[0], rounded(v[0]))
    # a second process (connection) on the same file sees what the first wrote
    again = SentenceVectors(path, "reader-a")
    assert again.count() == 2
    store.close(), other.close(), again.close()


def test_a_damaged_file_is_told_once_and_read_as_empty(tmp_path: Path, caplog) -> None:
    path = tmp_path / FILE
    path.write_bytes(b"not a database at all, " * 200)
    store = SentenceVectors(path, "r")
    with caplog.at_level(logging.WARNING):
        assert store.get(["Une phrase."]) == [None]
        store.put({"Une phrase.": np.ones(4, dtype=np.float32)})
        assert store.missing(["Une phrase."]) == ["Une phrase."]
    assert store.broken and caplog.text.count("cannot be used") == 1
    assert f"{path}" in caplog.text and "delete it" in caplog.text
    assert path.read_bytes().startswith(b"not a database")  # left as it was


def test_many_sentences_are_looked_up_past_sqlites_parameter_limit(tmp_path: Path) -> None:
    store = SentenceVectors(tmp_path / FILE, "r")
    vectors = {f"Phrase {i}.": np.full(4, i, dtype=np.float32) for i in range(2500)}
    store.put(vectors)
    got = store.get(list(vectors))
    assert [float(g[0]) for g in got] == [float(rounded(np.float32(i))) for i in range(2500)]


def test_buckets_cover_every_row_once_longest_first_within_the_slack() -> None:
    lengths = [30, 120, 118, 45, 60, 31, 119]
    groups = buckets(lengths)
    assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
    for g in groups:
        assert max(lengths[i] for i in g) * len(g) <= 1.15 * sum(lengths[i] for i in g)
    assert groups[0] == [1, 6, 2]  # the three long ones together
    assert buckets([50, 50, 50]) == [[0, 1, 2]] and buckets([]) == []


def test_a_failing_after_write_is_logged_and_the_batch_stays_committed(tmp_path: Path, caplog) -> None:
    kb = KnowledgeBase.open(tmp_path / "index", embedder=FakeEmbedder())

    def fail(texts: list[str]) -> None:
        raise RuntimeError("no reader here")

    kb.writer.after_write = fail
    with caplog.at_level(logging.WARNING):
        report = kb.ingest([SEED])
    assert len(report.added) == 1 and not report.errors
    assert "no reader here" in caplog.text
    assert kb.search("bureau Almaty")[0].doc_id == report.added[0]


def test_the_vectors_file_is_kept_only_with_the_reader_on(tmp_path: Path) -> None:
    assert KnowledgeBase._vectors_file(_settings(tmp_path, reader="off")) is None
    assert KnowledgeBase._vectors_file(_settings(tmp_path, reader="on", reader_vectors="off")) is None
    assert KnowledgeBase._vectors_file(_settings(tmp_path, reader="on")) == tmp_path / FILE


def _settings(index: Path, **changes: str):
    from qa.config import load_settings

    return load_settings(index_dir=index, **changes)


# -- the real reader and span model ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def reader() -> Reader:
    return Reader(MODEL_CACHE).load()


class Counting:
    """Counts the texts the reader embeds."""

    def __init__(self, reader: Reader, monkeypatch: pytest.MonkeyPatch) -> None:
        self.texts: list[str] = []
        embed = reader._embed

        def spy(texts: list[str]) -> np.ndarray:
            self.texts.extend(texts)
            return embed(texts)

        monkeypatch.setattr(reader, "_embed", spy)


@pytest.mark.slow
def test_prepared_vectors_give_the_same_logits_and_a_question_embeds_only_itself(
    reader: Reader, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = SEED.read_text(encoding="utf-8")
    sentences = [text[s:e] for s, e in candidate_sentences(text)]
    reader.clear_cache()
    computed = reader.score(QUESTION, sentences)
    store = SentenceVectors(tmp_path / FILE, reader.manifest["weights_sha256"])
    assert reader.prepare([text], store) == len(set(sentences))
    assert reader.prepare([text], store) == 0  # already there
    reader.clear_cache()
    count = Counting(reader, monkeypatch)
    stored = reader.score(QUESTION, sentences, store=store)
    assert count.texts == ["query: " + QUESTION]
    np.testing.assert_allclose(stored, computed, atol=1e-5)


@pytest.mark.slow
def test_a_question_stores_the_vectors_it_had_to_compute(reader: Reader, tmp_path: Path) -> None:
    store = SentenceVectors(tmp_path / FILE, reader.manifest["weights_sha256"])
    reader.clear_cache()
    reader.score(QUESTION, ["En novembre 1994, la délégation a commencé ses travaux à Almaty."], store=store)
    assert store.count() == 1


@pytest.mark.slow
def test_buckets_give_the_outputs_of_one_padded_batch(reader: Reader) -> None:
    from qa.answering.reading.span import SpanReader, encode_span_pairs

    text = SEED.read_text(encoding="utf-8")
    sentences = [text[s:e] for s, e in candidate_sentences(text)]
    assert len(buckets([len(s) for s in sentences])) > 1
    encoded = reader._tokenizer.encode_batch(["passage: " + s for s in sentences])
    ids = np.array([e.ids for e in encoded], dtype=np.int64)
    mask = np.array([e.attention_mask for e in encoded], dtype=np.int64)
    np.testing.assert_allclose(reader._outputs_bucketed(ids, mask, per_token=False)[0], reader._outputs(ids, mask)[0], atol=1e-4)

    spans = SpanReader(MODEL_CACHE).load()
    ids, mask, _ = encode_span_pairs(spans._tokenizer, [(QUESTION, s) for s in sentences])
    whole = spans._outputs(ids, mask)
    parts = spans._outputs_bucketed(ids, mask, per_token=True, fill=-1e4)
    real = mask.astype(bool)
    lengths = [int(n) for n in mask.sum(axis=1)]
    for a, b in zip(whole, parts, strict=True):
        np.testing.assert_allclose(b[real], a[real], atol=1e-3)
        for rows in buckets(lengths):  # past a bucket's longest row: the fill (no token there)
            assert (b[rows, max(lengths[i] for i in rows) :] == -1e4).all()


@pytest.mark.slow
@pytest.mark.reader
def test_ingest_stores_the_sentence_vectors_and_a_question_reads_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    kb = KnowledgeBase.open(tmp_path / "index")
    kb.ingest([SEED])
    answerer = kb.answerer()
    assert isinstance(answerer, ReadingAnswerer)
    store = answerer.vectors
    assert store is not None and store.path == tmp_path / "index" / FILE
    text = SEED.read_text(encoding="utf-8")
    passages = kb.search(QUESTION)
    wanted = {s.text for p in [passages] for s in answerer.lexical.score_sentences(QUESTION, p)}
    assert wanted and all(v is not None for v in store.get(sorted(wanted)))
    assert store.count() >= len({text[s:e] for s, e in candidate_sentences(text)}) // 2
    answerer.reader.clear_cache()
    count = Counting(answerer.reader, monkeypatch)
    answer = kb.ask("Quel est le PIB du Kazakhstan en 2021 ?")
    assert count.texts == ["query: Quel est le PIB du Kazakhstan en 2021 ?"]
    assert answer.abstained


@pytest.mark.slow
@pytest.mark.reader
def test_reader_vectors_off_keeps_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QA_READER_VECTORS", "off")
    kb = KnowledgeBase.open(tmp_path / "index")
    kb.ingest([SEED])
    assert kb.answerer().vectors is None
    assert not (tmp_path / "index" / FILE).exists()
