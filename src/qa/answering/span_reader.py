"""The span reader: cuts the short answer (a date, a name, a place, a number) out of one chosen sentence.

A SQuAD-style start/end head on multilingual-e5-small read as a cross-encoder: the pair (« query: question »,
sentence), at most :data:`MAX_TOKENS` tokens (only the sentence is truncated). The bottom layers are e5's, the top
layers and a ``Linear(384, 2)`` head are fine-tuned on the PIAF train split (``qa train-span``, see
``models/reader/README.md``). The repository ships only what differs from e5-small (``models/reader/span.safetensors``,
fp16, or int8 with one scale per row) and ``span.json``, its manifest (sha256, data, parameters, dev-split scores).

On first use the weights are put on top of the rebuilt e5 folder and the layers they change (8-11) and the head are
exported once to ONNX in the model cache (``span-<sha12>.onnx``, weights as ONNX external data, memory-mapped; the
export needs torch); e5's layers 0-7 run in the embedder's own sessions (:func:`qa.answering.reader.below`, one copy
of each e5 matrix per process); extracting needs only
``onnxruntime``, ``tokenizers``, ``safetensors`` and numpy (no torch import).

Decoding: the best (start <= end, at most :data:`MAX_ANSWER_TOKENS` tokens) by start + end logit over the sentence's
tokens, mapped to characters by the tokens' offsets, widened to whole words, surrounding spaces and punctuation
stripped.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from qa.answering.reader import DEFAULT_ARTIFACT, QUERY_PREFIX, below, first_layer, sha256_file
from qa.errors import ModelError

logger = logging.getLogger(__name__)

MAX_TOKENS = 128
MAX_ANSWER_TOKENS = 25
SPAN_FORMAT = 1
SPAN_WEIGHTS = "span.safetensors"
SPAN_MANIFEST = "span.json"
BUILD_FORMAT = 2  # bump whenever the export changes (2: its own layers only, e5's below run by the embedder's)
MARKER = "qa_span.json"
MODEL_FILE = "model.onnx"
DATA_FILE = "model.onnx.data"
SCALE_SUFFIX = ".scale"
"""An int8 tensor ``name`` comes with ``name.scale`` (one float per row): ``weight = int8 * scale``."""
STRIP = " \t\r\n\u00a0\u202f,;:.!?«»\"'“”‘’()[]{}…–—-/"
"""What is stripped around an answer."""


# -- the pair encoding and the decoding (shared with the trainer) ---------------------------------------------------
def load_span_tokenizer(model_folder: Path) -> Any:
    """The e5 tokenizer for (question, sentence) pairs (the process's shared one,
    :func:`qa.embeddings.base.shared_tokenizer`): only the sentence truncated, to :data:`MAX_TOKENS`."""
    from qa.embeddings.base import shared_tokenizer

    return shared_tokenizer(model_folder, MAX_TOKENS, strategy="only_second")


def encode_span_pairs(tokenizer: Any, pairs: list[tuple[str, str]]) -> tuple[np.ndarray, np.ndarray, list[Any]]:
    """``input_ids``, ``attention_mask`` (int64, padded to the longest) and the encodings (offsets, sequence ids)."""
    encoded = tokenizer.encode_batch([(QUERY_PREFIX + q, s) for q, s in pairs])
    ids = np.array([e.ids for e in encoded], dtype=np.int64)
    mask = np.array([e.attention_mask for e in encoded], dtype=np.int64)
    return ids, mask, encoded


def sentence_tokens(encoding: Any) -> list[int]:
    """Positions of the sentence's tokens (second sequence, not the special tokens nor the padding)."""
    return [i for i, s in enumerate(encoding.sequence_ids) if s == 1 and encoding.offsets[i][1] > encoding.offsets[i][0]]


def best_span(start_logits: np.ndarray, end_logits: np.ndarray, positions: list[int]) -> tuple[int, int, float] | None:
    """The token span ``(start, end, score)`` over ``positions`` with start <= end, at most
    :data:`MAX_ANSWER_TOKENS` tokens, that maximises start + end logit; None without positions."""
    if not positions:
        return None
    pos = np.asarray(positions)
    starts, ends = np.asarray(start_logits, dtype=np.float64)[pos], np.asarray(end_logits, dtype=np.float64)[pos]
    scores = starts[:, None] + ends[None, :]
    gap = pos[None, :] - pos[:, None]
    scores[(gap < 0) | (gap >= MAX_ANSWER_TOKENS)] = -np.inf
    i, j = np.unravel_index(int(np.argmax(scores)), scores.shape)
    return int(pos[i]), int(pos[j]), float(scores[i, j])


def _word_char(text: str, i: int) -> bool:
    """Is ``text[i]`` part of a word: a letter or digit, or a hyphen, dot or comma between two of them."""
    if not 0 <= i < len(text):
        return False
    c = text[i]
    if c.isalnum():
        return True
    return c in "-.," and 0 < i < len(text) - 1 and text[i - 1].isalnum() and text[i + 1].isalnum() and not c.isspace()


