"""Loading articles from files: ``.txt``, ``.md``, ``.html`` and ``.jsonl``.

Every loader returns :class:`Article` objects with normalised text (NFC, plain
spaces, no zero-width characters) and a stable id: the one given (JSON Lines
``id``, front matter ``id``) or a hash of the content. Problems are reported
as :class:`~qa.errors.DocumentError` values naming the file (and line), so one
bad input never stops the others.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import stat
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

from qa.errors import DocumentError, printable
from qa.schema import ArticleMeta, Skipped

logger = logging.getLogger(__name__)

TEXT_EXTENSIONS = {".txt", ".text"}
MARKDOWN_EXTENSIONS = {".md", ".markdown"}
HTML_EXTENSIONS = {".html", ".htm"}
JSONL_EXTENSIONS = {".jsonl"}
SUPPORTED_EXTENSIONS = TEXT_EXTENSIONS | MARKDOWN_EXTENSIONS | HTML_EXTENSIONS | JSONL_EXTENSIONS
METADATA_FIELDS = ("title", "date", "url", "source")


@dataclass
class Article:
    """One article, ready to be chunked and indexed."""

    id: str
    text: str
    title: str = ""
    date: str = ""
    """ISO date ``YYYY-MM-DD`` or empty."""
    url: str = ""
    source: str = ""
    path: str = ""
    """The file it came from, resolved (empty for articles given in memory)."""
    derived_id: bool = False
    """True when ``id`` is a content hash: a changed file then gets a new id, and
    the article previously indexed from the same path is replaced."""

    @property
    def meta(self) -> ArticleMeta:
        """The metadata every chunk of the article carries (one value from here to the stores)."""
        return ArticleMeta(self.id, self.title, self.source, self.url, self.date)

    @property
    def content_hash(self) -> str:
        """Hash of everything that is indexed: a change here means re-indexing."""
        payload = json.dumps([self.text, self.title, self.date, self.url, self.source], ensure_ascii=False)
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16]


# --------------------------------------------------------------------------- text

_ODD_SPACES = re.compile("[\u00a0\u1680\u2000-\u200a\u202f\u205f\u3000\t\f\v]")
_INVISIBLE = re.compile("[\u00ad\u200b\u200c\u200d\u2060\ufeff]")
_SPACE_RUNS = re.compile(" {2,}")
_BLANK_LINES = re.compile(r"\n{3,}")


def normalize_text(text: str) -> str:
    """NFC, plain spaces, no invisible characters, ``\\n`` line ends, tidy blank lines."""
    text = unicodedata.normalize("NFC", text)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _INVISIBLE.sub("", text)
    text = _ODD_SPACES.sub(" ", text)
    text = _SPACE_RUNS.sub(" ", text)
    text = "\n".join(line.strip() for line in text.split("\n"))
    text = _BLANK_LINES.sub("\n\n", text)
    return text.strip()


def normalize_date(value: Any, where: str, line: int | None = None) -> str:
    """``YYYY-MM-DD`` from a date, a datetime or an ISO string; empty stays empty."""
    if value in (None, ""):
        return ""
    if isinstance(value, datetime):
        return value.date().isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, str):
        candidate = value.strip()
        try:
            return date.fromisoformat(candidate[:10]).isoformat()
        except ValueError:
            pass
    raise DocumentError(where, f"date {value!r} is not an ISO date: write it as YYYY-MM-DD", line)


def content_id(text: str) -> str:
    """The id of an article that has none: a hash of its text."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


# --------------------------------------------------------------------------- files


def display_path(path: Path) -> str:
    """How a file is named in the index and in messages: resolved, printable on one line."""
    return printable(str(path.resolve()))


def file_title(path: Path) -> str:
    """A title from a file name; a name in a legacy encoding (``caf\\xe9.txt``) read as Windows-1252."""
    stem = path.stem
    if any("\udc80" <= c <= "\udcff" for c in stem):
        stem = os.fsencode(stem).decode("cp1252", errors="replace")
    return printable(stem)


def _too_big(size: int, max_bytes: int) -> str:
    return f"file is {size / 1e6:.1f} MB, over the {max_bytes / 1e6:.0f} MB limit: split it or raise QA_MAX_FILE_MB"


def _check_regular(path: Path, max_bytes: int | None) -> None:
    """Refuse what is not a plain file (a FIFO would block the ingest forever) and oversized files."""
    st = path.stat()  # follows symlinks: a loop or a dangling link raises OSError here
    if not stat.S_ISREG(st.st_mode):
        raise DocumentError(str(path), "not a regular file (a FIFO, socket or device): only plain files are ingested")
    if max_bytes is not None and st.st_size > max_bytes:
        raise DocumentError(str(path), _too_big(st.st_size, max_bytes))


