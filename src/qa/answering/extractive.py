"""The extractive answerer: the offline default, no LLM.

Every sentence of every retrieved passage is a candidate. A sentence scores by the
question terms it shares (``analyze`` terms weighted by their IDF over the candidate
sentences, names of the question weighted up: « Almaty » tells more than « ouvert »),
a little by its neighbours and by its passage's retrieval rank, and gets a bonus when
it holds what the question asks for (a date for « Quand », a person for « Qui », a
place for « Où », a quantity for « Combien »). The short answer is cut from the best
sentence: regular expressions for dates and quantities, spaCy's French NER (run on
the few top sentences only) for people and places. The quote is always a verbatim
slice of the passage.

The confidence is the IDF-weighted share of the question's terms that the best
sentence (and its neighbours) cover, lowered when the expected kind of answer is not
there; below ``min_confidence`` the answerer abstains.
"""

from __future__ import annotations

import math
import re
import threading
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from qa.analysis import analyze, fold, stop_words
from qa.chunking import split_sentences
from qa.schema import Answer, Citation, Passage

ABSTAIN_TEXT = "Je ne trouve pas cela dans le corpus."
_TYPED = ("quand", "qui", "ou", "combien")
SPACY_MODEL = "fr_core_news_sm"

# ---------------------------------------------------------------------------------------------------------------------
# Question type

_APOS = re.compile(r"[’‘`´]")
_PREP = (
    r"(?:et |mais |alors |donc |puis |ensuite |selon vous,? )?"
    r"(?:a |à |de |d'|par |pour |avec |contre |chez |sur |vers |en |dans |depuis |jusqu'|sous |entre |pendant |parmi "
    r"|au |aux |du |des )?"
)
_TIME_NOUNS = r"(?:annee|annees|date|dates|jour|jours|mois|siecle|siecles|epoque|periode|decennie|heure|an|saison)"
_PLACE_NOUNS = (
    r"(?:ville|villes|pays|region|regions|lieu|lieux|endroit|endroits|continent|departement|province|commune|village|"
    r"quartier|localite|territoire|etat|capitale|ile|iles|zone|site|cite|contree|emplacement|partie du monde)"
)
_QUANTITY_NOUNS = (
    r"(?:nombre|quantite|montant|somme|pourcentage|proportion|taux|population|age|prix|cout|superficie|effectif|total)"
)
_TYPE_RULES: list[tuple[str, re.Pattern[str]]] = [
    # English
    (
        "quand",
        re.compile(
            r"^(?:since |until |till |from )?when\b|^in what year\b"
            r"|\b(?:what|which) (?:year|date|day|month|century|decade|time)\b"
        ),
    ),
    ("ou", re.compile(r"^(?:from |to )?where\b|\b(?:what|which) (?:city|country|region|place|town|state|continent|village)\b")),
    ("combien", re.compile(r"^how (?:many|much|old|long|far|big|large)\b|\bwhat (?:percentage|number|amount|proportion)\b")),
    ("qui", re.compile(r"^(?:to |by |with |for |from |against )?(?:who|whom|whose)\b")),
    ("quel", re.compile(r"^(?:in |on |at |to |by |for |from |of |with )?(?:what|which)\b")),
    # French, the compound forms first
    ("quand", re.compile(rf"^{_PREP}quel(?:le)?s? {_TIME_NOUNS}\b|^{_PREP}quand\b|^a partir de quand\b|\bdate (?:de|d')")),
    ("quand", re.compile(rf"^quel(?:le)?s? (?:est|sont|etait|etaient|fut) (?:la |les |l')?{_TIME_NOUNS}\b")),
    ("ou", re.compile(rf"^{_PREP}quel(?:le)?s? {_PLACE_NOUNS}\b|^{_PREP}ouu\b|^d'ouu\b")),
    ("combien", re.compile(rf"^{_PREP}combien\b|^quel(?:le)?s? (?:est |sont |etait |fut )?(?:le |la |l')?{_QUANTITY_NOUNS}\b")),
    ("qui", re.compile(rf"^{_PREP}qui\b|^qui (?:est|sont|etait|fut)\b")),
    (
        "quel",
        re.compile(
            rf"^{_PREP}(?:quel|quelle|quels|quelles|lequel|laquelle|lesquels|lesquelles|auquel|auxquels|auxquelles|duquel|desquels)\b"
        ),
    ),
    # inverted forms: the question word last (« Il est né où ? », « Le bureau a ouvert quand ? »)
    ("quand", re.compile(r"\b(?:quand|en quelle annee) \?$")),
    ("ou", re.compile(r"\bouu \?$")),
    ("combien", re.compile(r"\bcombien(?: de \w+)? \?$")),
    ("qui", re.compile(r"\bqui \?$")),
    ("quel", re.compile(r"\b(?:quel|quelle|quels|quelles|lequel|laquelle)\b")),
    # a question word inside the sentence (« Et en quelle année … », « Le bureau a-t-il ouvert en quelle année ? »)
    ("quand", re.compile(rf"\b(?:en|a|de|depuis) quel(?:le)?s? {_TIME_NOUNS}\b|\bquand\b")),
    ("combien", re.compile(r"\bcombien\b")),
]


