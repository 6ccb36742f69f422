"""The sentence-transformers (torch) runtime: any sentence-transformers model.

e5 models want ``query: `` before questions and ``passage: `` before chunks;
the folder's ``prompts`` carry them and :class:`SentenceTransformerEmbedder`
uses them whenever the model declares them.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from qa.embeddings.base import Progress, QueryCache, model_id_for, resolve_model_folder
from qa.errors import ModelError
from qa.imports import import_torch

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

logger = logging.getLogger(__name__)


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
        self._queries = QueryCache()

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
        torch = import_torch()  # (never while spaCy's import hides it: qa.imports)
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

    def embed_query(self, text: str) -> np.ndarray:
        cached = self._queries.get(text)
        if cached is not None:
            return cached
        vector = self.model.encode(
            [text], normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False, **self._prompt("query")
        )
        return self._queries.put(text, np.asarray(vector[0], dtype=np.float32))

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        if not texts:
            return []
        encoded = self.model.tokenizer(list(texts), add_special_tokens=False, truncation=False)
        return [len(ids) for ids in encoded["input_ids"]]