def widen_to_words(text: str, start: int, end: int) -> tuple[int, int]:
    """``[start, end)`` grown to whole words (a span never cuts a word in two)."""
    start, end = max(0, start), min(len(text), end)
    while start > 0 and _word_char(text, start - 1) and _word_char(text, start):
        start -= 1
    while end < len(text) and _word_char(text, end) and end > 0 and _word_char(text, end - 1):
        end += 1
    return start, end


def strip_span(text: str, start: int, end: int) -> tuple[int, int]:
    """``[start, end)`` without surrounding spaces and punctuation (:data:`STRIP`); a closing bracket or quote that
    matches an opening one inside the span stays, and so does the dot of a trailing abbreviation like « J.-C. »."""
    while start < end and text[start] in STRIP:
        start += 1
    while end > start and text[end - 1] in STRIP:
        closing = text[end - 1]
        opening = {")": "(", "]": "[", "»": "«", "”": "“"}.get(closing)
        if opening and opening in text[start : end - 1]:
            break
        if closing == "." and end - start >= 2 and text[end - 2].isupper() and (end - start == 2 or not text[end - 3].isalnum()):
            break  # « J.-C. », « M. »: an initial keeps its dot
        end -= 1
    return start, end


def decode(sentence: str, encoding: Any, start_logits: np.ndarray, end_logits: np.ndarray) -> tuple[int, int, float] | None:
    """Character offsets ``(start, end, score)`` of the answer in ``sentence``, or None when nothing is left."""
    found = best_span(start_logits, end_logits, sentence_tokens(encoding))
    if found is None:
        return None
    i, j, score = found
    start, end = widen_to_words(sentence, encoding.offsets[i][0], encoding.offsets[j][1])
    start, end = strip_span(sentence, start, end)
    if end <= start:
        return None
    return start, end, score


# -- the artifact ---------------------------------------------------------------------------------------------------
def load_span_manifest(artifact: Path = DEFAULT_ARTIFACT) -> dict[str, Any]:
    """The span artifact's manifest (``span.json``), after checking that its weights file is the one it describes."""
    artifact = Path(artifact)
    path = artifact / SPAN_MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"no span model in {artifact} ({exc}): run `qa train-span` or set QA_READER=off") from None
    if manifest.get("format") != SPAN_FORMAT:
        raise ModelError(f"{path} has format {manifest.get('format')!r}, this qa reads {SPAN_FORMAT}: run `qa train-span`")
    weights = artifact / manifest.get("weights", SPAN_WEIGHTS)
    if not weights.is_file():
        raise ModelError(f"the span weights {weights} are missing: run `qa train-span` or set QA_READER=off")
    actual = sha256_file(weights)
    if actual != manifest.get("weights_sha256"):
        raise ModelError(f"{weights} does not match {path} (sha256 {actual[:12]}…): retrain with `qa train-span` or restore it")
    return manifest


