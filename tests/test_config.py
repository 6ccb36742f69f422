from pathlib import Path

import pytest

from qa.config import Settings, load_settings
from qa.errors import ConfigError


def test_defaults():
    s = load_settings()
    assert s.embedding_model == "multilingual-e5-small" and s.answerer == "extractive"
    assert s.corpus_dir == Path("corpus") and s.chroma_url is None


def test_env_over_toml_over_defaults_and_overrides_over_all(tmp_path, monkeypatch):
    (tmp_path / "qa.toml").write_text('[qa]\nchunk_tokens = 120\nanswerer = "ollama:llama3"\ncorpus_dir = "articles"\n')
    s = load_settings()
    assert (s.chunk_tokens, s.answerer, s.corpus_dir) == (120, "ollama:llama3", Path("articles"))
    monkeypatch.setenv("QA_CHUNK_TOKENS", "150")
    assert load_settings().chunk_tokens == 150
    assert load_settings(chunk_tokens=180).chunk_tokens == 180
    assert load_settings(index_dir=None).index_dir == Path(str(tmp_path / "index"))  # None means "not given"


def test_bad_values_name_the_setting(monkeypatch):
    monkeypatch.setenv("QA_CHUNK_TOKENS", "lots")
    with pytest.raises(ConfigError, match="QA_CHUNK_TOKENS"):
        load_settings()
    with pytest.raises(ConfigError, match="QA_CHUNK_OVERLAP"):
        Settings(chunk_tokens=100, chunk_overlap=90)
    with pytest.raises(ConfigError, match="QA_COLLECTION"):
        Settings(collection="x")
    with pytest.raises(ConfigError, match="set QA_FUSION to one of score, rrf"):
        Settings(fusion="max")


def test_bad_toml_and_missing_config_file(tmp_path, monkeypatch):
    (tmp_path / "qa.toml").write_text("chunk_tokens = = 3")
    with pytest.raises(ConfigError, match="qa.toml: invalid TOML"):
        load_settings()
    monkeypatch.setenv("QA_CONFIG", str(tmp_path / "missing.toml"))
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings()
    (tmp_path / "qa.toml").write_text("colour = 3")
    monkeypatch.delenv("QA_CONFIG")
    with pytest.raises(ConfigError, match="unknown setting 'colour'"):
        load_settings()
