"""The embedding model run by ONNX Runtime: the same vectors as sentence-transformers, cheaper per question.

On first use the sentence-transformers folder (e.g. the offline multilingual-e5-small) is
exported once to ONNX, next to it in the model cache: the BERT encoder cut into layer segments
(:class:`Stack`, one session each, shared with the reader and the span model, which run e5's
lower layers there), mean pooling and L2 normalisation inside the last graph, dynamic batch
and sequence axes, ONNX Runtime's BERT fusions (attention, embedding/skip layer norms, GELU).
Two variants:

* ``onnx``: fp32, the same vectors as sentence-transformers (cosine 1.0 within 1e-6), and the
  same index model id; a short question costs ~3x less CPU than through sentence-transformers
  (per-call overhead), long passages cost the same;
* ``onnx-int8``: int8 weights (dynamic quantisation, uint8 per channel). Its vectors differ
  slightly (cosine ~0.997 to fp32, min 0.995 on PIAF paragraphs) and depend a little on their
  batch-mates (activations are scaled per batch), so an index records it as a model of its own
  (``intfloat/multilingual-e5-small@onnx-int8``) and refuses to mix the two. On AVX2 without
  VNNI it costs the same CPU per token as fp32: an opt-in for machines with VNNI.

Building needs ``torch``, ``transformers`` and ``onnx``; running needs only ``onnxruntime``
and ``tokenizers`` (no torch import on the query path).
"""

from __future__ import annotations

import json
import logging
import mmap
import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from qa.embeddings.base import QueryCache, model_id_for, resolve_model_folder, shared_tokenizer
from qa.embeddings.onnx_build import (
    MODEL_FILE,
    ONNX_BACKENDS,
    build_onnx_model,
    built_segments,
    input_name,
    onnx_folder_for,
    onnx_model_id,
)
from qa.errors import ModelError

logger = logging.getLogger(__name__)

__all__ = [
    "MODEL_FILE",
    "ONNX_BACKENDS",
    "OnnxEmbedder",
    "Stack",
    "build_onnx_model",
    "onnx_folder_for",
    "onnx_model_id",
    "open_session",
    "run_above",
    "shared_stack",
]


SHARED_WEIGHTS = ("bert.embeddings.word_embeddings.weight",)
"""e5's tensors that every model built on it (the embedder, the reader, the span model) holds unchanged — never
trained — and that one process maps once for all its sessions (the word table: 250,002 x 384 floats, 384 MB)."""
_SHARED: dict[tuple[str, str], tuple[Any, Any]] = {}
_SHARED_LOCK = threading.Lock()


LAYOUT_FILE = "shared_layout.json"
"""Beside a model: where its :data:`SHARED_WEIGHTS` lie in its external data file, so that opening it again needs no
``onnx`` import (0.5 s of a cold start). For a graph other than ``model.onnx`` (a layer segment):
``<graph>.shared_layout.json``."""


def _layout(path: Path) -> dict[str, dict[str, Any]]:
    """``{name: {"location", "offset", "shape"}}`` of the :data:`SHARED_WEIGHTS` of ``path`` stored as fp32 external
    data: read from :data:`LAYOUT_FILE` when it describes this very graph file, else parsed (``onnx``) and saved."""
    stamp = {"graph_bytes": path.stat().st_size, "graph_mtime_ns": path.stat().st_mtime_ns}
    saved = path.parent / (LAYOUT_FILE if path.name == MODEL_FILE else f"{path.name}.{LAYOUT_FILE}")
    try:
        layout = json.loads(saved.read_text())
        if layout.get("stamp") == stamp:
            return dict(layout["tensors"])
    except (OSError, ValueError, KeyError):
        pass
    import onnx

    tensors: dict[str, dict[str, Any]] = {}
    for tensor in onnx.load(str(path), load_external_data=False).graph.initializer:
        info = {e.key: e.value for e in tensor.external_data}
        if tensor.name in SHARED_WEIGHTS and tensor.data_type == onnx.TensorProto.FLOAT and "location" in info:
            offset = int(info.get("offset", 0))
            tensors[tensor.name] = {"location": info["location"], "offset": offset, "shape": list(tensor.dims)}
    try:  # best effort: a read-only cache parses again next time
        tmp = saved.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"stamp": stamp, "tensors": tensors}))
        os.replace(tmp, saved)
    except OSError:
        pass
    return tensors


