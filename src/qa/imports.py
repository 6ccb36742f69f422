"""Heavy imports that need care: torch, which spaCy's ML library would import for nothing.

``thinc`` (under spaCy) imports torch whenever it is installed, to offer it as a backend; the
French pipeline runs on numpy. Importing spaCy with torch hidden saves ~3 s and ~300 MB per
process (:func:`import_spacy`). One lock orders that window against a real torch import
(:func:`import_torch`, the sentence-transformers backend), so a thread never finds torch hidden.
"""

from __future__ import annotations

import importlib
import sys
import threading
from types import ModuleType

_LOCK = threading.RLock()


def import_torch() -> ModuleType:
    """``import torch`` (never while :func:`import_spacy` hides it)."""
    with _LOCK:
        return importlib.import_module("torch")


def import_spacy() -> ModuleType:
    """``import spacy`` without letting thinc import torch (when torch is not loaded already)."""
    with _LOCK:
        if "spacy" in sys.modules or "torch" in sys.modules:
            return importlib.import_module("spacy")
        sys.modules["torch"] = None  # type: ignore[assignment]  # `import torch` raises ImportError meanwhile
        try:
            return importlib.import_module("spacy")
        finally:
            if sys.modules.get("torch", ...) is None:
                del sys.modules["torch"]
