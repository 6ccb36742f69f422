"""The exception hierarchy of ``qa``.

Every message says what went wrong *and how to fix it*. The CLI turns these
into a one-line message and a non-zero exit code, the UI into ``st.error``.
"""

from __future__ import annotations

import re

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def printable(text: str) -> str:
    """``text`` safe to print on one line: undecodable bytes of file names (surrogate escapes)
    shown as ``\\xNN``, control characters (newlines in a file name…) as escapes."""
    if any("\udc80" <= c <= "\udcff" for c in text):
        text = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


class QAError(Exception):
    """Base class for every error ``qa`` raises on purpose."""


class ConfigError(QAError):
    """A setting is invalid (names the setting and the accepted values)."""


class DocumentError(QAError):
    """An input file or record cannot be ingested.

    ``path`` is the file, ``line`` the 1-based line for JSON Lines input.
    """

    def __init__(self, path: str, reason: str, line: int | None = None) -> None:
        self.path = printable(str(path))
        self.reason = reason
        self.line = line
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {reason}")


class ModelError(QAError):
    """The embedding model cannot be found, built or loaded."""


class IndexMismatchError(QAError):
    """The index was built with other settings (model, chunking) than the current ones."""


class StoreError(QAError):
    """The vector store cannot be opened or written."""


class NotFoundError(QAError):
    """An article id that the index does not hold."""


class QueryError(QAError):
    """A search/ask request is invalid (bad filter, bad k)."""


class ClaimLostError(QAError):
    """A queue worker's batch was taken over by another worker (its lease ran out meanwhile): its commit is refused,
    so an older version never overwrites what the other worker wrote."""


class IndexBusyError(QAError):
    """Another process holds the index's writer lock (an ingest, delete or repair is running)."""
