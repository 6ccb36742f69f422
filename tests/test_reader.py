"""The trained reader: the training data split (by article), the shipped artifact (manifest, hash, size) and,
with the real model (slow), its choice on the seed article. Nothing here trains: the tests load the shipped
artifact, and none needs the PIAF files (those that use them skip when they are absent)."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import qa
from qa.answering.reading import DEFAULT_ARTIFACT, READER, Reader, candidate_sentences, sha256_file
from qa.answering.reading.reader import MANIFEST_FILE, MAX_TOKENS, WEIGHTS_FILE
from qa.chunking import split_sentences
from qa.errors import ModelError
from qa.evaluation import quote_contains_answer
from qa.training.data import load_examples, other_paragraphs, split_examples, split_titles, training_list

from helpers import MODEL_CACHE, ROOT, SEED

DATA = ROOT.parent / "shared" / "data"
ALMATY_QUESTION = "Quand le bureau de l'UE a-t-il ouvert à Almaty ?"


def squad_file(tmp_path: Path, articles: int = 12, paragraphs: int = 3) -> Path:
    """A small SQuAD-format file: each paragraph has three sentences, one question answered by the second."""
    data = []
    for a in range(articles):
        paras = []
        for p in range(paragraphs):
            context = f"Le club {a} joue à Lyon. Il a gagné {a * 10 + p} matchs en {1990 + p}. Son président est Jean Martin."
            answer = f"{a * 10 + p} matchs"
            paras.append(
                {
                    "context": context,
                    "qas": [
                        {
                            "id": f"q{a}-{p}",
                            "question": f"Combien de matchs le club {a} a-t-il gagnés ?",
                            "answers": [{"text": answer, "answer_start": context.index(answer)}],
                        }
                    ],
                }
            )
        data.append({"title": f"Article {a}", "paragraphs": paras})
    path = tmp_path / "squad.json"
    path.write_text(json.dumps({"version": "1.0", "data": data}), encoding="utf-8")
    return path


# -- data and split ------------------------------------------------------------------------------------------------
def test_split_is_by_article_and_fixed_by_the_seed(tmp_path: Path) -> None:
    dataset = load_examples([squad_file(tmp_path)])
    train, dev = split_examples(dataset, 0.25, seed=13)
    assert train and dev
    assert not {e.title for e in train} & {e.title for e in dev}, "an article on both sides of the split"
    assert len({e.title for e in dev}) == 3  # 25 % of 12 articles
    assert len(train) + len(dev) == len(dataset.examples)
    again = split_examples(load_examples([squad_file(tmp_path)]), 0.25, seed=13)[1]
    assert [e.id for e in again] == [e.id for e in dev]
    other = split_examples(dataset, 0.25, seed=14)[1]
    assert {e.title for e in other} != {e.title for e in dev}


def test_split_titles_does_not_depend_on_order() -> None:
    titles = [f"t{i}" for i in range(40)]
    assert split_titles(titles, 0.2, 5) == split_titles(list(reversed(titles)) * 2, 0.2, 5)


def test_positive_is_the_answer_sentence_and_negatives_do_not_hold_the_answer(tmp_path: Path) -> None:
    dataset = load_examples([squad_file(tmp_path)])
    assert dataset.files[0]["sha256"] and dataset.files[0]["questions"] == 36 and dataset.skipped == 0
    example = dataset.examples[0]
    assert example.paragraph.sentences == candidate_sentences(example.paragraph.text)
    assert [example.paragraph.sentence_texts()[k] for k in example.positives] == ["Il a gagné 0 matchs en 1990."]
    others = other_paragraphs(dataset)
    assert {p.title for p in others[example.paragraph.key]} == {example.title}
    sentences, labels = training_list(example, others[example.paragraph.key], random.Random(0), neg_same=5, neg_other=2)
    assert labels == [1.0] + [0.0] * (len(sentences) - 1)
    assert sentences[0] == "Il a gagné 0 matchs en 1990."
    assert len(sentences) == 1 + 2 + 2
    assert not any(quote_contains_answer([s], example.answers) for s in sentences[1:])


def test_piaf_split_keeps_every_article_on_one_side() -> None:
    """The shipped model's own split: same data files (by hash), same sizes, no article on both sides."""
    manifest = READER.load_manifest()
    files = [DATA / f["file"] for f in manifest["data"]]
    if not all(p.exists() for p in files):
        pytest.skip("PIAF is not in ../shared/data")
    split = manifest["split"]
    dataset = load_examples(files)
    assert [f["sha256"] for f in dataset.files] == [f["sha256"] for f in manifest["data"]]
    train, dev = split_examples(dataset, split["dev_share"], split["seed"])
    assert not {e.title for e in train} & {e.title for e in dev}
    assert (len(train), len(dev)) == (split["train_questions"], split["dev_questions"])


