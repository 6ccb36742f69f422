"""Question typing: what a question asks for, and its terms.

:func:`question_type` reads French and English questions (« Quand… », « En quelle année… », « Il est né où ? »,
« When… », « How many… ») into ``quand | qui | ou | combien | quel | other``; :func:`question_terms` gives the
question's analysed terms with their weight factor (names count more, an English question's other words less);
the small predicates below read what a typed question wants (a year, a counted noun, a description).
"""

from __future__ import annotations

import re
from functools import lru_cache

from qa.analysis import analyze, fold
from qa.answering.text import straight_apostrophes

__all__ = [
    "TYPED",
    "asks_definition",
    "asks_year",
    "counted_terms",
    "is_english",
    "question_terms",
    "question_type",
    "word_terms",
]

TYPED = ("quand", "qui", "ou", "combien")
"""The question types whose answer is a short span of a kind (a date, a person, a place, a quantity)."""

# ---------------------------------------------------------------------------------------------------------------------
# Question type: the French and English question-word tables

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
    q = straight_apostrophes(question.strip().lower())
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
# Question terms

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


def question_terms(question: str, name_weight: float, english_weight: float) -> dict[str, float]:
    """The question's analysed terms and their weight factor: names (capitalised words, acronyms) count more;
    in an English question the other words, which French passages will not share, count less."""
    english = is_english(question)
    names: set[str] = set()
    for m in re.finditer(r"[\wÀ-ÿ]+", question):
        word = m.group()
        if word[:1].isupper():
            names.update(word_terms(word))
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
def word_terms(word: str) -> tuple[str, ...]:
    """The analysed terms of one word; an all-capitals word analysis drops (« UN », the United Nations) kept folded."""
    terms = analyze(word)
    if not terms and len(word) > 1 and word.isupper():
        terms = [fold(word)]
    return tuple(terms)


# ---------------------------------------------------------------------------------------------------------------------
# What a typed question wants

_ASKS_YEAR = re.compile(r"\b(?:quel(?:le)?s? annee|what year|which year|in what year)\b|\bannee\b.*\?$")
_COUNTED_NOUN = re.compile(r"\b(?:combien (?:de |d')|how many )(\w+)")
_TIME_UNITS = frozenset(analyze("ans années mois jours semaines heures minutes secondes siècles décennies saisons"))
_DEFINITION = re.compile(
    r"^(?i:qui|who) (?i:est|était|etait|sont|étaient|fut|is|was|are|were) (?!l[ea]s? |l'|un |une |the |a |an )[A-ZÀ-Þ]"
)


def asks_year(question_folded: str) -> bool:
    """Does the (folded) « Quand » question ask for the year alone (« En quelle année… », « What year… »)?"""
    return bool(_ASKS_YEAR.search(question_folded))


def counted_terms(question_folded: str) -> set[str]:
    """The terms of the noun a (folded) « Combien de … » / « How many … » question counts; empty when there is none.

    « Combien de temps » counts time units (« ans », « mois », …).
    """
    noun = _COUNTED_NOUN.search(question_folded)
    if not noun:
        return set()
    return set(word_terms(noun.group(1))) | (_TIME_UNITS if fold(noun.group(1)) == "temps" else set())


_AGE_Q = re.compile(r"\b(?:quel age|a quel age|what age|how old)\b")
_YEAR_Q = re.compile(r"\b(?:quelle annee|quelles annees|what year|which year)\b")
_MONEY_Q = re.compile(
    r"\b(?:cout|couts|prix|montant|salaire|amende|budget|combien d'euros|combien de dollars|how much money"
    r"|combien\b.{0,40}\b(?:paye|payee|payes|coute|coutent|coutait|rapporte|verse|versee|touche|gagne|estime|estimee))\b"
)
_NAME_Q = re.compile(
    r"\b(?:comment s'appel\w*|comment se nomm\w*|quel(?:le)?s? (?:est|etait|sont) (?:le|son|leur|les) (?:nom|prenom)s?"
    r"|quel(?:s)? (?:nom|prenom)s?|what (?:is|was) (?:the|his|her|its|their) name)\b"
)
_KIND_OF_TYPE = {"quand": "date", "combien": "quantity", "ou": "place"}
STRICT_KINDS = frozenset({"age", "year", "money", "name"})
"""The kinds whose answer can be of no other kind (an age is a number of years, a name is capitalised): the reading
answerer abstains rather than quote an answer of another kind. A date, a quantity or a place may be phrased
otherwise (« à la Renaissance », « la moitié », « dans le nord »)."""


def expected_kind(question: str) -> str:
    """The kind of short answer the question wants: ``"age"``, ``"year"``, ``"money"``, ``"name"`` (« Comment
    s'appelle… », « Quel est le nom… »), ``"date"``, ``"quantity"``, ``"place"``; ``""`` when it names none (« Quel…
    », « Qui… »: a name or a description, « Pourquoi… »). See :func:`qa.answering.spans.fits_kind`."""
    folded = fold(straight_apostrophes(question.lower()))
    for kind, pattern in (("age", _AGE_Q), ("year", _YEAR_Q), ("money", _MONEY_Q), ("name", _NAME_Q)):
        if pattern.search(folded):
            return kind
    return _KIND_OF_TYPE.get(question_type(question), "")


def asks_definition(question: str) -> bool:
    """« Qui est Maria Kirilenko ? » asks for a description, not a name (``question`` stripped, apostrophes straight)."""
    return bool(_DEFINITION.match(question))
