"""The trained reader: scores (question, sentence) pairs (which sentence answers), run by ONNX Runtime.

The model is multilingual-e5-small with its top layers fine-tuned (see ``qa train-reader`` and
``models/reader/README.md``). Two kinds, named by the manifest: ``bi`` (the shipped one) embeds « query: question »
and « passage: sentence » apart, like e5, and scores ``w * cosine + b``; ``cross`` reads the pair together and a
linear head on the mean-pooled output gives the logit. The repository ships only what differs from e5-small
(``models/reader/reader.safetensors``, fp16) and a ``manifest.json`` that records its sha256, the training data,
parameters and dev-split scores. On first use the weights are put on top of the rebuilt e5 folder and the layers
they change (6-11, with the pooling) exported once to ONNX in the model cache (this build needs torch, like the
embedder's ONNX build); e5's own layers below run in the embedder's sessions (:func:`below`); scoring needs only
``onnxruntime``, ``tokenizers``, ``safetensors`` and numpy (no torch import).

At most :data:`MAX_TOKENS` tokens per sequence; one logit per sentence (higher = more likely to hold the answer;
``sigmoid(logit)`` is trained as a probability, the no-answer signal).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from qa.chunking import split_sentences
from qa.errors import ModelError

logger = logging.getLogger(__name__)

QUERY_PREFIX = "query: "
PASSAGE_PREFIX = "passage: "
MAX_TOKENS = 96
ARTIFACT_FORMAT = 1
WEIGHTS_FILE = "reader.safetensors"
MANIFEST_FILE = "manifest.json"
BUILD_FORMAT = 3  # bump whenever the export changes (2: weights as external data, memory-mapped; 3: own layers only)
MARKER = "qa_reader.json"
MODEL_FILE = "model.onnx"
SENTENCE_CACHE = 8192
"""Sentence vectors kept (bi-encoder; 1.5 KB each)."""
DEFAULT_ARTIFACT = Path(__file__).resolve().parents[3] / "models" / "reader"
"""``models/reader`` of a source checkout."""


def enabled() -> bool:
    """``QA_READER=on`` (or ``1``, ``true``, ``yes``) makes the reading answerer (:mod:`qa.answering.reading`) the
    default offline answerer; unset or ``off``, the lexical answerer stays the default. Off by default while the
    reading answerer misses the seed article's trap question (see ``models/reader/README.md``)."""
    return os.environ.get("QA_READER", "off").strip().lower() in ("on", "1", "true", "yes")


def candidate_sentences(text: str) -> list[tuple[int, int]]:
    """The sentences the reader chooses among: the project's own sentence splitter, with a trailing run of
    hashtags, mentions and links cut off, exactly as :class:`~qa.answering.extractive.ExtractiveAnswerer` does."""
    from qa.answering.text import trim_social_tail

    return [(s, trim_social_tail(text, s, e)) for s, e in split_sentences(text)]


def load_tokenizer(model_folder: Path) -> Any:
    """The e5 tokenizer (the process's shared one, :func:`qa.embeddings.base.shared_tokenizer`) truncating to
    :data:`MAX_TOKENS`, padded to the longest."""
    from qa.embeddings.base import shared_tokenizer

    return shared_tokenizer(model_folder, MAX_TOKENS)