def _external_tensors(path: Path) -> dict[str, np.ndarray]:
    """The :data:`SHARED_WEIGHTS` of ``path`` that live in its external data file, memory-mapped (nothing read).

    The maps are advised ``MADV_RANDOM``: a question reads a few rows of the word table, and the kernel's read-around
    on each first touch of a page otherwise pulls in a window of the file (checking 64 rows of one table made 126 MB
    of it resident, a quarter of a cold ``qa ask``'s peak memory)."""
    out: dict[str, np.ndarray] = {}
    for name, t in _layout(path).items():
        array = np.memmap(path.parent / t["location"], dtype=np.float32, mode="r", offset=t["offset"], shape=tuple(t["shape"]))
        raw = getattr(array, "_mmap", None)
        if raw is not None and hasattr(mmap, "MADV_RANDOM"):
            raw.madvise(mmap.MADV_RANDOM)
        out[name] = array
    return out


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    """The same tensor, by shape and 64 rows spread over it (a few pages read, not the whole table)."""
    if a.shape != b.shape:
        return False
    rows = np.linspace(0, a.shape[0] - 1, num=min(64, a.shape[0])).astype(int)
    return bool(np.array_equal(a[rows], b[rows]))


def shared_weights(path: Path, base: Path) -> dict[str, Any]:
    """For a model built on the base model folder ``base``: ``{name: OrtValue}`` of its :data:`SHARED_WEIGHTS`, one
    memory map per process and base (the first model opened provides it; a later model's copy is used only if it
    is the same tensor). ONNX Runtime then reads the process's one table instead of mapping each model's copy: the
    reader and the span model cost their own layers, not another word table each (measured: −374 MB of resident
    pages after 100 questions at 100k chunks)."""
    import onnxruntime as ort

    mine = _external_tensors(path)
    out: dict[str, Any] = {}
    with _SHARED_LOCK:
        for name, array in mine.items():
            key = (str(Path(base).resolve()), name)
            if key not in _SHARED:
                _SHARED[key] = (array, ort.OrtValue.ortvalue_from_numpy(array))
            held, value = _SHARED[key]
            if held is array or _same(held, array):
                out[name] = value
            else:
                logger.warning("%s: %s differs from the one of %s's other models: not shared", path, name, base)
    return out


_ARENA: list[bool] = []
"""Whether the process's one CPU arena is registered with ONNX Runtime (:func:`_shared_arena`)."""


def _shared_arena(ort: Any) -> bool:
    """Register one CPU arena for every session of the process (``session.use_env_allocators``), once. Each session
    otherwise grows an arena of its own to its largest batch and keeps it: with the embedder's three segments, the
    reader and the span model, one shared arena holds 48 MB less after reading 200 sentences
    (``benchmarks/reader_memory.py``: the two models add +174 MB instead of +222). False if ONNX Runtime refuses."""
    with _SHARED_LOCK:
        if not _ARENA:
            try:
                info = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
                ort.create_and_register_allocator(info, ort.OrtArenaCfg(0, -1, -1, -1))
                _ARENA.append(True)
            except Exception as exc:  # onnxruntime raises its own exception types
                logger.warning("ONNX Runtime refused a shared CPU arena (%s): one arena per session", exc)
                _ARENA.append(False)
        return _ARENA[0]