# -- the shipped artifact ------------------------------------------------------------------------------------------
def test_shipped_artifact_matches_its_manifest() -> None:
    manifest = READER.load_manifest(DEFAULT_ARTIFACT)
    weights = DEFAULT_ARTIFACT / manifest["weights"]
    assert sha256_file(weights) == manifest["weights_sha256"]
    assert weights.stat().st_size <= 30 * 1024 * 1024
    assert manifest["dtype"] == "float16"
    assert manifest["input"]["max_tokens"] == MAX_TOKENS
    assert {f["file"] for f in manifest["data"]} >= {"piaf-v1.0.json"}
    assert all(len(f["sha256"]) == 64 for f in manifest["data"])
    assert manifest["command"].startswith("qa train-reader")
    assert 0.0 < manifest["dev"]["top1_sentence_holds_answer"] <= 1.0
    assert manifest["split"]["by"] == "article title"


def test_tampered_or_missing_weights_are_refused(tmp_path: Path) -> None:
    copy = tmp_path / "reader"
    shutil.copytree(DEFAULT_ARTIFACT, copy, ignore=shutil.ignore_patterns("README.md"))
    with open(copy / WEIGHTS_FILE, "r+b") as fh:
        fh.seek(-1, 2)
        last = fh.read(1)
        fh.seek(-1, 2)
        fh.write(bytes([last[0] ^ 1]))
    with pytest.raises(ModelError, match="does not match its manifest"):
        READER.load_manifest(copy)
    (copy / WEIGHTS_FILE).unlink()
    with pytest.raises(ModelError, match="QA_READER=off"):
        READER.load_manifest(copy)
    (copy / MANIFEST_FILE).unlink()
    with pytest.raises(ModelError, match="train-reader"):
        READER.load_manifest(copy)


def test_candidates_are_the_project_sentences() -> None:
    text = SEED.read_text(encoding="utf-8")
    spans = candidate_sentences(text)
    assert [s for s, _ in spans] == [s for s, _ in split_sentences(text)]
    assert all(e <= e0 for (_, e), (_, e0) in zip(spans, split_sentences(text), strict=True))


def test_qa_reader_is_on_unless_set_off(monkeypatch: pytest.MonkeyPatch) -> None:
    from qa.answering.reading import enabled

    monkeypatch.delenv("QA_READER", raising=False)
    assert enabled()  # the default since it gets the seed trap right (issue 21)
    for value in ("off", "OFF", "0", "false", "no", "maybe"):
        monkeypatch.setenv("QA_READER", value)
        assert not enabled()
    for value in ("on", "ON", "1", "true", "yes"):
        monkeypatch.setenv("QA_READER", value)
        assert enabled()


def test_cli_has_train_reader() -> None:
    from qa.cli import build_parser

    args = build_parser().parse_args(["train-reader", "--layers", "2", "--budget-min", "5", "--resume"])
    assert (args.layers, args.budget_min, args.resume, args.seed) == (2, 5.0, True, 13)
    assert [Path(d).name for d in args.data] == ["piaf-v1.0.json", "piaf-v1.1-extra.json"]


# -- the real reader (ONNX Runtime; built once from the e5 folder and the artifact) ----------------------------------
@pytest.fixture(scope="module")
def reader() -> Reader:
    return Reader(MODEL_CACHE).load()


@pytest.mark.slow
@pytest.mark.xfail(
    strict=True,
    reason="the shipped reader alone (a bi-encoder) ranks « En décembre 1993, le Kazakhstan a ouvert son bureau à "
    "Bruxelles. » (logit 0.698) just above the Almaty sentence (0.667); the reading answerer gets the seed trap right "
    "by its choice's near-miss rule (combiner.near_misses: test_reading.py::test_seed_trap_with_the_real_reader), not "
    "by this model (retrained with generated news in issue 21 it widens the gap: 0.86 vs -0.44); strict, so a reader "
    "that gets it right alone fails here until the mark is removed",
)
def test_real_reader_finds_the_almaty_sentence(reader: Reader) -> None:
    text = SEED.read_text(encoding="utf-8")
    ranked = reader.rank(ALMATY_QUESTION, [text])
    assert len(ranked) == len(candidate_sentences(text))
    _, start, end, _ = ranked[0]
    assert "novembre 1994" in text[start:end]


@pytest.mark.slow
def test_real_reader_puts_the_two_office_openings_far_above_the_rest(reader: Reader) -> None:
    """The two dated « bureau » sentences first (Almaty and Brussels), well clear of every other sentence."""
    text = SEED.read_text(encoding="utf-8")
    ranked = reader.rank(ALMATY_QUESTION, [text])
    top = [text[s:e] for _, s, e, _ in ranked[:2]]
    assert any("novembre 1994" in t for t in top) and any("Bruxelles" in t for t in top)
    assert ranked[1][3] - ranked[2][3] > 1.0


