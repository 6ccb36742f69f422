"""Answer spans: the short answer cut from a sentence.

Regular expressions find dates (:func:`find_dates`) and quantities (:func:`find_quantities`), French and English;
spaCy's French NER (:func:`load_nlp`, once per process) finds people and places (:func:`find_entities`), with
capitalised word runs as a stand-in when spaCy or its model is missing. Each :class:`Span` carries its French
phrasing for the reply (« le 2 février 1993 » → « Le 2 février 1993. », « in 1994 » → « En 1994. »).
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from qa.analysis import analyze, fold, stop_words
from qa.answering.questions import word_terms
from qa.imports import import_spacy

__all__ = [
    "SPACY_MODEL",
    "Span",
    "find_dates",
    "find_entities",
    "find_quantities",
    "in_question",
    "load_nlp",
    "regex_entities",
    "year_only",
]

SPACY_MODEL = "fr_core_news_sm"


@dataclass
class Span:
    """A short answer found in a sentence: ``core`` at ``sentence[start:end]``, ``reply`` the French phrasing."""

    start: int
    end: int
    core: str
    reply: str
    strength: float = 1.0
    """1 for a clear answer of the expected kind, less for a fallback (an ORG for « Qui », a bare year)."""


# ---------------------------------------------------------------------------------------------------------------------
# Dates

_MONTHS_FR = (
    r"(?:janvier|f[ée]vrier|mars|avril|mai|juin|juillet|ao[uû]t|septembre|octobre|novembre|d[ée]cembre|"
    r"janv\.|f[ée]vr\.|avr\.|juil\.|sept\.|oct\.|nov\.|d[ée]c\.)"
)
_MONTHS_EN = r"(?:January|February|March|April|May|June|July|August|September|October|November|December)"
_WEEKDAYS = r"(?:lundi|mardi|mercredi|jeudi|vendredi|samedi|dimanche)"
_YEAR = r"(?:\d{3,4}|'\d{2})"
_ERA = r"(?:\s(?:av\.|avant|apr\.|après)\s?(?:J\.?-?C\.?|Jésus-Christ|notre ère)|\s(?:BC|AD|BCE|CE)\b)?"
_PREPS_DAY = r"(?:depuis |dès |jusqu'|avant |après )?(?:le|du|au|l')\s?|on\s"
_PREPS_YEAR = r"depuis|dès|jusqu'en|jusqu'à|en|vers|avant|après|de|entre|in|since|from|by|until|around|before|after"
_ERAS = (
    r"(?:haut |bas |)Moyen[ -][ÂA]ge|Antiquité(?: tardive)?|Renaissance|Préhistoire|Révolution française|Belle Époque|"
    r"Première Guerre mondiale|Seconde Guerre mondiale|Deuxième Guerre mondiale|Grande Guerre|Occupation"
)
_PREPS_ERA = (
    r"au|du|le|pendant le|durant le|dès le|depuis le|à la|de la|pendant la|durant la|dès la|sous la|la|"
    r"à l'|de l'|pendant l'|durant l'|dès l'|l'"
)
_ORDINAL = r"(?:[IVXLC]+|\d{1,2})(?:e|è|ème|eme|er|re)"
# (default preposition for the reply, pattern with groups prep and core, strength), most specific first
_DATE_PATTERNS: list[tuple[str, re.Pattern[str], float]] = [
    # le 2 février 1993, du 1er janvier, lundi 7 février
    (
        "Le",
        re.compile(
            rf"(?:(?P<prep>{_PREPS_DAY})(?:{_WEEKDAYS}\s)?)?"
            rf"(?P<core>(?:{_WEEKDAYS}\s)?(?:1er|1re|premier|[0-3]?\d)\s{_MONTHS_FR}(?:\s\d{{3,4}}{_ERA})?)",
            re.IGNORECASE,
        ),
        1.0,
    ),
    # en novembre 1994, début mars 2020
    (
        "En",
        re.compile(
            r"(?:(?P<prep>(?:depuis|dès|jusqu'en|jusqu'à|en|de|d'|vers|avant|après|in|since)\s?))?"
            rf"(?P<core>(?:(?:fin|début|mi-|courant)\s?)?{_MONTHS_FR}\s\d{{3,4}})",
            re.IGNORECASE,
        ),
        1.0,
    ),
    # February 2, 1993 / 2 February 1993 / February 1993
    ("", re.compile(rf"(?:(?P<prep>on|in|since)\s)?(?P<core>{_MONTHS_EN}\s[0-3]?\d(?:st|nd|rd|th)?(?:,?\s\d{{4}})?)\b"), 1.0),
    (
        "",
        re.compile(rf"(?:(?P<prep>on|in|since)\s)?(?P<core>[0-3]?\d(?:st|nd|rd|th)?\s(?:of\s)?{_MONTHS_EN}(?:,?\s\d{{4}})?)\b"),
        1.0,
    ),
    ("", re.compile(rf"(?:(?P<prep>in|since)\s)?(?P<core>{_MONTHS_EN}\s\d{{4}})\b"), 1.0),
    # au XIXe siècle, durant les XIXe et XXe siècles, le 5e siècle av. J.-C.
    (
        "Au",
        re.compile(
            r"(?:(?P<prep>(?:depuis |dès |jusqu'|durant |pendant )?(?:le|les|au|aux|du|des|en)|in the|since the)\s)?"
            rf"(?P<core>(?:(?:début|fin|milieu)\s(?:du\s)?)?(?:{_ORDINAL}\s(?:et|au|ou|-)\s(?:le\s)?)?"
            rf"(?:{_ORDINAL}|\d{{1,2}}(?:th|st|nd|rd))\s(?:siècles?|siecles?|century|centuries|millénaire){_ERA})",
            re.IGNORECASE,
        ),
        1.0,
    ),
    # dans les années 1990
    (
        "Dans les",
        re.compile(
            r"(?:(?P<prep>dans les|depuis les|durant les|pendant les|in the)\s)?(?P<core>années\s(?:\d{2,4}|\w+)|\d{4}s)\b"
        ),
        1.0,
    ),
    # en 1994, depuis 2003, de 1993 à 1995
    (
        "En",
        re.compile(
            rf"(?P<prep>\b(?:{_PREPS_YEAR})\s(?:l'an\s)?)(?P<core>(?:\d{{3,4}}|{_YEAR}){_ERA}(?:\s(?:à|et|-|to|and)\s\d{{3,4}})?)\b",
            re.IGNORECASE,
        ),
        1.0,
    ),
    # en mai, au mois de juin, début mars (no year)
    (
        "En",
        re.compile(
            r"(?P<prep>\b(?:en|au mois de|au mois d'|depuis|dès|jusqu'en|début|fin|mi-|courant)\s?)"
            rf"(?P<core>{_MONTHS_FR})(?![\w-])",
            re.IGNORECASE,
        ),
        0.8,
    ),
    # au Moyen Âge, pendant l'Antiquité
    ("Au", re.compile(rf"(?:(?P<prep>\b(?:{_PREPS_ERA})\s?))?(?P<core>{_ERAS})"), 0.8),
    # a bare year: 1993, 2022
    ("En", re.compile(r"(?P<prep>)\b(?P<core>(?:1[0-9]{3}|20[0-9]{2})(?:\s?[-–]\s?(?:1[0-9]{3}|20[0-9]{2}))?)\b"), 0.7),
]

_ENGLISH_PREPS = {
    "in": "en",
    "since": "depuis",
    "on": "le",
    "from": "depuis",
    "by": "avant",
    "until": "jusqu'en",
    "around": "vers",
    "before": "avant",
    "after": "après",
    "in the": "au",
    "since the": "depuis le",
}


_NEXT_WORD = re.compile(r"\s+([\wÀ-ÿ]+)")


def _counted(sentence: str, end: int) -> bool:
    """Is the number ending at ``end`` followed by a noun it counts (« 103 objets »)?"""
    m = _NEXT_WORD.match(sentence, end)
    if not m:
        return False
    word = m.group(1)
    return word.isalpha() and word.islower() and len(word) > 2 and fold(word) not in _stop_words() and not _MONTH_WORD.match(word)


def find_dates(sentence: str) -> list[Span]:
    """Date expressions of ``sentence`` (French and English), longest first when they overlap."""
    found: list[Span] = []
    for default_prep, pattern, strength in _DATE_PATTERNS:
        for m in pattern.finditer(sentence):
            start, end = m.start("core"), m.end("core")
            if any(s.start <= start and end <= s.end for s in found):
                continue
            # an English date (« January 10, 2022 ») is quoted as it is; « in 1994 » becomes « En 1994 »
            prep = (m.group("prep") or "").strip() if default_prep else ""
            prep = _ENGLISH_PREPS.get(prep.lower(), prep)
            core = m.group("core")
            if core[:1].isdigit() and _counted(sentence, end):
                continue  # « de 103 objets »: a quantity, not a year
            if prep and prep.lower() not in ("d'", "l'", "mi-") and not prep.endswith("'"):
                reply = f"{prep} {core}"
            elif prep:
                reply = f"{prep}{core}"
            else:
                reply = f"{default_prep} {core}" if default_prep else core
            found.append(Span(start, end, core, _reply(reply), strength))
    return found


# ---------------------------------------------------------------------------------------------------------------------
# Quantities

_NUMBER_WORDS = (
    r"(?:deux|trois|quatre|cinq|six|sept|huit|neuf|dix|onze|douze|treize|quatorze|quinze|seize|vingt|trente|quarante|cinquante|"
    r"soixante|cents|cent|mille|dizaines?|centaines?|milliers?|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|twenty|"
    r"thirty|forty|fifty|hundred|thousand|dozen)\b"
)
_ONE_NUMBER = (
    rf"(?:\d{{1,3}}(?:[\u00a0\u202f ]\d{{3}})+(?:,\d+)?|\d+(?:[.,]\d+)?"
    rf"|{_NUMBER_WORDS}(?:[- ](?:et[- ])?(?:{_NUMBER_WORDS}|une?\b))*)"
)
_NUMBER = rf"{_ONE_NUMBER}(?:\s?%)?(?:\s?(?:à|-|–|ou|to|and|et)\s?{_ONE_NUMBER})?"
_SCALE = r"(?:\s(?:mille|millions?|milliards?|billions?|thousand|million|billion|trillion)s?)?"
_QUANTITY = re.compile(
    rf"(?<![\w,.])(?P<core>(?:(?:plus|moins) de\s|près de\s|environ\s|quelque\s|about\s|over\s|more than\s|nearly\s)?"
    rf"{_NUMBER}{_SCALE})(?P<unit>\s?(?:%|‰|€|\$|£)|\s(?:pour\s?cent|percent)|"
    r"\s(?:de\s|d['’]|of\s)?[A-Za-zÀ-ÖØ-öø-ÿœŒ][\wÀ-ÿœ'’-]*)?",
    re.IGNORECASE,
)
_NOT_UNITS = frozenset(
    fold(w)
    for w in "plus moins environ près seulement déjà encore ainsi alors aussi puis après avant selon soit contre entre "
    "depuis jusqu jusque et ou où qui que dont lors".split()
)
_MONTH_WORD = re.compile(rf"^{_MONTHS_FR}$|^{_MONTHS_EN}$", re.IGNORECASE)


def find_quantities(sentence: str) -> list[Span]:
    """Numbers with their unit or noun (« 100 000 personnes », « 3,7 milliards d'euros », « 50 % »)."""
    stops = _stop_words()
    found: list[Span] = []
    for m in _QUANTITY.finditer(sentence):
        core = m.group("core")
        unit = m.group("unit") or ""
        word = unit.strip().split("'")[-1].split("’")[-1]
        if word.lower().startswith(("de ", "of ")):
            word = word.split(" ", 1)[1]
        strength = 1.0
        if unit and unit.strip() not in "%‰€$£" and not unit.strip().lower().startswith(("pour", "percent")):
            if _MONTH_WORD.match(word):
                continue  # « 2 février »: a date, not a quantity
            if fold(word) in stops or fold(word) in _NOT_UNITS or not word[:1].isalpha() or word[:1].isupper():
                unit = ""
        digits = re.sub(r"\D", "", core)
        is_year = not unit and bool(re.fullmatch(r"(?:1\d{3}|20\d{2})(?:\s?(?:[-–]|à|et|ou)\s?(?:1\d{3}|20\d{2}|\d{2}))?", core))
        if is_year:
            strength = 0.3  # « en 1994 » is a year, not a count
        if not unit and not digits:
            strength = min(strength, 0.6)  # a number in words with nothing after it
        end = m.start("unit") + len(unit.rstrip()) if unit else m.end("core")
        span = sentence[m.start("core") : end]
        found.append(Span(m.start("core"), end, span, _reply(span), strength))
    return found


_AGE_UNITS = re.compile(r"\b(?:ans?|mois|semaines?|jours?|years?|months?|weeks?|days?)\b", re.IGNORECASE)
_MONEY_WORDS = re.compile(
    r"[€$£¥]|\b(?:euros?|dollars?|francs?|livres?|yens?|yuans?|roubles?|pounds?|millions?|milliards?|billions?|centimes?)\b",
    re.IGNORECASE,
)
_NUMBER_WORD = re.compile(rf"\b(?:un|une|one|a|{_NUMBER_WORDS}|millions?|milliards?|billions?)\b", re.IGNORECASE)
_CAPITALISED_WORD = re.compile(r"(?<![\w'’-])[A-ZÀ-Þ][\wÀ-ÿ'’.-]*")


def fits_kind(kind: str, text: str) -> bool:
    """Can ``text`` (a short answer, as extracted) be an answer of ``kind``
    (:func:`qa.answering.questions.expected_kind`)? An age holds a number and a unit of time,
    a year a 3- or 4-digit number, a sum a currency, a scale word or a bare number, a date a date expression or a
    number, a quantity a number (digits or words), a name or a place a capitalised word; any text fits no kind."""
    digits = bool(re.search(r"\d", text))
    number = digits or bool(_NUMBER_WORD.search(text))
    if kind == "age":
        return number and bool(_AGE_UNITS.search(text))
    if kind == "year":
        return bool(re.search(r"(?<!\d)\d{3,4}(?!\d)", text))
    if kind == "money":
        return bool(_MONEY_WORDS.search(text)) or bool(re.fullmatch(r"[\d\s.,\u00a0\u202f]+", text))
    if kind == "date":
        return digits or bool(find_dates(text))
    if kind == "quantity":
        return number
    if kind in ("name", "place"):
        return bool(_CAPITALISED_WORD.search(text))
    return True


@lru_cache(maxsize=1)
def _stop_words() -> frozenset[str]:
    return stop_words() | {"et"}


# ---------------------------------------------------------------------------------------------------------------------
# People and places

# NER labels wanted by question type, best first (fr_core_news_sm: PER, LOC, ORG, MISC; others: PERSON, GPE…)
_ENTITY_LABELS = {"qui": (("PER", "PERSON"), ("ORG", "NORP")), "ou": (("LOC", "GPE", "FAC"), ())}


_LOCATIVE = re.compile(r"\b(?:à|au|aux|en|dans|vers|près de|de|d'|du|in|at|near|from)\s*$", re.IGNORECASE)

_CAPITALISED = re.compile(
    r"(?<![\w'’-])[A-ZÀ-ÖØ-Þ][\wÀ-ÿ'’.-]+(?:\s(?:(?:de|du|des|d'|la|le|von|van|der|di|da|el|al|bin)\s?)?[A-ZÀ-ÖØ-Þ][\wÀ-ÿ'’.-]+)*"
)


def regex_entities(sentence: str) -> list[tuple[int, int, str]]:
    """Capitalised word sequences not opening the sentence: a stand-in when spaCy is missing."""
    out = []
    for m in _CAPITALISED.finditer(sentence):
        if m.start() == 0 and " " not in m.group():
            continue
        out.append((m.start(), m.end(), "MISC"))
    return out


def find_entities(qtype: str, text: str, doc: Any = None) -> list[Span]:
    """People (``qtype="qui"``) or places (``"ou"``) of ``text``: the entities of ``doc``, its spaCy parse, or,
    without one, capitalised word runs (:func:`regex_entities`, weaker)."""
    if doc is None:
        return [Span(s, e, text[s:e], _reply(text[s:e]), 0.6) for s, e, _ in regex_entities(text)]
    labels_best, labels_fallback = _ENTITY_LABELS[qtype]
    out = []
    for ent in doc.ents:
        if ent.label_ in labels_best:
            strength = 1.0
        elif ent.label_ in labels_fallback:
            strength = 0.6
        else:
            continue
        core = ent.text.strip(" ,;:.«»\"'’")
        if not re.search(r"[^\W\d_]{2}", core):
            continue  # « J » of « J.-C. », stray symbols
        start = ent.start_char + ent.text.find(core)
        if qtype == "ou" and not _LOCATIVE.search(text, max(0, start - 12), start):
            strength -= 0.15  # a place is mostly introduced by « à », « en », « dans »…
        out.append(Span(start, start + len(core), core, _reply(core), strength))
    return out


# ---------------------------------------------------------------------------------------------------------------------
# The reply and the question


def year_only(span: Span) -> Span:
    """« 23 décembre 1847 » → « 1847 » for a question that asks for the year."""
    m = re.search(r"\b\d{3,4}\b", span.core)
    if not m or m.group() == span.core:
        return span
    start = span.start + m.start()
    return Span(start, start + len(m.group()), m.group(), _reply(f"en {m.group()}"), span.strength)


def _capitalise(text: str) -> str:
    return text[:1].upper() + text[1:] if text else text


def _reply(text: str) -> str:
    text = _capitalise(text.strip())
    return text if text.endswith((".", "!", "?", "…")) else text + "."


def in_question(span: str, question_folded: str, question_terms: set[str]) -> bool:
    """Is ``span`` already in the question: verbatim, every one of its terms, or every one of its names?"""
    f = fold(span).strip(" .,;:")
    if not f:
        return True
    if re.search(rf"(?<!\w){re.escape(f)}(?!\w)", question_folded):
        return True
    terms = set(analyze(span))
    if terms and terms <= question_terms:
        return True
    names = {t for w in re.findall(r"[\wÀ-ÿ]+", span) if w[:1].isupper() for t in word_terms(w)}
    return bool(names) and names <= question_terms


# ---------------------------------------------------------------------------------------------------------------------
# spaCy, loaded once per process

_NLP_LOCK = threading.Lock()
_NLP_CACHE: dict[str, Any] = {}
_SPACY_UNUSED = ("parser", "lemmatizer", "morphologizer", "attribute_ruler", "senter", "tagger")


def load_nlp(model: str = SPACY_MODEL) -> Any:
    """The spaCy pipeline (NER only), loaded on first use and shared by the whole process; None when unavailable."""
    with _NLP_LOCK:
        if model not in _NLP_CACHE:
            try:
                spacy = import_spacy()  # without torch, which thinc would import for nothing
                _NLP_CACHE[model] = spacy.load(model, exclude=list(_SPACY_UNUSED))
            except (ImportError, OSError):
                _NLP_CACHE[model] = None
        return _NLP_CACHE[model]