_C1_OR_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1f\x7f-\x9f]")


def decode_bytes(data: bytes, where: str) -> str:
    """Bytes of a text file as Unicode: UTF-8, else the detected legacy encoding (Windows-1252
    preferred over Latin-1, which it extends with « ’ € œ »), never control-character soup."""
    try:
        return _not_binary(data.decode("utf-8-sig"), where)
    except UnicodeDecodeError:
        pass
    western = _as_western(data)
    if western is not None:  # French, Spanish, German… text saved as Windows-1252 or Latin-1
        text, encoding = western, "cp1252"
    else:
        from charset_normalizer import from_bytes

        best = from_bytes(data).best()
        if best is None:
            raise DocumentError(where, "cannot detect the text encoding: save the file as UTF-8")
        text, encoding = str(best), best.encoding
    logger.info("%s: decoded as %s", where, encoding)
    return _not_binary(text, where)


def _as_western(data: bytes) -> str | None:
    """``data`` as Windows-1252 if it reads as Western European text: mostly ASCII letters with
    some accented ones (Cyrillic or Greek saved in their code pages read as 100 % accented
    letters, so charset detection gets those). Detection alone mistakes short French text for
    Baltic or Central European code pages (« franēaise », « trčs »)."""
    try:
        text = data.decode("cp1252")
    except UnicodeDecodeError:
        return None
    letters = [c for c in text[:100_000] if c.isalpha()]
    accented = sum(1 for c in letters if not c.isascii())
    if not letters or accented > 0.3 * len(letters) or _C1_OR_CONTROL.search(text[:100_000]):
        return None
    return text


def _not_binary(text: str, where: str) -> str:
    sample = text[:100_000]
    if sample and len(_C1_OR_CONTROL.findall(sample)) > 0.01 * len(sample):
        raise DocumentError(where, "binary file (control characters), not text: convert it to .txt, .md, .html or .jsonl")
    return text


def read_text_file(path: Path, max_bytes: int) -> str:
    """Read a text file as Unicode: UTF-8 first, then the detected legacy encoding."""
    _check_regular(path, max_bytes)
    data = path.read_bytes()
    if b"\x00" in data[:8192]:
        raise DocumentError(str(path), "binary file (NUL bytes), not text: convert it to .txt, .md, .html or .jsonl")
    return decode_bytes(data, str(path))


_FRONT_MATTER = re.compile(r"\A---[ \t]*\n(.*?)\n---[ \t]*(?:\n|\Z)", re.S)


def split_front_matter(raw: str, where: str) -> tuple[dict[str, Any], str]:
    """``--- key: value ---`` at the top of a .txt/.md file, parsed as YAML."""
    match = _FRONT_MATTER.match(raw)
    if not match:
        return {}, raw
    import yaml

    try:
        meta = yaml.safe_load(match.group(1)) or {}
    except yaml.YAMLError as exc:
        problem = str(exc).splitlines()[0]
        raise DocumentError(where, f"invalid front matter ({problem}): fix the YAML between the --- lines") from None
    if not isinstance(meta, dict):
        raise DocumentError(where, "front matter must be 'key: value' lines")
    return meta, raw[match.end() :]


_MD_IMAGE = re.compile(r"!\[([^\]]*)\]\([^)]*\)")
_MD_LINK = re.compile(r"\[([^\]]+)\]\([^)]*\)")
_MD_HEADING = re.compile(r"^#{1,6}[ \t]+", re.M)
_MD_EMPHASIS = re.compile(r"(\*\*|__)(?=\S)(.+?)(?<=\S)\1")


def markdown_to_text(md: str) -> tuple[str, str]:
    """Plain text of a Markdown article and its first ``# heading`` (or "")."""
    heading = re.search(r"^#[ \t]+(.+)$", md, re.M)
    text = _MD_IMAGE.sub(r"\1", md)
    text = _MD_LINK.sub(r"\1", text)
    text = _MD_HEADING.sub("", text)
    text = _MD_EMPHASIS.sub(r"\2", text)
    return text, heading.group(1).strip() if heading else ""