@pytest.mark.slow
def test_scoring_does_not_import_torch(reader: Reader) -> None:
    code = (
        "import sys; from pathlib import Path; from qa.answering.reading import Reader; "
        f"r = Reader(Path({str(MODEL_CACHE)!r})); s = r.score('Qui ?', ['Jean Martin est président.', 'Il pleut.']); "
        "assert s.shape == (2,), s; assert 'torch' not in sys.modules, 'torch imported'"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(qa.__file__).resolve().parents[1])}
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300, env=env)


def test_hard_negatives_are_what_retrieval_ranks_first_without_the_answer_nor_a_dev_article(tmp_path: Path) -> None:
    from qa import KnowledgeBase
    from qa.documents import Article
    from qa.training.retrieval import cached_hard_negatives, doc_id, mine_hard_negatives
    from qa.training.trainer import with_hard

    from helpers import FakeEmbedder

    dataset = load_examples([squad_file(tmp_path)])
    train, dev = split_examples(dataset, 0.25, 13)
    kb = KnowledgeBase.open(tmp_path / "index", embedder=FakeEmbedder())
    kb.add_articles([Article(id=p.key.replace(":", "-"), text=p.text, title=p.title) for p in dataset.paragraphs])
    dev_titles = {e.title for e in dev}
    banned = {p.key.replace(":", "-") for p in dataset.paragraphs if p.title in dev_titles}
    dev_sentences = {s for p in dataset.paragraphs if p.title in dev_titles for s in p.sentence_texts()}
    mined = mine_hard_negatives(kb, train[:6], k=3, candidates=4, banned=banned, desc="test")
    assert set(mined) == {e.id for e in train[:6]}
    for example in train[:6]:
        negatives = mined[example.id]
        assert negatives and len(negatives) == len(set(negatives))
        assert not any(quote_contains_answer([s], example.answers) for s in negatives)
        assert not set(negatives) & (dev_sentences - set(example.paragraph.sentence_texts()))
        assert doc_id(example) not in banned
    # cached: the second call does not mine
    path = tmp_path / "hard.json"
    assert cached_hard_negatives(path, lambda: mined) == mined
    assert cached_hard_negatives(path, lambda: pytest.fail("mined again")) == mined
    # added to a training list as negatives, never twice
    item = (["la bonne phrase", negatives[0]], [1.0, 0.0])
    sentences, labels = with_hard(item, negatives, 3, random.Random(0))
    assert sentences[:2] == item[0] and len(sentences) == len(set(sentences)) == min(2 + 3, 1 + len(negatives))
    assert labels == [1.0] + [0.0] * (len(sentences) - 1)
    assert with_hard(item, negatives, 0, random.Random(0)) == item


@pytest.mark.slow
def test_the_reader_and_the_span_model_hold_only_their_own_layers_and_match_torch(reader: Reader) -> None:
    """They run e5's lower layers in the embedder's own sessions (one copy of each e5 matrix per process) and
    their graphs hold only the layers they changed; the result is the fine-tuned model's, as torch computes it."""
    import numpy as np
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModel

    from qa.answering.reading import SPAN, SpanReader
    from qa.answering.reading.finetuned import PASSAGE_PREFIX, QUERY_PREFIX
    from qa.embeddings.onnx import OnnxEmbedder

    embedder = OnnxEmbedder("multilingual-e5-small", MODEL_CACHE).load()
    spans = SpanReader(MODEL_CACHE).load()
    first, stack = reader._below  # noqa: SLF001
    assert first == 6 and stack is embedder._stack  # noqa: SLF001
    assert spans._below == (8, stack)  # noqa: SLF001
    layer = 384 * 384 * 4 + 384 * 1536 * 2  # one e5-small layer's matrices, in floats
    reader_data = (READER.folder_for(reader.manifest, MODEL_CACHE) / "model.onnx.data").stat().st_size
    span_data = (SPAN.folder_for(spans.manifest, MODEL_CACHE) / "model.onnx.data").stat().st_size
    assert 6 * layer * 4 <= reader_data < 7 * layer * 4  # its 6 layers, fp32: no e5 layer, no word table
    assert 4 * layer * 4 <= span_data < 5 * layer * 4

    texts = [QUERY_PREFIX + ALMATY_QUESTION, PASSAGE_PREFIX + "En novembre 1994, l'UE a ouvert un bureau à Almaty."]
    bert = AutoModel.from_pretrained(str(MODEL_CACHE / "multilingual-e5-small"), dtype=torch.float32).eval()
    weights = READER.weights(reader.artifact, READER.load_manifest(reader.artifact))
    READER.apply_weights(bert, torch.nn.Linear(1, 1), load_file(str(weights)))
    batch = reader._tokenizer.encode_batch(texts)  # noqa: SLF001
    ids = torch.tensor([e.ids for e in batch])
    mask = torch.tensor([e.attention_mask for e in batch])
    with torch.no_grad():
        hidden = bert(input_ids=ids, attention_mask=mask).last_hidden_state
        mean = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
        expected = torch.nn.functional.normalize(mean, dim=1).numpy()
    assert np.abs(reader._embed(texts) - expected).max() < 1e-4  # noqa: SLF001