def open_session(path: Path, base: Path | None = None) -> Any:
    """An ONNX Runtime CPU session on ``path``, full graph optimisations, ``OMP_NUM_THREADS`` threads that
    sleep when idle, the process's one CPU arena (:func:`_shared_arena`); with ``base`` (the model folder it was
    built on), e5's unchanged tensors shared with the process's other models on that base (:func:`shared_weights`).
    A :class:`~qa.errors.ModelError` naming the folder to delete if the file is broken."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # idle workers sleep instead of spinning: on 2 shared cores spinning doubled a question's
    # latency (48 vs 25 ms) and steals CPU from BM25 and Chroma running beside it
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if _shared_arena(ort):
        options.add_session_config_entry("session.use_env_allocators", "1")
    threads = os.environ.get("OMP_NUM_THREADS", "")
    if threads.isdigit():
        options.intra_op_num_threads = int(threads)
    try:
        for name, value in (shared_weights(path, base) if base is not None else {}).items():
            options.add_initializer(name, value)
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types
        raise ModelError(f"cannot load {path} ({exc}): delete {path.parent} to rebuild it") from None


class Stack:
    """The encoder's layers as ONNX Runtime sessions, one per segment (:func:`qa.embeddings.onnx_build.segments`):
    the embedder runs them all; a model fine-tuned from the encoder runs those below its own layers
    (:meth:`hidden`) and then its own graph, so one process holds each of e5's matrices once (and ONNX Runtime's
    pre-packed copy of it once). Thread-safe (ONNX Runtime sessions are)."""

    def __init__(self, path: Path, base: Path | None) -> None:
        self.path = path
        # only the first segment holds the embeddings, the one tensor shared with models opened apart
        self.parts = [(a, b, open_session(file, base=base if a == 0 else None)) for a, b, file in built_segments(path)]
        self.layers = self.parts[-1][1]

    @property
    def dimension(self) -> int:
        return int(self.parts[-1][2].get_outputs()[0].shape[-1])

    def _run(self, ids: np.ndarray, mask: np.ndarray, end: int) -> np.ndarray:
        x: np.ndarray = ids
        for first, last, session in self.parts:
            x = session.run(None, {input_name(first): x, "attention_mask": mask})[0]
            if last == end:
                return x
        raise ValueError(f"{self.path}: layer {end} is not a segment boundary of {[p[:2] for p in self.parts]}")

    def hidden(self, ids: np.ndarray, mask: np.ndarray, end: int) -> np.ndarray:
        """The hidden states entering layer ``end`` (a segment boundary below the top) for the token ids."""
        if end >= self.layers:
            raise ValueError(f"{self.path}: layer {end} is not below the top ({self.layers} layers)")
        return self._run(ids, mask, end)

    def embed(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """The sentence embeddings (the last segment pools and normalises)."""
        return self._run(ids, mask, self.layers)


def run_above(session: Any, first: int, stack: Stack | None, ids: np.ndarray, mask: np.ndarray) -> list[Any]:
    """The outputs of a model's own graph that starts at layer ``first`` (built by
    :func:`qa.embeddings.onnx_build.export_layers`): on the token ids when it starts at the embeddings, else on the
    hidden states ``stack`` (the process's shared encoder) computes below it."""
    x = ids if stack is None else stack.hidden(ids, mask, first)
    return list(session.run(None, {input_name(first): x, "attention_mask": mask}))


_STACKS: dict[str, Stack] = {}
_STACKS_LOCK = threading.Lock()


def shared_stack(path: Path, base: Path | None = None) -> Stack:
    """The process's one :class:`Stack` for the built model ``path`` (:func:`build_onnx_model`'s result)."""
    key = str(Path(path).resolve())
    with _STACKS_LOCK:
        if key not in _STACKS:
            _STACKS[key] = Stack(Path(path), base)
        return _STACKS[key]


class OnnxEmbedder:
    """A mean-pooled sentence-transformers model run by ONNX Runtime, loaded on first use.

    Same interface and same prompts as :class:`qa.embeddings.torch.SentenceTransformerEmbedder`.
    """

    def __init__(self, name: str, cache_dir: Path, *, backend: str = "onnx", batch_size: int = 32, progress: Any = None) -> None:

        if backend not in ONNX_BACKENDS:
            raise ValueError(f"backend must be one of {ONNX_BACKENDS}, not {backend!r}")
        self.name = name
        self.backend = backend
        self.model_id = onnx_model_id(model_id_for(name), backend)
        self.cache_dir = Path(cache_dir)
        self.batch_size = batch_size
        self.progress = progress
        self._stack: Any = None
        self._counter: Any = None
        self._lock = threading.Lock()
        self._queries = QueryCache()

    # -- loading -----------------------------------------------------------------
    def load(self) -> OnnxEmbedder:
        """Load now (e.g. to warm a server); builds the ONNX file on first use."""
        if self._stack is None:
            with self._lock:
                if self._stack is None:
                    self._load()
        return self

    def _load(self) -> None:

        folder = resolve_model_folder(self.name, self.cache_dir, self.progress)
        path = build_onnx_model(folder, self.cache_dir, self.backend, self.progress)
        if self.progress:
            self.progress(f"loading embedding model {self.model_id}")
        try:
            st_config = json.loads((folder / "config_sentence_transformers.json").read_text())
            bert_config = json.loads((folder / "sentence_bert_config.json").read_text())
        except (OSError, ValueError) as exc:
            raise ModelError(f"cannot load the tokenizer of {folder} ({exc}): delete the folder to rebuild it") from None
        max_length = int(bert_config.get("max_seq_length") or 512)
        # the sessions open on a thread while the tokenizer loads here: ONNX Runtime releases the GIL while it builds
        # them (0.13 s), `tokenizers` holds it for its whole load (0.66 s for XLM-R's 250k pieces)
        with ThreadPoolExecutor(1, thread_name_prefix="qa-onnx-open") as pool:
            opening = pool.submit(shared_stack, path, folder)
            tokenizer = shared_tokenizer(folder, max_length)  # one per process: the reader and span model share it
            stack = opening.result()
        self._prompts = {k: str(v) for k, v in (st_config.get("prompts") or {}).items()}
        self._tokenizer, self._folder = tokenizer, folder
        self._dimension = stack.dimension
        self._stack = stack
        logger.info("loaded %s (dim %s) from %s", self.model_id, self._dimension, path)

    # -- encoding ------------------------------------------------------------------
    @property
    def dimension(self) -> int:
        self.load()
        return self._dimension

    def _encode(self, texts: Sequence[str], prompt: str) -> np.ndarray:
        self.load()
        prefix = self._prompts.get(prompt, "")
        texts = [prefix + t for t in texts]
        out = np.zeros((len(texts), self._dimension), dtype=np.float32)
        order = np.argsort([-len(t) for t in texts], kind="stable")  # like sentence-transformers: less padding
        for i in range(0, len(texts), self.batch_size):
            idx = order[i : i + self.batch_size]
            encoded = self._tokenizer.encode_batch([texts[j] for j in idx])
            ids = np.array([e.ids for e in encoded], dtype=np.int64)
            mask = np.array([e.attention_mask for e in encoded], dtype=np.int64)
            out[idx] = self._stack.embed(ids, mask)
        return out

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        self.load()
        if not texts:
            return np.zeros((0, self._dimension), dtype=np.float32)
        return self._encode(list(texts), "passage")

    def embed_queries(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Several questions in one call (what :class:`qa.embeddings.SerialEmbedder` batches)."""
        return list(self._encode(list(texts), "query"))

    def embed_query(self, text: str) -> np.ndarray:
        cached = self._queries.get(text)
        if cached is not None:
            return cached
        return self._queries.put(text, self._encode([text], "query")[0])

    def _token_counter(self) -> Any:
        """A view of the same tokenizer without truncation or padding, for counting (an ingest's chunking): no
        second copy of the XLM-R vocabulary (~290 MB and ~1-3 s per loaded tokenizer)."""
        if self._counter is None:
            with self._lock:
                if self._counter is None:
                    self._counter = shared_tokenizer(self._folder, None, padding=False)
        return self._counter

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        if not texts:
            return []
        self.load()
        return [len(e.ids) for e in self._token_counter().encode_batch(list(texts), add_special_tokens=False)]