def _article_from_meta(meta: dict[str, Any], text: str, default_title: str, path: Path) -> Article:
    where = str(path)
    text = normalize_text(text)
    if not text:
        raise DocumentError(where, "empty article (no text after normalisation): remove the file or add text")
    for key in ("id", *METADATA_FIELDS):
        if key in meta and meta[key] is not None and not isinstance(meta[key], (str, int, float, date)):
            raise DocumentError(where, f"front matter field {key!r} must be a string")
    given_id = str(meta["id"]).strip() if meta.get("id") not in (None, "") else ""
    return Article(
        id=given_id or content_id(text),
        derived_id=not given_id,
        text=text,
        title=normalize_text(str(meta.get("title") or default_title)),
        date=normalize_date(meta.get("date"), where),
        url=str(meta.get("url") or ""),
        source=str(meta.get("source") or ""),
        path=display_path(path),  # resolved: `qa ingest corpus/` and `qa ingest ./corpus` are the same file
    )


def load_text(path: Path, max_bytes: int) -> Article:
    meta, body = split_front_matter(read_text_file(path, max_bytes), str(path))
    return _article_from_meta(meta, body, file_title(path), path)


def load_markdown(path: Path, max_bytes: int) -> Article:
    meta, body = split_front_matter(read_text_file(path, max_bytes), str(path))
    text, heading = markdown_to_text(body)
    return _article_from_meta(meta, text, heading or file_title(path), path)


_EMBEDDED = re.compile(
    r"<(script|style|iframe|noscript|object|embed|template|svg|frameset|frame)\b[^>]*?(?:/>|>.*?</\1\s*>)", re.S | re.I
)


def load_html(path: Path, max_bytes: int) -> Article:
    """Main text of an HTML page (boilerplate, scripts and styles dropped) via trafilatura."""
    raw = _EMBEDDED.sub(" ", read_text_file(path, max_bytes))  # iframes' fallback text is not the article
    import trafilatura

    doc = trafilatura.bare_extraction(raw, url=None, with_metadata=True, include_comments=False, include_tables=True)
    text = getattr(doc, "text", None) if doc is not None else None
    if not text or not text.strip():
        raise DocumentError(str(path), "no article text found in the HTML page: check that it is not empty or script-only")
    meta = {
        "title": getattr(doc, "title", None),
        "date": (getattr(doc, "date", None) or "")[:10] or None,
        "url": getattr(doc, "url", None),
        "source": getattr(doc, "sitename", None),
    }
    return _article_from_meta(meta, text, file_title(path), path)


def parse_jsonl_record(record: Any, where: str, line: int | None) -> Article:
    """One JSON Lines record (also used for articles posted over HTTP)."""
    if not isinstance(record, dict):
        raise DocumentError(where, "each line must be a JSON object with 'id' and 'text'", line)
    rid = record.get("id")
    if isinstance(rid, bool) or not isinstance(rid, (str, int)) or str(rid).strip() == "":
        raise DocumentError(where, "missing or invalid 'id': give each article a non-empty string id", line)
    text = record.get("text")
    if not isinstance(text, str):
        raise DocumentError(where, "missing or invalid 'text': it must be a string", line)
    for key in METADATA_FIELDS:
        if record.get(key) is not None and not isinstance(record[key], str):
            raise DocumentError(where, f"field {key!r} must be a string", line)
    text = normalize_text(text)
    if not text:
        raise DocumentError(where, "empty 'text': give the article's text", line)
    return Article(
        id=str(rid).strip(),
        text=text,
        title=normalize_text(record.get("title") or ""),
        date=normalize_date(record.get("date"), where, line),
        url=(record.get("url") or "").strip(),
        source=(record.get("source") or "").strip(),
        path=where,
    )


