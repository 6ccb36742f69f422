"""A French-aware text analyser for lexical matching (BM25, sentence overlap).

``analyze("L'ouverture des bureaux à Almaty")`` → ``['ouvertur', 'bureau', 'almaty']``:
lower case, elisions split (« l' », « d' », « qu' »…), stop words dropped
(the Snowball French list, question words, and English function words so that
English questions work too),
Snowball French stems (PyStemmer), accents folded last.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache
from typing import Any

_WORD = re.compile(r"\w+", re.UNICODE)
_ELISION = re.compile(r"\b(?:l|d|j|m|n|s|t|c|qu|jusqu|lorsqu|puisqu|quoiqu)['’]", re.IGNORECASE)
# Snowball's French stop list (snowballstem.org/algorithms/french/stop.txt), forms of
# « être » and « avoir », question words, and English function words.
_STOP = """
au aux avec ce ces dans de des du elle en et eux il ils je la le les leur lui ma mais me meme mes moi mon ne nos
notre nous on ou par pas pour qu que qui sa se ses son sur ta te tes toi ton tu un une vos votre vous c d j l a m n
s t y ete etee etees etes etant suis es est sommes sont serai seras sera serons serez seront serais serait serions
seriez seraient etais etait etions etiez etaient fus fut fumes futes furent sois soit soyons soyez soient fusse
fusses fut fussions fussiez fussent ayant eu eue eues eus ai as avons avez ont aurai auras aura aurons aurez auront
aurais aurait aurions auriez auraient avais avait avions aviez avaient eut eumes eutes eurent aie aies ait ayons
ayez aient eusse eusses eussions eussiez eussent ceci cela cet cette ici ils les leurs quel quels quelle quelles
sans soi quand ou combien comment pourquoi quoi lequel laquelle lesquels lesquelles dont
a an the of in on at to for from by with and or is are was were be been it its this that these those
what which who whom whose when where why how did do does has have had
"""
_STOP_WORDS = frozenset(_STOP.split())


def stop_words() -> frozenset[str]:
    """Accent-folded stop words."""
    return _STOP_WORDS


@lru_cache(maxsize=1)
def _stemmer() -> Any:
    import Stemmer

    return Stemmer.Stemmer("french")


def fold(text: str) -> str:
    """Lower case without accents: « Délégation » → « delegation »."""
    decomposed = unicodedata.normalize("NFKD", text.lower())
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def tokenize(text: str) -> list[str]:
    """Lower-cased words, elided articles removed (« l'UE » → « ue »)."""
    return _WORD.findall(_ELISION.sub(" ", text.lower()))


_fold_word = lru_cache(maxsize=200_000)(fold)


def analyze(text: str) -> list[str]:
    """Index terms of ``text``: tokens minus stop words, stemmed, accent-folded.

    Acronyms in capitals are never stop words (« EU » is not « eu », « ONU » stays).
    """
    stops = stop_words()
    acronyms = not text.isupper()  # a headline in capitals has no acronyms to tell apart
    words = [
        w.lower()
        for w in _WORD.findall(_ELISION.sub(" ", text))
        if (acronyms and len(w) > 1 and w.isupper()) or _fold_word(w) not in stops
    ]
    stems = _stemmer().stemWords(words)
    return [_fold_word(s) for s in stems]
