import pytest

from qa.embeddings import model_id_for
from qa.embeddings.torch import SentenceTransformerEmbedder
from qa.errors import ModelError


def test_model_ids_recorded_by_the_index(tmp_path):
    assert model_id_for("multilingual-e5-small") == "intfloat/multilingual-e5-small"
    assert model_id_for("intfloat/multilingual-e5-small") == "intfloat/multilingual-e5-small"
    assert model_id_for(str(tmp_path)) == str(tmp_path.resolve())
    assert model_id_for("org/other-model") == "org/other-model"


def test_a_hub_id_that_is_not_cached_fails_fast_naming_the_setting(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    embedder = SentenceTransformerEmbedder("sentence-transformers/not-in-cache", tmp_path)
    with pytest.raises(ModelError, match="not-in-cache.*QA_EMBEDDING_MODEL.*multilingual-e5-small"):
        embedder.embed_query("bonjour")


def test_a_file_is_not_a_model_folder(tmp_path):
    path = tmp_path / "model.bin"
    path.write_bytes(b"x")
    with pytest.raises(ModelError, match="is a file, not a model folder"):
        SentenceTransformerEmbedder(str(path), tmp_path).load()


def test_constructing_an_embedder_loads_nothing(tmp_path):
    embedder = SentenceTransformerEmbedder("multilingual-e5-small", tmp_path / "never-built")
    assert embedder._model is None and not (tmp_path / "never-built").exists()
