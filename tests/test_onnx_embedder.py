"""The ONNX Runtime embedding backends (``QA_EMBEDDING_BACKEND``): settings, model ids, index safety,
and (slow) the vectors against sentence-transformers'."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from qa import IndexMismatchError, KnowledgeBase
from qa.config import load_settings
from qa.embeddings import SerialEmbedder, auto_backend, make_embedder
from qa.embeddings.onnx import OnnxEmbedder, onnx_folder_for, open_session
from qa.embeddings.onnx_build import _check_supported
from qa.embeddings.torch import SentenceTransformerEmbedder
from qa.errors import ConfigError, ModelError

from helpers import MODEL_CACHE, SEED, FakeEmbedder

FRENCH = [
    "En novembre 1994, la délégation de l’UE au Kazakhstan a commencé ses travaux à Almaty.",
    "Le procureur général a ouvert une enquête sur les violences de janvier.",
    "Quand le bureau de l'UE a-t-il ouvert à Almaty ?",
    "La Commission européenne propose un nouveau partenariat renforcé.",
    "Les élections législatives se sont déroulées dans le calme, selon les observateurs.",
    "Il pleuvait sur Nantes.",
]


def test_the_default_backend_is_auto_and_a_bad_one_names_the_variable(monkeypatch):
    assert load_settings().embedding_backend == "auto"
    monkeypatch.setenv("QA_EMBEDDING_BACKEND", "onnx")
    assert load_settings().embedding_backend == "onnx"
    monkeypatch.setenv("QA_EMBEDDING_BACKEND", "tensorrt")
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert str(err.value) == "embedding_backend='tensorrt': set QA_EMBEDDING_BACKEND to one of auto, torch, onnx, onnx-int8"


def test_make_embedder_picks_the_backend_and_loads_nothing(tmp_path):
    cache = tmp_path / "never-built"
    for backend, model_id in [
        ("onnx-int8", "intfloat/multilingual-e5-small@onnx-int8"),
        ("onnx", "intfloat/multilingual-e5-small"),  # fp32 ONNX gives sentence-transformers' vectors
        ("torch", "intfloat/multilingual-e5-small"),
        ("auto", "intfloat/multilingual-e5-small"),
    ]:
        embedder = make_embedder("multilingual-e5-small", cache, backend=backend)
        assert isinstance(embedder, SerialEmbedder) and embedder.model_id == model_id
        assert isinstance(embedder._inner, OnnxEmbedder) == (backend != "torch")
    # auto runs any other model with torch (ONNX supports mean-pooled BERT/XLM-R only)
    other = make_embedder(str(tmp_path), cache)
    assert isinstance(other._inner, SentenceTransformerEmbedder) and auto_backend(str(tmp_path)) == "torch"
    assert auto_backend(" e5-small ") == "onnx"
    assert not cache.exists()


def test_onnx_builds_live_next_to_the_model_in_the_cache(tmp_path):
    cache = tmp_path / "models"
    assert onnx_folder_for(cache / "multilingual-e5-small", cache, "onnx-int8") == cache / "multilingual-e5-small.onnx-int8"
    elsewhere = onnx_folder_for(tmp_path / "mine" / "model", cache, "onnx")
    assert elsewhere.parent == cache and elsewhere.name.startswith("model-") and elsewhere.name.endswith(".onnx")


def test_a_model_the_onnx_export_does_not_support_says_to_use_torch(tmp_path):
    folder = tmp_path / "cls-model"
    (folder / "1_Pooling").mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "bert"}))
    (folder / "modules.json").write_text(
        json.dumps([{"path": "", "type": "x.Transformer"}, {"path": "1_Pooling", "type": "x.Pooling"}])
    )
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode": "cls"}))
    with pytest.raises(ModelError, match="QA_EMBEDDING_BACKEND=torch"):
        _check_supported(folder)
    with pytest.raises(ModelError, match="QA_EMBEDDING_BACKEND=torch"):
        OnnxEmbedder(str(folder), tmp_path / "cache", backend="onnx").load()


def test_an_index_built_by_another_backend_says_which_backend_to_set(tmp_path):
    torch_built = type("TorchE5", (FakeEmbedder,), {"model_id": "intfloat/multilingual-e5-small"})()
    int8 = type("Int8E5", (FakeEmbedder,), {"model_id": "intfloat/multilingual-e5-small@onnx-int8"})()
    kb = KnowledgeBase.open(tmp_path / "index", embedder=torch_built)
    kb.ingest([SEED])
    kb.close()
    with pytest.raises(IndexMismatchError, match="set QA_EMBEDDING_BACKEND=torch, or use another QA_INDEX_DIR"):
        KnowledgeBase.open(tmp_path / "index", embedder=int8)
    kb = KnowledgeBase.open(tmp_path / "int8", embedder=int8)
    kb.ingest([SEED])
    kb.close()
    with pytest.raises(IndexMismatchError, match="set QA_EMBEDDING_BACKEND=onnx-int8, or"):
        KnowledgeBase.open(tmp_path / "int8", embedder=torch_built)


# -- the real model ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def onnx_embedders():
    return {b: OnnxEmbedder("multilingual-e5-small", MODEL_CACHE, backend=b).load() for b in ("onnx", "onnx-int8")}


@pytest.mark.slow
def test_onnx_fp32_gives_sentence_transformers_vectors(real_embedder, onnx_embedders):
    onnx = onnx_embedders["onnx"]
    texts = [*FRENCH, "court", " ".join(FRENCH * 20)]  # one past 512 tokens: truncated alike
    cos = np.sum(onnx.embed_documents(texts) * real_embedder.embed_documents(texts), axis=1)
    assert cos.min() > 1 - 1e-4, cos
    for question in FRENCH[2:4]:
        assert onnx.embed_query(question) @ real_embedder.embed_query(question) > 1 - 1e-4
    assert onnx.count_tokens(texts) == real_embedder.count_tokens(texts)
    assert onnx.dimension == 384


@pytest.mark.slow
def test_onnx_int8_vectors_stay_close_to_fp32(real_embedder, onnx_embedders):
    int8 = onnx_embedders["onnx-int8"]
    cos = np.sum(int8.embed_documents(FRENCH) * real_embedder.embed_documents(FRENCH), axis=1)
    assert cos.min() >= 0.95, cos
    assert int8.embed_query(FRENCH[2]) @ real_embedder.embed_query(FRENCH[2]) >= 0.95
    # concurrent questions share one call; int8 activations are scaled per batch, so a text's
    # vector depends a little on its batch-mates (fp32: not at all)
    batched = SerialEmbedder(int8)._encode_queries(FRENCH[:3])
    alone = [int8.embed_query(q) for q in FRENCH[:3]]
    assert min(float(a @ b) for a, b in zip(batched, alone, strict=True)) >= 0.99


@pytest.mark.slow
@pytest.mark.parametrize(
    ("backend", "model_id"),
    [("onnx", "intfloat/multilingual-e5-small"), ("onnx-int8", "intfloat/multilingual-e5-small@onnx-int8")],
)
def test_the_onnx_backends_answer_the_almaty_question(tmp_path, monkeypatch, backend, model_id):
    monkeypatch.setenv("QA_EMBEDDING_BACKEND", backend)  # as a user sets it; built into the model cache
    with KnowledgeBase.open(tmp_path / "index") as kb:
        assert kb.embedder.model_id == model_id
        kb.ingest([SEED])
        answer = kb.ask("Quand le bureau de l'UE a-t-il ouvert à Almaty ?")
        assert "novembre 1994" in answer.text and not answer.abstained
        assert kb.stats()["model"] == model_id


def _table_model(path: Path, table: np.ndarray) -> Path:
    """A one-op ONNX model (ids -> rows of the e5-named word table) with its weights as external data."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    name = "bert.embeddings.word_embeddings.weight"
    graph = helper.make_graph(
        [helper.make_node("Gather", [name, "ids"], ["rows"])],
        "table",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, [None])],
        [helper.make_tensor_value_info("rows", TensorProto.FLOAT, [None, table.shape[1]])],
        [numpy_helper.from_array(table, name)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(model, str(path), save_as_external_data=True, location="model.onnx.data", size_threshold=0)
    return path


def test_models_on_one_base_share_e5s_word_table(tmp_path: Path) -> None:
    from qa.embeddings.onnx import LAYOUT_FILE, shared_weights

    table = np.arange(200 * 4, dtype=np.float32).reshape(200, 4)
    first = _table_model(tmp_path / "embedder" / "model.onnx", table)
    second = _table_model(tmp_path / "reader" / "model.onnx", table.copy())
    other = table.copy()
    other[199] = -1.0  # another table under the same name: not shared
    third = _table_model(tmp_path / "other" / "model.onnx", other)
    base = tmp_path / "e5"
    a, b, c = shared_weights(first, base), shared_weights(second, base), shared_weights(third, base)
    assert set(a) == {"bert.embeddings.word_embeddings.weight"} and a == b and not c
    ids = np.array([0, 199], dtype=np.int64)
    for path, expected in ((first, table), (second, table), (third, other)):  # every session reads its own values
        rows = open_session(path, base=base).run(None, {"ids": ids})[0]
        assert np.array_equal(rows, expected[ids])
    own = shared_weights(first, tmp_path / "another-base")  # another base maps its own
    assert own["bert.embeddings.word_embeddings.weight"] is not a["bert.embeddings.word_embeddings.weight"]
    # the layout is kept beside the model: opening it again (a cold start) does not import onnx
    assert (first.parent / LAYOUT_FILE).is_file()
    code = (
        "import sys; from pathlib import Path; from qa.embeddings.onnx import open_session; "
        f"open_session(Path({str(first)!r}), base=Path({str(base)!r})); assert 'onnx' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_sessions_share_one_cpu_arena(tmp_path):
    """Every session the process opens allocates from one registered CPU arena, not an arena of its own each."""
    table = np.arange(300 * 4, dtype=np.float32).reshape(300, 4)
    path = _table_model(tmp_path / "embedder" / "model.onnx", table)
    session = open_session(path)
    assert session.get_session_options().get_session_config_entry("session.use_env_allocators") == "1"
    ids = np.array([3, 299], dtype=np.int64)
    assert np.array_equal(session.run(None, {"ids": ids})[0], table[ids])


def test_the_first_model_on_a_base_maps_its_word_table_without_reading_it(tmp_path, monkeypatch):
    """Only a second model's table is compared with the first's (64 rows); the first is taken as it is. Reading rows
    to compare the first map with itself made the kernel read around each of them: 126 MB of a cold start's peak."""
    import qa.embeddings.onnx as onnx_runtime

    compared = []
    real_same = onnx_runtime._same
    monkeypatch.setattr(onnx_runtime, "_same", lambda a, b: compared.append(1) or real_same(a, b))
    table = np.arange(100 * 4, dtype=np.float32).reshape(100, 4)
    first = _table_model(tmp_path / "embedder" / "model.onnx", table)
    second = _table_model(tmp_path / "reader" / "model.onnx", table.copy())
    base = tmp_path / "e5-first-only"
    onnx_runtime.shared_weights(first, base)
    assert compared == []
    onnx_runtime.shared_weights(second, base)
    assert compared == [1]
