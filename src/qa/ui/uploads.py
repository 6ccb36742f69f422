"""Articles added from the browser: saved inside the corpus folder, then ingested like any file.

Names are reduced to a safe base name (no folders, no odd characters), sizes are capped,
and a file that fails to ingest is removed again, so the corpus folder only keeps what
the index holds.
"""

from __future__ import annotations

import hashlib
import os
import re
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from qa.errors import DocumentError
from qa.kb import IngestProgress
from qa.schema import IngestReport, Skipped

UPLOAD_TYPES = (".txt", ".md", ".markdown", ".html", ".htm", ".jsonl")
UPLOAD_FOLDER = "uploads"
_UNSAFE = re.compile(r"[^\w.\- ]+")


def safe_filename(name: str) -> str:
    """A base name safe to create inside the corpus folder (no path, no control or odd characters)."""
    base = unicodedata.normalize("NFC", name.replace("\\", "/").rsplit("/", 1)[-1])
    base = _UNSAFE.sub("_", base).strip(" .")
    stem, dot, ext = base.rpartition(".")
    if not dot or not stem or "." + ext.lower() not in UPLOAD_TYPES:
        raise DocumentError(name, f"unsupported file type; upload one of {', '.join(UPLOAD_TYPES)}")
    return stem[:100].strip(" .") + "." + ext.lower()


def save_upload(name: str, data: bytes, corpus_dir: str | Path, max_bytes: int) -> Path:
    """Write an uploaded file into ``corpus_dir/uploads/`` and return its path.

    The same content uploaded again reuses its file; another file with the same name gets a
    numbered name instead of overwriting it. Raises :class:`DocumentError` for a refused upload.
    """
    filename = safe_filename(name)
    if len(data) > max_bytes:
        raise DocumentError(name, f"file is {len(data) / 1e6:.1f} MB, over the {max_bytes / 1e6:g} MB limit (QA_MAX_FILE_MB)")
    if not data.strip():
        raise DocumentError(name, "file is empty; upload a file with text in it")
    folder = Path(corpus_dir).resolve() / UPLOAD_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    stem, ext = os.path.splitext(filename)
    for n in range(1, 1000):
        target = folder / (filename if n == 1 else f"{stem}-{n}{ext}")
        if target.parent != folder:  # cannot happen with a safe name; never write elsewhere
            raise DocumentError(name, "refused file name")
        if target.exists():
            if target.read_bytes() == data:
                return target
            continue
        tmp = folder / f".{hashlib.sha1(data).hexdigest()[:12]}.{os.getpid()}.part"
        tmp.write_bytes(data)
        os.replace(tmp, target)
        return target
    raise DocumentError(name, "too many files with this name; rename the file")


def ingest_uploads(
    kb: Any,
    files: Sequence[tuple[str, bytes]],
    corpus_dir: str | Path,
    max_bytes: int,
    *,
    progress: IngestProgress | None = None,
) -> IngestReport:
    """Save ``(name, content)`` uploads into the corpus folder and ingest them with ``kb.ingest``.

    Refused uploads and files that fail to ingest are listed in ``report.errors`` (with the
    uploaded name) and are not kept in the corpus folder (a JSONL file with some bad lines is
    kept for its good ones); what was indexed before is untouched.
    """
    saved: dict[str, str] = {}
    refused: list[Skipped] = []
    for name, data in files:
        try:
            path = save_upload(name, data, corpus_dir, max_bytes)
        except DocumentError as exc:
            refused.append(Skipped(name, exc.reason))
        else:
            saved[str(path)] = name
    report = kb.ingest(list(saved), progress=progress) if saved else IngestReport()
    errors: list[Skipped] = []
    for problem in report.errors:
        resolved = str(Path(problem.path).resolve()) if problem.path else ""
        if resolved in saved:
            if problem.line is None:  # the whole file failed (a JSONL file keeps its good lines)
                Path(resolved).unlink(missing_ok=True)
            problem = Skipped(saved[resolved], problem.reason, problem.line)
        errors.append(problem)
    report.errors = refused + errors
    return report
