"""The reading answerer: the lexical answerer's candidate sentences re-scored by trained models.

- :mod:`~qa.answering.reading.answerer`: :class:`ReadingAnswerer`, the answerer itself;
- :mod:`~qa.answering.reading.reader`: the sentence reader (:class:`Reader`, a fine-tuned e5 bi-encoder);
- :mod:`~qa.answering.reading.span`: the span model (:class:`SpanReader`, a fine-tuned e5 cross-encoder with a
  start/end head) that cuts the short answer out of the quoted sentence;
- :mod:`~qa.answering.reading.combiner`: the combiner's runtime (:class:`Combiner`: the features, a logistic
  regression over them);
- :mod:`~qa.answering.reading.finetuned`: the loader both fine-tuned models share (the manifest and its weights'
  sha256, the ONNX build in the model cache, e5's lower layers run in the embedder's sessions);
- ``models/``: the shipped artifact (:data:`DEFAULT_ARTIFACT`: weights, manifests, ``combiner.json``, README).

The names below load their module on first use: importing this package costs no more than :func:`enabled` needs.
"""

from __future__ import annotations

import importlib
import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from qa.answering.reading.answerer import CANDIDATES, ReadingAnswerer, reply_of
    from qa.answering.reading.combiner import COMBINER_FILE, FEATURES, Candidate, Combiner, features, first_candidates
    from qa.answering.reading.finetuned import DEFAULT_ARTIFACT, FineTuned, FineTunedModel, sha256_file
    from qa.answering.reading.reader import READER, Reader, candidate_sentences
    from qa.answering.reading.span import SPAN, SpanReader, SpanReading

__all__ = [
    "CANDIDATES",
    "COMBINER_FILE",
    "DEFAULT_ARTIFACT",
    "FEATURES",
    "READER",
    "SPAN",
    "Candidate",
    "Combiner",
    "FineTuned",
    "FineTunedModel",
    "ReadingAnswerer",
    "Reader",
    "SpanReader",
    "SpanReading",
    "candidate_sentences",
    "enabled",
    "features",
    "first_candidates",
    "reply_of",
    "sha256_file",
]

_LAZY = {
    "CANDIDATES": "answerer",
    "ReadingAnswerer": "answerer",
    "reply_of": "answerer",
    "COMBINER_FILE": "combiner",
    "FEATURES": "combiner",
    "Candidate": "combiner",
    "Combiner": "combiner",
    "features": "combiner",
    "first_candidates": "combiner",
    "DEFAULT_ARTIFACT": "finetuned",
    "FineTuned": "finetuned",
    "FineTunedModel": "finetuned",
    "sha256_file": "finetuned",
    "READER": "reader",
    "Reader": "reader",
    "candidate_sentences": "reader",
    "SPAN": "span",
    "SpanReader": "span",
    "SpanReading": "span",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def enabled() -> bool:
    """The reading answerer (:class:`ReadingAnswerer`) is the default offline answerer: unset or ``QA_READER=on`` (or
    ``1``, ``true``, ``yes``); ``off`` keeps the lexical answerer. The ``reader`` setting
    (:class:`qa.config.Settings`), when given, decides instead."""
    return os.environ.get("QA_READER", "on").strip().lower() in ("on", "1", "true", "yes")
