"""Sentence-aware chunking that keeps character offsets into the article.

Sentences are found with rules written for French news text: abbreviations
(« M. », « Mme », « art. », initials such as « J. ») do not end a sentence,
while sentences glued together without a space (« du pays.Le président »), as
scraped news often has them, are still split. Line breaks always end a
sentence. Sentences are then packed into chunks of about ``target_tokens``
tokens of the embedding model, each chunk repeating up to ``overlap_tokens``
tokens of trailing sentences from the previous one. Every chunk is an exact
slice ``article.text[start:end]``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

TokenCounter = Callable[[Sequence[str]], list[int]]

# Words that end with a full stop without ending the sentence (case-sensitive).
ABBREVIATIONS = frozenset(
    """
    M MM Mme Mmes Mlle Mlles Me Mgr Dr Pr Prof St Ste Sts Stes Jr Sr Cie Inc Ltd Co Gal Gén Col Cdt Lt Sgt
    art al av apr bd boul cf chap coll dir éd env ex fig hab ill infra supra trad op cit ibid id
    janv févr fév avr juil sept oct nov déc min max no nos vol vs etc p pp t
    Art Av Bd Cf Chap Fig Vol No
    """.split()
)

_OPENERS = '«"“‘(\\['
_CLOSERS = '»"”’)\\]'
# end punctuation, optional closing quotes/brackets, then whitespace, then what
# may start a sentence (capital, digit, opening quote, dash)
_SPACED_BOUNDARY = re.compile(rf"[.!?…]+(?:\s?[{_CLOSERS}])*(?P<gap>\s+)(?=[{_OPENERS}—–-]?\s?[A-ZÀ-ÖØ-Þ0-9¿¡])")
# « pays.Le » : a word of two or more small letters/digits, end punctuation, then a capitalised word
_GLUED_BOUNDARY = re.compile(r"(?<=[a-zà-öø-ÿ0-9]{2})[.!?]+(?=[A-ZÀ-ÖØ-Þ][a-zà-öø-ÿ])")
_WORD_BEFORE = re.compile(r"([\wÀ-ÿ'’.-]*?)([\wÀ-ÿ]+)\.$")


def _is_abbreviation(text: str, dot: int) -> bool:
    """Does the full stop at ``text[dot]`` belong to an abbreviation or initial?"""
    if text[dot] != ".":
        return False
    match = _WORD_BEFORE.search(text, max(0, dot - 30), dot + 1)
    if not match:
        return False
    word = match.group(2)
    if word in ABBREVIATIONS:
        return True
    # an initial (« J. Chirac », « J.-C. ») or a dotted acronym (« U.E. »)
    return len(word) == 1 and word.isupper()


def split_sentences(text: str) -> list[tuple[int, int]]:
    """``(start, end)`` spans of the sentences of ``text``, whitespace trimmed."""
    spans: list[tuple[int, int]] = []
    pos = 0
    for line in text.split("\n"):
        line_start, line_end = pos, pos + len(line)
        pos = line_end + 1
        cuts: list[tuple[int, int]] = []  # (end of sentence, start of next)
        for m in _SPACED_BOUNDARY.finditer(line):
            end = m.start("gap")
            first_dot = m.start()
            if _is_abbreviation(line, first_dot):
                continue
            cuts.append((end, m.end()))
        for m in _GLUED_BOUNDARY.finditer(line):
            cuts.append((m.end(), m.end()))
        cuts.sort()
        start = 0
        for end, nxt in cuts:
            if end > start:
                spans.append((line_start + start, line_start + end))
            start = nxt
        if start < len(line):
            spans.append((line_start + start, line_end))
    return [(s, e) for s, e in (_trim(text, s, e) for s, e in spans) if e > s]


def _trim(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


@dataclass(frozen=True)
class Chunk:
    """A slice ``text[start:end]`` of an article."""

    index: int
    start: int
    end: int
    text: str
    tokens: int


def _split_long(text: str, span: tuple[int, int], limit: int, count: TokenCounter) -> list[tuple[int, int, int]]:
    """Cut a span that is longer than ``limit`` tokens at spaces near its middle."""
    start, end = span
    n = count([text[start:end]])[0]
    if n <= limit or end - start < 2:
        return [(start, end, n)]
    middle = (start + end) // 2
    cut = text.rfind(" ", start + 1, middle + 1)
    if cut <= start:
        cut = text.find(" ", middle, end - 1)
    if cut <= start:
        cut = middle
    left = _trim(text, start, cut)
    right = _trim(text, cut, end)
    return _split_long(text, left, limit, count) + _split_long(text, right, limit, count)


def chunk_text(
    text: str,
    count_tokens: TokenCounter,
    target_tokens: int = 200,
    overlap_tokens: int = 40,
) -> list[Chunk]:
    """Pack the sentences of ``text`` into chunks of about ``target_tokens`` tokens."""
    spans = split_sentences(text)
    if not spans:
        return []
    counts = count_tokens([text[s:e] for s, e in spans])
    units: list[tuple[int, int, int]] = []
    for span, n in zip(spans, counts, strict=True):
        units.extend(_split_long(text, span, target_tokens, count_tokens) if n > target_tokens else [(*span, n)])

    chunks: list[Chunk] = []
    i = 0
    while i < len(units):
        j, total = i, 0
        while j < len(units) and (j == i or total + units[j][2] <= target_tokens):
            total += units[j][2]
            j += 1
        start, end = units[i][0], units[j - 1][1]
        chunks.append(Chunk(len(chunks), start, end, text[start:end], total))
        if j >= len(units):
            break
        # step back over trailing sentences to repeat them (never back to i)
        k, overlap = j, 0
        while k - 1 > i and overlap + units[k - 1][2] <= overlap_tokens:
            overlap += units[k - 1][2]
            k -= 1
        i = k
    return chunks