def question_type(question: str) -> str:
    """``"quand" | "qui" | "ou" | "combien" | "quel" | "other"``, for French and English questions."""
    q = _APOS.sub("'", question.strip().lower())
    q = re.sub(r"\s+", " ", q)
    q = re.sub(r"^[«\"“(\s¿¡-]+", "", q)
    q = re.sub(r"[\s»\"”)]*\?*[\s»\"”)]*$", "", q) + " ?"
    # « où » and the conjunction « ou » fold alike: « où » reads « ouu »; a bare « ou » first or last is taken for « où »
    q = re.sub(r"(?<!\w)où(?!\w)", "ouu", q)
    q = re.sub(r"^(d'|par )?ou\b", r"\1ouu", q)
    q = re.sub(r"\bou \?$", "ouu ?", q)
    folded = fold(q).replace("œ", "oe")
    for kind, pattern in _TYPE_RULES:
        if pattern.search(folded):
            if kind == "qui" and re.match(r"^(?:qu'est-ce|qu'est ce|ce|celui|celle|ceux|est-ce) qui\b", folded):
                continue
            return kind
    return "other"


# ---------------------------------------------------------------------------------------------------------------------
# Answer spans: dates, quantities, entities

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

# NER labels wanted by question type, best first (fr_core_news_sm: PER, LOC, ORG, MISC; others: PERSON, GPE…)
_ENTITY_LABELS = {"qui": (("PER", "PERSON"), ("ORG", "NORP")), "ou": (("LOC", "GPE", "FAC"), ())}


_LOCATIVE = re.compile(r"\b(?:à|au|aux|en|dans|vers|près de|de|d'|du|in|at|near|from)\s*$", re.IGNORECASE)


@dataclass
class Span:
    """A short answer found in a sentence: ``core`` at ``sentence[start:end]``, ``reply`` the French phrasing."""

    start: int
    end: int
    core: str
    reply: str
    strength: float = 1.0
    """1 for a clear answer of the expected kind, less for a fallback (an ORG for « Qui », a bare year)."""


_ASKS_YEAR = re.compile(r"\b(?:quel(?:le)?s? annee|what year|which year|in what year)\b|\bannee\b.*\?$")
_COUNTED_NOUN = re.compile(r"\b(?:combien (?:de |d')|how many )(\w+)")
_TIME_UNITS = frozenset(analyze("ans années mois jours semaines heures minutes secondes siècles décennies saisons"))
_DEFINITION = re.compile(
    r"^(?i:qui|who) (?i:est|était|etait|sont|étaient|fut|is|was|are|were) (?!l[ea]s? |l'|un |une |the |a |an )[A-ZÀ-Þ]"
)


def _year_only(span: Span) -> Span:
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


def _in_question(span: str, question_folded: str, question_terms: set[str]) -> bool:
    """Is ``span`` already in the question: verbatim, every one of its terms, or every one of its names?"""
    f = fold(span).strip(" .,;:")
    if not f:
        return True
    if re.search(rf"(?<!\w){re.escape(f)}(?!\w)", question_folded):
        return True
    terms = set(analyze(span))
    if terms and terms <= question_terms:
        return True
    names = {t for w in re.findall(r"[\wÀ-ÿ]+", span) if w[:1].isupper() for t in _word_terms(w)}
    return bool(names) and names <= question_terms


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