def load_jsonl(path: Path, max_bytes: int) -> Iterator[Article | DocumentError]:
    """One article per line, streamed (a file of any size in bounded memory; ``max_bytes``
    limits each line); bad lines are reported and skipped, the rest load."""
    where = printable(str(path))
    resolved = display_path(path)
    seen: dict[str, int] = {}
    _check_regular(path, None)
    with path.open("rb") as fh:
        lineno = 0
        while True:
            raw = fh.readline(max_bytes + 1)
            if not raw:
                break
            lineno += 1
            if len(raw) > max_bytes:
                while raw and not raw.endswith(b"\n"):  # skip the rest of the oversized line
                    raw = fh.readline(1 << 20)
                limit = f"{max_bytes / 1e6:.0f} MB"
                yield DocumentError(where, f"line over the {limit} limit: split the article or raise QA_MAX_FILE_MB", lineno)
                continue
            if not raw.strip():
                continue
            if b"\x00" in raw:
                yield DocumentError(where, "NUL bytes (binary data, or UTF-16): save the file as UTF-8 JSON Lines", lineno)
                continue
            try:
                record = json.loads(raw.decode("utf-8-sig" if lineno == 1 else "utf-8"))
            except UnicodeDecodeError:
                yield DocumentError(where, "not UTF-8: save the file as UTF-8", lineno)
                continue
            except json.JSONDecodeError as exc:
                yield DocumentError(where, f"invalid JSON ({exc.msg} at column {exc.colno})", lineno)
                continue
            try:
                article = parse_jsonl_record(record, where, lineno)
            except DocumentError as exc:
                yield exc
                continue
            if article.id in seen:
                yield DocumentError(
                    where, f"duplicate id {article.id!r} (first on line {seen[article.id]}): ids must be unique", lineno
                )
                continue
            seen[article.id] = lineno
            article.path = resolved
            yield article


_LOADERS = {
    **{ext: load_text for ext in TEXT_EXTENSIONS},
    **{ext: load_markdown for ext in MARKDOWN_EXTENSIONS},
    **{ext: load_html for ext in HTML_EXTENSIONS},
}


def load_file(path: Path, max_bytes: int) -> Iterator[Article | DocumentError]:
    """Articles of one file (one, or many for JSON Lines), or the errors met."""
    ext = path.suffix.lower()
    try:
        if ext in JSONL_EXTENSIONS:
            yield from load_jsonl(path, max_bytes)
        elif ext in _LOADERS:
            yield _LOADERS[ext](path, max_bytes)
        else:
            supported = ", ".join(sorted(SUPPORTED_EXTENSIONS))
            yield DocumentError(str(path), f"unsupported file type {printable(ext) or '(none)'}: use one of {supported}")
    except DocumentError as exc:
        yield exc
    except OSError as exc:
        yield DocumentError(str(path), f"cannot read the file ({exc.strerror or exc}): check that it exists and is readable")
    except Exception as exc:  # one strange file (a parser crash) must not stop the others
        logger.debug("loading %s failed", printable(str(path)), exc_info=True)
        first = printable(str(exc).splitlines()[0] if str(exc) else "")
        yield DocumentError(str(path), f"cannot load the file ({type(exc).__name__}: {first[:200]}): check its content")


def _walk(root: Path) -> Iterator[Path | Skipped | DocumentError]:
    """Files under ``root``, sorted, hidden ones and symlink loops left out; unreadable folders reported."""
    seen_dirs: set[tuple[int, int]] = set()
    problems: list[OSError] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True, onerror=problems.append):
        while problems:
            exc = problems.pop()
            yield DocumentError(exc.filename or dirpath, f"cannot read the folder ({exc.strerror or exc}): check its permissions")
        st = os.stat(dirpath)
        key = (st.st_dev, st.st_ino)
        if key in seen_dirs:
            dirnames[:] = []
            yield Skipped(printable(dirpath), "directory already visited (symlink loop)")
            continue
        seen_dirs.add(key)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            path = Path(dirpath) / name
            if path.suffix.lower() in SUPPORTED_EXTENSIONS:
                yield path
            else:
                yield Skipped(printable(str(path)), f"unsupported file type {printable(path.suffix) or '(none)'}")
    for exc in problems:
        yield DocumentError(exc.filename or str(root), f"cannot read the folder ({exc.strerror or exc}): check its permissions")


def present_files(paths: Iterable[str | Path]) -> tuple[list[str], set[str]]:
    """The given roots and every file under them, named as the index names them (:func:`display_path`)."""
    roots: list[str] = []
    present: set[str] = set()
    for given in paths:
        root = Path(given)
        roots.append(display_path(root))
        if root.is_dir():
            present.update(display_path(e) for e in _walk(root) if isinstance(e, Path))
        elif root.is_file():
            present.add(display_path(root))
    return roots, present


def iter_inputs(paths: Iterable[str | Path], max_bytes: int) -> Iterator[Article | DocumentError | Skipped]:
    """Everything to ingest from files and folders (folders are walked recursively)."""
    for given in paths:
        root = Path(given)
        if root.is_dir():
            for entry in _walk(root):
                if isinstance(entry, (Skipped, DocumentError)):
                    yield entry
                else:
                    yield from load_file(entry, max_bytes)
        elif root.exists():
            yield from load_file(root, max_bytes)
        else:
            yield DocumentError(str(root), "no such file or folder: check the path")