def quantise_rows(tensor: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A 2-D float matrix as int8 and one float32 scale per row (symmetric: ``int8 * scale``)."""
    matrix = np.asarray(tensor, dtype=np.float32)
    scale = np.abs(matrix).max(axis=1) / 127.0
    scale[scale == 0] = 1.0
    q = np.clip(np.rint(matrix / scale[:, None]), -127, 127).astype(np.int8)
    return q, scale.astype(np.float32)


def dequantise(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The artifact's tensors as float32: int8 ones multiplied by their row scales, the scales dropped."""
    out: dict[str, np.ndarray] = {}
    for name, tensor in tensors.items():
        if name.endswith(SCALE_SUFFIX):
            continue
        if tensor.dtype == np.int8:
            scale = tensors.get(name + SCALE_SUFFIX)
            if scale is None:
                raise ModelError(f"the span tensor {name} is int8 without its {name}{SCALE_SUFFIX}: retrain with `qa train-span`")
            out[name] = tensor.astype(np.float32) * scale.astype(np.float32)[:, None]
        else:
            out[name] = tensor.astype(np.float32)
    return out


def load_span_weights(artifact: Path, manifest: dict[str, Any]) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return dequantise(load_file(str(Path(artifact) / manifest.get("weights", SPAN_WEIGHTS))))


# -- the ONNX build (torch, once) -----------------------------------------------------------------------------------
def span_folder_for(manifest: dict[str, Any], cache_dir: Path) -> Path:
    return Path(cache_dir).expanduser().resolve() / f"span-{manifest['weights_sha256'][:12]}.onnx"


def build_span_model(artifact: Path, model_folder: Path, cache_dir: Path, progress: Any = None) -> Path:
    """The span model's ONNX file: the e5 folder with the artifact's weights on top, exported once (atomic),
    optimised, its weights in :data:`DATA_FILE` beside the graph."""
    manifest = load_span_manifest(artifact)
    from qa.embeddings.onnx_build import build_fine_tuned, fine_tuned_stamp

    return build_fine_tuned(
        span_folder_for(manifest, cache_dir),
        MARKER,
        fine_tuned_stamp(manifest["weights_sha256"], model_folder, BUILD_FORMAT),
        Path(model_folder),
        lambda out: _export(Path(artifact), manifest, Path(model_folder), out),
        f"span model ({artifact})",
        progress,
    )


def _export(artifact: Path, manifest: dict[str, Any], model_folder: Path, out: Path) -> None:
    try:
        import onnx  # noqa: F401  (torch's exporter needs it)
        import torch
        import transformers
        from transformers import AutoModel
    except ImportError as exc:
        raise ModelError(f"building the span model needs {exc.name}: pip install torch onnx, or set QA_READER=off") from None

    from qa.embeddings.onnx_build import export_layers

    transformers.utils.logging.disable_progress_bar()  # the build reports its own progress ("exporting")
    bert = AutoModel.from_pretrained(str(model_folder), dtype=torch.float32, attn_implementation="eager").eval()
    head = torch.nn.Linear(bert.config.hidden_size, 2)
    apply_span_weights(bert, head, {k: torch.from_numpy(v) for k, v in load_span_weights(artifact, manifest).items()})

    def logits(hidden: Any, mask: Any) -> Any:  # start and end logits for every token
        both = head(hidden)
        return both[..., 0], both[..., 1]

    layers = int(bert.config.num_hidden_layers)
    first = first_layer(artifact / manifest.get("weights", SPAN_WEIGHTS), layers)
    export_layers(bert, first, layers, out, logits, ["start_logits", "end_logits"], head)


def apply_span_weights(bert: Any, head: Any, weights: dict[str, Any]) -> None:
    """Put the artifact's tensors (``bert.<name>`` and ``head.<name>``, float) on the model, in its dtype."""
    params = {f"bert.{k}": v for k, v in bert.state_dict().items()} | {f"head.{k}": v for k, v in head.state_dict().items()}
    unknown = sorted(set(weights) - set(params))
    if unknown:
        raise ModelError(f"the span weights hold tensors the e5 model lacks: {unknown[:3]}")
    for name, tensor in weights.items():
        target = params[name]
        if tuple(target.shape) != tuple(tensor.shape):
            raise ModelError(f"the span tensor {name} has shape {tuple(tensor.shape)}, the model {tuple(target.shape)}")
        target.copy_(tensor.to(target.dtype))


# -- extracting (ONNX Runtime) --------------------------------------------------------------------------------------
class SpanReader:
    """Cuts the short answer out of a sentence; loaded (and built, once) on first use. Thread-safe."""

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

    def load(self) -> SpanReader:
        if self._session is None:
            with self._lock:
                if self._session is None:
                    self._load()
        return self

    def _load(self) -> None:
        from qa.embeddings import resolve_model_folder
        from qa.embeddings.onnx import open_session

        folder = resolve_model_folder(self.model, self.cache_dir, self.progress)
        path = build_span_model(self.artifact, folder, self.cache_dir, self.progress)
        session = open_session(path, base=folder)
        self.manifest = load_span_manifest(self.artifact)
        self._below = below(self.artifact / self.manifest.get("weights", SPAN_WEIGHTS), folder, self.cache_dir, self.progress)
        self._tokenizer = load_span_tokenizer(folder)
        self._session = session

    @property
    def null(self) -> bool:
        """Was the model trained with the null answer (``--negatives-*``): is :attr:`SpanReading.margin` meaningful."""
        return bool(self.load().manifest.get("decode", {}).get("null"))

    def extract(self, question: str, sentence: str) -> tuple[int, int, float] | None:
        """``(start, end, score)``: the answer is ``sentence[start:end]``; score = start + end logit (higher is
        surer); None when the sentence is empty or nothing but punctuation is left."""
        found = self.read(question, [sentence])[0]
        return None if found is None else (found.start, found.end, found.score)

    def read(self, question: str, sentences: list[str]) -> list[SpanReading | None]:
        """Each sentence's answer and how sure the model is that it holds one (one batch); None for a sentence with
        nothing but punctuation."""
        out: list[SpanReading | None] = [None] * len(sentences)
        todo = [i for i, s in enumerate(sentences) if s.strip()]
        if not todo:
            return out
        self.load()
        ids, mask, encoded = encode_span_pairs(self._tokenizer, [(question, sentences[i]) for i in todo])
        from qa.embeddings.onnx import run_above

        start_logits, end_logits = run_above(self._session, *self._below, ids, mask)
        for row, i in enumerate(todo):
            n = len(encoded[row].ids)
            found = decode(sentences[i], encoded[row], start_logits[row, :n], end_logits[row, :n])
            if found is not None:
                null = float(start_logits[row, 0] + end_logits[row, 0])
                out[i] = SpanReading(found[0], found[1], found[2], found[2] - null)
        return out


@dataclass(frozen=True)
class SpanReading:
    """The span model's answer in one sentence: ``sentence[start:end]``, its score (start + end logit), and its
    ``margin`` over the null answer (start + end logit at position 0; above 0: the model finds the answer there —
    meaningful only for a model trained with the null answer, :attr:`SpanReader.null`)."""

    start: int
    end: int
    score: float
    margin: float