@lru_cache(maxsize=1)
def _stop_words() -> frozenset[str]:
    return stop_words() | {"et"}


_CAPITALISED = re.compile(
    r"(?<![\w'’-])[A-ZÀ-ÖØ-Þ][\wÀ-ÿ'’.-]+(?:\s(?:(?:de|du|des|d'|la|le|von|van|der|di|da|el|al|bin)\s?)?[A-ZÀ-ÖØ-Þ][\wÀ-ÿ'’.-]+)*"
)


def _regex_entities(sentence: str) -> list[tuple[int, int, str]]:
    """Capitalised word sequences not opening the sentence: a stand-in when spaCy is missing."""
    out = []
    for m in _CAPITALISED.finditer(sentence):
        if m.start() == 0 and " " not in m.group():
            continue
        out.append((m.start(), m.end(), "MISC"))
    return out


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
                import spacy

                _NLP_CACHE[model] = spacy.load(model, exclude=list(_SPACY_UNUSED))
            except (ImportError, OSError):
                _NLP_CACHE[model] = None
        return _NLP_CACHE[model]


# ---------------------------------------------------------------------------------------------------------------------
# Scoring


@dataclass
class ScoredSentence:
    """A candidate sentence: ``passages[passage_index].text[start:end]`` and how it scored."""

    passage_index: int
    start: int
    end: int
    text: str
    score: float = 0.0
    """Ranking score: coverage, plus neighbours, answer type and retrieval prior."""
    coverage: float = 0.0
    """IDF-weighted share of the question's terms found in the sentence."""
    context_coverage: float = 0.0
    """The same over the sentence and its two neighbours."""
    matched: list[str] = field(default_factory=list)
    answer: Span | None = None
    typed: bool = False
    """Whether the answer-type check ran on this sentence."""


@dataclass
class _Candidate:
    passage_index: int
    order: int
    start: int
    end: int
    text: str
    terms: set[str]


