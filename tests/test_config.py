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


def test_the_reader_settings(tmp_path, monkeypatch):
    """``QA_READER`` (on/off, also 1/0, yes/no, true/false) and ``QA_READER_ARTIFACT`` are settings like the others;
    the knowledge base hands them to its answerer."""
    from qa import Article, KnowledgeBase
    from qa.answering.reading import ReadingAnswerer
    from qa.errors import ModelError

    from helpers import FakeEmbedder

    for value, expected in (("on", "on"), ("1", "on"), ("YES", "on"), ("off", "off"), ("false", "off")):
        monkeypatch.setenv("QA_READER", value)
        assert load_settings().reader == expected
    monkeypatch.setenv("QA_READER", "maybe")
    with pytest.raises(ConfigError, match="QA_READER"):
        load_settings()
    monkeypatch.setenv("QA_READER", "on")
    monkeypatch.setenv("QA_READER_ARTIFACT", str(tmp_path / "no-models"))
    settings = load_settings()
    assert settings.reader_artifact == tmp_path / "no-models"
    kb = KnowledgeBase.open(settings=settings, embedder=FakeEmbedder())
    try:
        answerer = kb.answerer()
        assert isinstance(answerer, ReadingAnswerer) and answerer.artifact == tmp_path / "no-models"
        kb.add_articles([Article(id="a", text="Le pont de Lyon a coûté 12 millions d'euros en 2020.")])
        with pytest.raises(ModelError, match="no-models"):
            kb.ask("Combien a coûté le pont de Lyon ?")
    finally:
        kb.close()
    monkeypatch.setenv("QA_READER", "off")
    kb = KnowledgeBase.open(settings=load_settings(), embedder=FakeEmbedder())
    try:
        assert not isinstance(kb.answerer(), ReadingAnswerer)
    finally:
        kb.close()