def encode_pairs(tokenizer: Any, question: str, sentences: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """``input_ids`` and ``attention_mask`` (int64, padded to the longest pair) for one question and its sentences."""
    encoded = tokenizer.encode_batch([(QUERY_PREFIX + question, s) for s in sentences])
    ids = np.array([e.ids for e in encoded], dtype=np.int64)
    mask = np.array([e.attention_mask for e in encoded], dtype=np.int64)
    return ids, mask


_HASHES: dict[tuple[str, int, int], str] = {}


def sha256_file(path: Path) -> str:
    """The file's sha256, computed once per process for a given (path, size, modification time): loading the reader
    checks its weights against the manifest twice (the build's stamp, then the load), 21 MB each time."""
    st = Path(path).stat()
    key = (str(Path(path).resolve()), st.st_size, st.st_mtime_ns)
    if key not in _HASHES:
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        _HASHES[key] = digest.hexdigest()
    return _HASHES[key]


def load_manifest(artifact: Path = DEFAULT_ARTIFACT) -> dict[str, Any]:
    """The artifact's manifest, after checking that its weights file is the one it describes."""
    artifact = Path(artifact)
    try:
        manifest = json.loads((artifact / MANIFEST_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"no reader artifact in {artifact} ({exc}): run `qa train-reader` or set QA_READER=off") from None
    if manifest.get("format") != ARTIFACT_FORMAT:
        raise ModelError(f"{artifact / MANIFEST_FILE} has format {manifest.get('format')!r}, this qa reads {ARTIFACT_FORMAT}")
    weights = artifact / manifest.get("weights", WEIGHTS_FILE)
    if not weights.is_file():
        raise ModelError(f"the reader weights {weights} are missing: run `qa train-reader` or set QA_READER=off")
    actual = sha256_file(weights)
    if actual != manifest.get("weights_sha256"):
        raise ModelError(f"{weights} does not match its manifest (sha256 {actual[:12]}…): retrain or restore it")
    return manifest


# -- the ONNX build (torch, once) ------------------------------------------------------------------------------------
def reader_folder_for(manifest: dict[str, Any], cache_dir: Path) -> Path:
    return Path(cache_dir).expanduser().resolve() / f"reader-{manifest['weights_sha256'][:12]}.onnx"


def build_reader_model(artifact: Path, model_folder: Path, cache_dir: Path, progress: Any = None) -> Path:
    """The reader's ONNX file: the e5 folder with the artifact's weights on top, exported once (atomic)."""
    manifest = load_manifest(artifact)
    from qa.embeddings.onnx_build import build_fine_tuned, fine_tuned_stamp

    return build_fine_tuned(
        reader_folder_for(manifest, cache_dir),
        MARKER,
        fine_tuned_stamp(manifest["weights_sha256"], model_folder, BUILD_FORMAT),
        Path(model_folder),
        lambda out: _export(Path(artifact), manifest, Path(model_folder), out),
        f"reader model ({artifact})",
        progress,
    )


def _export(artifact: Path, manifest: dict[str, Any], model_folder: Path, out: Path) -> None:
    try:
        import onnx  # noqa: F401  (torch's exporter needs it)
        import torch
        import transformers
        from safetensors.torch import load_file
        from transformers import AutoModel
    except ImportError as exc:
        raise ModelError(f"building the reader model needs {exc.name}: pip install torch onnx, or set QA_READER=off") from None
    from qa.embeddings.onnx_build import export_layers, mean_pooled

    bi = manifest.get("kind") == "bi"
    transformers.utils.logging.disable_progress_bar()  # the build reports its own progress ("exporting")
    bert = AutoModel.from_pretrained(str(model_folder), dtype=torch.float32, attn_implementation="eager").eval()
    head = torch.nn.Linear(1 if bi else bert.config.hidden_size, 1)
    weights = load_file(str(artifact / manifest.get("weights", WEIGHTS_FILE)))
    apply_weights(bert, head, weights)
    layers = int(bert.config.num_hidden_layers)
    pool = mean_pooled(bi)

    def logits(hidden: Any, mask: Any) -> Any:  # cross-encoder: one logit per pair
        return head(pool(hidden, mask)).squeeze(-1)

    # bi-encoder: the normalised embedding (w * cosine + b runs in numpy)
    tail, output = (pool, "sentence_embedding") if bi else (logits, "logits")
    export_layers(bert, first_layer(artifact / manifest.get("weights", WEIGHTS_FILE), layers), layers, out, tail, [output], head)


def first_layer(weights: Path, layers: int) -> int:
    """The first layer of the own graph of a model fine-tuned from e5 whose tensors are the safetensors file
    ``weights`` (:func:`qa.embeddings.onnx_build.start_layer`): the layers below are e5's own, run by the
    embedder's sessions."""
    from safetensors import safe_open

    from qa.embeddings.onnx_build import start_layer

    with safe_open(str(weights), framework="numpy") as fh:
        return start_layer(list(fh.keys()), layers)


def apply_weights(bert: Any, head: Any, weights: dict[str, Any]) -> None:
    """Put the artifact's tensors (``bert.<name>`` and ``head.<name>``) on the model, in its dtype."""
    params = {f"bert.{k}": v for k, v in bert.state_dict().items()} | {f"head.{k}": v for k, v in head.state_dict().items()}
    unknown = sorted(set(weights) - set(params))
    if unknown:
        raise ModelError(f"the reader weights hold tensors the e5 model lacks: {unknown[:3]}")
    for name, tensor in weights.items():
        target = params[name]
        if tuple(target.shape) != tuple(tensor.shape):
            raise ModelError(f"the reader tensor {name} has shape {tuple(tensor.shape)}, the model {tuple(target.shape)}")
        target.copy_(tensor.to(target.dtype))


# -- scoring (ONNX Runtime) ------------------------------------------------------------------------------------------
class Reader:
    """Scores (question, sentence) pairs; loaded (and built, once) on first use. Thread-safe."""

    def __init__(
        self, cache_dir: Path, *, artifact: Path | None = None, model: str = "multilingual-e5-small", progress: Any = None
    ) -> None:
        self.cache_dir = Path(cache_dir)
        self.artifact = Path(artifact) if artifact else DEFAULT_ARTIFACT
        self.model = model
        self.progress = progress
        self.manifest: dict[str, Any] = {}
        self._session: Any = None
        self._lock = threading.Lock()
        self._vectors: OrderedDict[str, np.ndarray] = OrderedDict()

    def load(self) -> Reader:
        if self._session is None:
            with self._lock:
                if self._session is None:
                    self._load()
        return self

    def _load(self) -> None:
        from qa.embeddings import resolve_model_folder

        folder = resolve_model_folder(self.model, self.cache_dir, self.progress)
        path = build_reader_model(self.artifact, folder, self.cache_dir, self.progress)
        from qa.embeddings.onnx import open_session

        session = open_session(path, base=folder)
        self.manifest = load_manifest(self.artifact)
        self._below = below(self.artifact / self.manifest.get("weights", WEIGHTS_FILE), folder, self.cache_dir, self.progress)
        self._tokenizer = load_tokenizer(folder)
        self._bi = self.manifest.get("kind") == "bi"
        if self._bi:  # logit = w * cosine + b
            from safetensors.numpy import load_file

            tensors = load_file(str(self.artifact / self.manifest.get("weights", WEIGHTS_FILE)))
            self._w = float(tensors["head.weight"].reshape(-1)[0])
            self._b = float(tensors["head.bias"].reshape(-1)[0])
        self._session = session

    def score(self, question: str, sentences: Sequence[str], batch_size: int = 8) -> np.ndarray:
        """One logit per sentence (float32), in the given order (longest first in small batches: less padding)."""
        self.load()
        if self._bi:
            return self._score_bi(question, sentences, batch_size)
        out = np.zeros(len(sentences), dtype=np.float32)
        order = np.argsort([-len(s) for s in sentences], kind="stable")
        for i in range(0, len(sentences), batch_size):
            idx = order[i : i + batch_size]
            ids, mask = encode_pairs(self._tokenizer, question, [sentences[j] for j in idx])
            out[idx] = self._run(ids, mask).reshape(-1)
        return out

    def _embed(self, texts: list[str]) -> np.ndarray:
        encoded = self._tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in encoded], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encoded], dtype=np.int64)
        return np.asarray(self._run(ids, mask), dtype=np.float32)

    def _run(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        from qa.embeddings.onnx import run_above

        return run_above(self._session, *self._below, ids, mask)[0]

    def _score_bi(self, question: str, sentences: Sequence[str], batch_size: int) -> np.ndarray:
        """``w * cosine + b``; a sentence's vector does not depend on the question, so the last
        :data:`SENTENCE_CACHE` are kept (the passages of a follow-up, of a popular article, read again)."""
        query = self._embed([QUERY_PREFIX + question])[0]
        vectors: list[np.ndarray | None] = []
        with self._lock:
            for text in sentences:
                vector = self._vectors.get(text)
                if vector is not None:
                    self._vectors.move_to_end(text)
                vectors.append(vector)
        missing = sorted({s for s, v in zip(sentences, vectors, strict=True) if v is None}, key=lambda s: -len(s))
        fresh: dict[str, np.ndarray] = {}
        for i in range(0, len(missing), batch_size):
            batch = missing[i : i + batch_size]
            fresh.update(zip(batch, self._embed([PASSAGE_PREFIX + s for s in batch]), strict=True))
        if fresh:
            with self._lock:
                self._vectors.update(fresh)
                while len(self._vectors) > SENTENCE_CACHE:
                    self._vectors.popitem(last=False)
        matrix = (
            np.stack([v if v is not None else fresh[s] for s, v in zip(sentences, vectors, strict=True)])
            if sentences
            else np.zeros((0, len(query)))
        )
        return (self._w * (matrix @ query) + self._b).astype(np.float32)

    def clear_cache(self) -> None:
        """Forget the cached sentence vectors (benchmarks time every sentence's encoding)."""
        with self._lock:
            self._vectors.clear()

    def rank(self, question: str, texts: Sequence[str]) -> list[tuple[int, int, int, float]]:
        """Every candidate sentence of ``texts`` (passages) as ``(text_index, start, end, logit)``, best first."""
        spans = [(ti, s, e) for ti, text in enumerate(texts) for s, e in candidate_sentences(text)]
        scores = self.score(question, [texts[ti][s:e] for ti, s, e in spans])
        ranked = [(ti, s, e, float(x)) for (ti, s, e), x in zip(spans, scores, strict=True)]
        return sorted(ranked, key=lambda r: -r[3])


def below(weights: Path, folder: Path, cache_dir: Path, progress: Any = None) -> tuple[int, Any]:
    """For a model fine-tuned from the e5 folder ``folder`` (its tensors: the safetensors file ``weights``):
    ``(first layer, stack)``: the model's graph starts at that layer of e5 and the process's shared e5 stack
    (:func:`qa.embeddings.onnx.shared_stack`, the embedder's fp32 build) runs the layers below it; ``(0, None)``
    when the graph starts at the embeddings."""
    from qa.embeddings.onnx import build_onnx_model, shared_stack

    config = json.loads((Path(folder) / "config.json").read_text())
    first = first_layer(weights, int(config["num_hidden_layers"]))
    if first == 0:
        return 0, None
    return first, shared_stack(build_onnx_model(folder, cache_dir, "onnx", progress), base=folder)


def sigmoid(x: np.ndarray | float) -> Any:
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=np.float64)))