class ExtractiveAnswerer:
    """Answers by quoting the passage sentence that best matches the question."""

    name = "extractive"

    # weights, tuned on PIAF (3,835 questions; the gold paragraph alone and among 4 others)
    NAME_WEIGHT = 1.5
    """Question terms written with a capital (names, acronyms) count this much more."""
    PREFIX_CREDIT = 0.5
    """A term that only shares its first 5 letters with a sentence term counts this much."""
    ENGLISH_WEIGHT = 0.3
    """In an English question, words other than names count this much (French passages rarely share them)."""
    CONTEXT_WEIGHT = 0.25
    TYPE_BONUS = 0.2
    RANK_DECAY = 0.03
    PASSAGE_WEIGHT = 0.8
    """The retrieval score of a sentence's passage (relative to the best passage's) adds this much: which passage
    the retriever ranks first is evidence the sentence's words alone miss (PIAF, 1,279 questions, hybrid top 5:
    the quote holds the answer 52.9 % → 55.9 %, the quote comes from the right paragraph 69.8 % → 75.2 %)."""
    PROXIMITY_NAME = 0.5
    """When choosing among several answers in a sentence, nearness to the question's names counts this much."""
    CALIBRATION = (6.58, -2.03)
    """Logistic mapping of the evidence to a probability (fitted on PIAF)."""
    SECOND_CITATION = 0.9
    """Cite the best sentence of another passage too when it scores this close (only when there is no short answer)."""
    TYPED_SENTENCES = 4
    """How many top sentences are checked for a date or a quantity (regular expressions, cheap)."""
    NER_SENTENCES = 3
    """How many top sentences spaCy reads for a person or a place (~10 ms each on one core)."""
    DOC_CACHE = 512

    def __init__(self, *, min_confidence: float = 0.35, nlp: Any = None) -> None:
        self.min_confidence = min_confidence
        self._nlp = nlp
        self._docs: dict[str, Any] = {}
        self._lock = threading.Lock()

    @property
    def nlp(self) -> Any:
        """The spaCy pipeline (loaded on first use); None when spaCy or its French model is missing, or ``nlp=False``."""
        if self._nlp is None:
            self._nlp = load_nlp() or False
        return None if self._nlp is False else self._nlp

    # -- public ---------------------------------------------------------------------------------------------------

    def answer(self, question: str, passages: list[Passage]) -> Answer:
        passages = list(passages)
        ranked, qinfo = self._rank(question, passages)
        if not ranked:
            return self._abstain(question, passages, 0.0)
        best = ranked[0]
        confidence = self._confidence(best, qinfo)
        if confidence < self.min_confidence:
            return self._abstain(question, passages, confidence)
        citations = [self._cite(best, passages)]
        if best.answer is not None:
            text, short = best.answer.reply, best.answer.core
        else:
            text, short = best.text, ""
            runner_up = next((s for s in ranked[1:] if s.passage_index != best.passage_index), None)
            if runner_up is not None and runner_up.score > 0 and runner_up.score >= self.SECOND_CITATION * best.score:
                citations.append(self._cite(runner_up, passages))
        return Answer(
            text=text,
            citations=citations,
            passages=passages,
            abstained=False,
            confidence=round(confidence, 4),
            short_answer=short,
            question=question,
        )

    def score_sentences(self, question: str, passages: list[Passage]) -> list[ScoredSentence]:
        """Every candidate sentence, best first (the top ones checked for the answer type)."""
        return self._rank(question, list(passages))[0]

    # -- internals ------------------------------------------------------------------------------------------------

    def _abstain(self, question: str, passages: list[Passage], confidence: float) -> Answer:
        return Answer(
            text=ABSTAIN_TEXT,
            citations=[],
            passages=passages,
            abstained=True,
            confidence=round(max(0.0, min(1.0, confidence)), 4),
            question=question,
        )

    @staticmethod
    def _cite(sentence: ScoredSentence, passages: list[Passage]) -> Citation:
        passage = passages[sentence.passage_index]
        return Citation(
            passage=passage, quote=passage.text[sentence.start : sentence.end], start=sentence.start, end=sentence.end
        )

    def _rank(self, question: str, passages: list[Passage]) -> tuple[list[ScoredSentence], dict[str, Any]]:
        qtype = question_type(question)
        q_terms = _question_terms(question, self.NAME_WEIGHT, self.ENGLISH_WEIGHT)
        qinfo: dict[str, Any] = {"type": qtype, "terms": q_terms, "total": 0.0}
        candidates: list[_Candidate] = []
        for pi, passage in enumerate(passages):
            for order, (s, e) in enumerate(split_sentences(passage.text)):
                e = _trim_tail(passage.text, s, e)
                text = passage.text[s:e]
                candidates.append(_Candidate(pi, order, s, e, text, set(analyze(text))))
        if not candidates:
            return [], qinfo

        n = len(candidates)
        df: dict[str, int] = {}
        for c in candidates:
            for t in c.terms:
                df[t] = df.get(t, 0) + 1
        weights = {t: _idf(df.get(t, 0), n) * factor for t, factor in q_terms.items()}
        total = sum(weights.values())
        qinfo["total"] = total
        qinfo["weights"] = weights
        prefixes = {t: t[:5] for t in q_terms if len(t) >= 5}

        raw: list[tuple[float, list[str]]] = []
        for c in candidates:
            got = 0.0
            matched = []
            for t, w in weights.items():
                if t in c.terms:
                    got += w
                    matched.append(t)
                elif t in prefixes and any(u.startswith(prefixes[t]) for u in c.terms):
                    got += w * self.PREFIX_CREDIT
                    matched.append(t)
            raw.append((got / total if total else 0.0, matched))

        scores = [p.score for p in passages]
        top_score = max(scores) if scores else 0.0
        ranked: list[ScoredSentence] = []
        for i, c in enumerate(candidates):
            cov, matched = raw[i]
            neighbours = [raw[j][0] for j in (i - 1, i + 1) if 0 <= j < n and candidates[j].passage_index == c.passage_index]
            context = _context_coverage(i, candidates, weights, total)
            prior = 1.0 / (1.0 + self.RANK_DECAY * c.passage_index)
            if top_score > 0 and scores[c.passage_index] > 0:
                prior *= 0.9 + 0.1 * scores[c.passage_index] / top_score
            score = (cov + self.CONTEXT_WEIGHT * max(neighbours, default=0.0)) * prior
            if top_score > 0:
                score += self.PASSAGE_WEIGHT * max(scores[c.passage_index], 0.0) / top_score
            ranked.append(ScoredSentence(c.passage_index, c.start, c.end, c.text, score, cov, context, matched))
        ranked.sort(key=lambda s: (-s.score, s.passage_index, s.start))

        if qtype in _TYPED:
            names = {t for t, factor in q_terms.items() if factor == self.NAME_WEIGHT}
            limit = self.NER_SENTENCES if qtype in ("qui", "ou") else self.TYPED_SENTENCES
            top = [s for s in ranked[:limit] if s is ranked[0] or s.score >= ranked[0].score * 0.5]
            docs: dict[str, Any] = {}
            if qtype in ("qui", "ou") and self.nlp is not None:
                texts = [s.text for s in top]
                docs = dict(zip(texts, self._parse(texts), strict=True))
            for s in top:
                s.typed = True
                s.answer = self._find_answer(qtype, s, question, weights, names, docs.get(s.text))
                if s.answer is not None:
                    s.score += self.TYPE_BONUS * s.answer.strength
            ranked.sort(key=lambda s: (-s.score, s.passage_index, s.start))
        return ranked, qinfo

    def _find_answer(
        self, qtype: str, sentence: ScoredSentence, question: str, weights: dict[str, float], names: set[str], doc: Any = None
    ) -> Span | None:
        text = sentence.text
        q = _APOS.sub("'", question.strip())
        q_folded = fold(q)
        if qtype == "quand":
            spans = find_dates(text)
            if _ASKS_YEAR.search(q_folded):
                spans = [_year_only(s) for s in spans]
        elif qtype == "combien":
            spans = find_quantities(text)
            noun = _COUNTED_NOUN.search(q_folded)
            if noun:
                wanted = set(_word_terms(noun.group(1))) | (_TIME_UNITS if fold(noun.group(1)) == "temps" else set())
                for sp in spans:
                    unit_terms = set(analyze(sp.core))
                    if unit_terms & wanted or any(u[:4] == w[:4] for u in unit_terms for w in wanted if len(w) >= 4):
                        sp.strength += 0.3
        else:
            if qtype == "qui" and _DEFINITION.match(q):
                return None  # « Qui est Maria Kirilenko ? » asks for a description, not a name
            spans = self._entities(qtype, text, doc)
        spans = [s for s in spans if not _in_question(s.core, q_folded, set(weights))]
        if not spans:
            return None
        positions = _term_positions(text, set(sentence.matched))
        # the answer sits next to what is said of the subject (the verb, the rare words) more than next to the subject's name
        near = {t: weights.get(t, 0.0) * (self.PROXIMITY_NAME if t in names else 1.0) for t in positions}
        total = sum(near.values()) or 1.0

        def proximity(span: Span) -> float:
            score = 0.0
            for t, spots in positions.items():
                d = min(max(a - span.end, span.start - b, 0) for a, b in spots)
                score += near[t] * math.exp(-d / 40.0)
            return score / total

        return max(spans, key=lambda s: (s.strength + 0.3 * proximity(s), -s.start))

    def _entities(self, qtype: str, text: str, doc: Any = None) -> list[Span]:
        nlp = self.nlp
        labels_best, labels_fallback = _ENTITY_LABELS[qtype]
        if nlp is None:
            ents = _regex_entities(text)
            return [Span(s, e, text[s:e], _reply(text[s:e]), 0.6) for s, e, _ in ents]
        if doc is None:
            doc = self._parse([text])[0]
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

    def _parse(self, texts: list[str]) -> list[Any]:
        """spaCy docs of ``texts``, from a small cache (follow-up questions reuse the same passages)."""
        with self._lock:
            docs = {t: self._docs[t] for t in texts if t in self._docs}
        missing = [t for t in dict.fromkeys(texts) if t not in docs]
        if missing:
            docs.update(zip(missing, self.nlp.pipe(missing), strict=True))
            with self._lock:
                self._docs.update(docs)
                while len(self._docs) > self.DOC_CACHE:
                    self._docs.pop(next(iter(self._docs)))
        return [docs[t] for t in texts]

    def _confidence(self, best: ScoredSentence, qinfo: dict[str, Any]) -> float:
        """In [0, 1]: an estimate of the probability that the passages hold the answer.

        The evidence is how much of the question (IDF-weighted) the best sentence covers, with its neighbours,
        lowered when a « Quand / Qui / Où / Combien » question finds no answer of its kind; it is mapped to a
        probability by a logistic fitted on PIAF (gold paragraph among others of its article, versus the other
        paragraphs of the article without it). No question term in the passages gives 0.
        """
        if not qinfo["terms"] or qinfo["total"] <= 0 or best.context_coverage <= 0:
            return 0.0
        evidence = 0.7 * best.coverage + 0.3 * best.context_coverage
        if qinfo["type"] in _TYPED:
            evidence *= 1.0 if best.answer is not None else 0.75
        return 1.0 / (1.0 + math.exp(-(self.CALIBRATION[0] * evidence + self.CALIBRATION[1])))


