"""The span reader: cuts the short answer (a date, a name, a place, a number) out of one chosen sentence.

A SQuAD-style start/end head on multilingual-e5-small read as a cross-encoder: the pair (« query: question »,
sentence), at most :data:`MAX_TOKENS` tokens (only the sentence is truncated). The bottom layers are e5's, the top
layers and a ``Linear(384, 2)`` head are fine-tuned on the PIAF train split (``qa train-span``, see
``qa/answering/reading/models/README.md``). The repository ships only what differs from e5-small
(``qa/answering/reading/models/span.safetensors``, fp16, or int8 with one scale per row) and ``span.json``, its
manifest (sha256, data, parameters, dev-split scores).

On first use the weights are put on top of the rebuilt e5 folder and the layers they change (8-11) and the head are
exported once to ONNX in the model cache (``span-<sha12>.onnx``, weights as ONNX external data, memory-mapped; the
export needs torch; :mod:`qa.answering.reading.finetuned`); e5's layers 0-7 run in the embedder's own sessions
(:func:`qa.answering.reading.finetuned.below`, one copy of each e5 matrix per process); extracting needs only
``onnxruntime``, ``tokenizers``, ``safetensors`` and numpy (no torch import).

Decoding: the best (start <= end, at most :data:`MAX_ANSWER_TOKENS` tokens) by start + end logit over the sentence's
tokens, mapped to characters by the tokens' offsets, widened to whole words, surrounding spaces and punctuation
stripped.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from qa.answering.reading.finetuned import QUERY_PREFIX, FineTuned, FineTunedModel
from qa.errors import ModelError

logger = logging.getLogger(__name__)

MAX_TOKENS = 128
MAX_ANSWER_TOKENS = 25
SPAN_FORMAT = 1
SPAN_WEIGHTS = "span.safetensors"
SPAN_MANIFEST = "span.json"
BUILD_FORMAT = 2  # bump whenever the export changes (2: its own layers only, e5's below run by the embedder's)
MARKER = "qa_span.json"
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

    return dequantise(load_file(str(SPAN.weights(artifact, manifest))))


# -- the ONNX build (torch, once; :class:`~qa.answering.reading.finetuned.FineTuned`) --------------------------------
def _head(bert: Any, manifest: dict[str, Any]) -> tuple[Any, Any, list[str]]:
    """A ``Linear(384, 2)`` on every token: the graph gives the start and the end logits."""
    import torch

    head = torch.nn.Linear(bert.config.hidden_size, 2)

    def logits(hidden: Any, mask: Any) -> Any:  # start and end logits for every token
        both = head(hidden)
        return both[..., 0], both[..., 1]

    return head, logits, ["start_logits", "end_logits"]


def _tensors(artifact: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    import torch

    return {k: torch.from_numpy(v) for k, v in load_span_weights(artifact, manifest).items()}


SPAN = FineTuned(
    kind="span",
    manifest_file=SPAN_MANIFEST,
    weights_file=SPAN_WEIGHTS,
    artifact_format=SPAN_FORMAT,
    build_format=BUILD_FORMAT,
    marker=MARKER,
    command="qa train-span",
    missing="span model",
    head=_head,
    tensors=_tensors,
)
"""The span model's artifact (``span.json``, ``span.safetensors``: fp16, or int8 with one scale per row) and its
ONNX build (``span-<sha12>.onnx``)."""


# -- extracting (ONNX Runtime) --------------------------------------------------------------------------------------
class SpanReader(FineTunedModel):
    """Cuts the short answer out of a sentence; loaded (and built, once) on first use. Thread-safe."""

    spec = SPAN

    def _opened(self, folder: Path) -> None:
        self._tokenizer = load_span_tokenizer(folder)

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
        start_logits, end_logits = self._outputs_bucketed(ids, mask, per_token=True, fill=-1e4)
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