_SOCIAL_TAIL = re.compile(r"(?<=[.!?…»])(?:\s+(?:#\w+|@\w+|pic\.twitter\.com/\S+|https?://\S+|www\.\S+))+\s*$")


def _trim_tail(text: str, start: int, end: int) -> int:
    """End of the sentence without a trailing run of hashtags, mentions and links (« … à Almaty. #EUinKZ pic.twitter.com/… »)."""
    m = _SOCIAL_TAIL.search(text, start, end)
    return m.start() if m else end


def _idf(df: int, n: int) -> float:
    return math.log(1.0 + (n - df + 0.5) / (df + 0.5))


_QUESTION_NOISE = frozenset({"many", "much", "combien", "quel"})
_ENGLISH_MARKERS = frozenset("the did does do is was were are what when who whom whose where which how many much of in".split())
_FRENCH_MARKERS = frozenset(
    "le la les des du de est sont qui que quel quelle quels quelles quand où combien comment pourquoi".split()
)
# acronyms that differ between English questions and French passages
_ACRONYMS_EN_FR = {"eu": "ue", "un": "onu", "nato": "otan", "who": "oms", "imf": "fmi", "wto": "omc", "ecb": "bce", "us": "usa"}


def is_english(question: str) -> bool:
    """Is the question in English (more English than French function words)?"""
    words = re.findall(r"[\wÀ-ÿ]+", question.lower())
    en = sum(w in _ENGLISH_MARKERS for w in words)
    return en > 0 and en > sum(w in _FRENCH_MARKERS for w in words)


def _question_terms(question: str, name_weight: float, english_weight: float) -> dict[str, float]:
    """The question's analysed terms and their weight factor: names (capitalised words, acronyms) count more;
    in an English question the other words, which French passages will not share, count less."""
    english = is_english(question)
    names: set[str] = set()
    for m in re.finditer(r"[\wÀ-ÿ]+", question):
        word = m.group()
        if word[:1].isupper():
            names.update(_word_terms(word))
    terms: dict[str, float] = {}
    for t in analyze(question):
        if t in _QUESTION_NOISE:
            continue
        if english and t in names and t in _ACRONYMS_EN_FR:
            t = _ACRONYMS_EN_FR[t]
            names.add(t)
        terms.setdefault(t, name_weight if t in names else (english_weight if english else 1.0))
    return terms


@lru_cache(maxsize=65536)
def _word_terms(word: str) -> tuple[str, ...]:
    terms = analyze(word)
    if not terms and len(word) > 1 and word.isupper():
        terms = [fold(word)]
    return tuple(terms)


def _term_positions(text: str, terms: set[str]) -> dict[str, list[tuple[int, int]]]:
    """Where each of ``terms`` occurs in ``text``."""
    out: dict[str, list[tuple[int, int]]] = {}
    if terms:
        for m in re.finditer(r"[\wÀ-ÿ]+", text):
            for t in _word_terms(m.group()):
                if t in terms:
                    out.setdefault(t, []).append((m.start(), m.end()))
    return out


def _context_coverage(i: int, candidates: list[_Candidate], weights: dict[str, float], total: float) -> float:
    if not total:
        return 0.0
    c = candidates[i]
    terms = set(c.terms)
    for j in (i - 1, i + 1):
        if 0 <= j < len(candidates) and candidates[j].passage_index == c.passage_index:
            terms |= candidates[j].terms
    return sum(w for t, w in weights.items() if t in terms) / total
