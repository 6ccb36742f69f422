"""LLM answerers (opt-in): a LangChain chat model writes the answer, ``qa`` makes its citations honest.

``QA_ANSWERER`` picks the model (see :func:`parse_answerer`):

* ``openai:<model>`` — OpenAI, or any OpenAI-compatible server at ``QA_LLM_BASE_URL``
  (llama.cpp ``llama-server``, vLLM, LM Studio, Ollama's ``/v1``); ``langchain-openai``;
* ``ollama:<model>`` — an Ollama server (``QA_LLM_BASE_URL``, default ``http://localhost:11434``);
  ``langchain-ollama``;
* ``llamacpp:<path/to/model.gguf>`` — a local GGUF file run in-process by ``llama-cpp-python``
  (``pip install 'qa[llamacpp]'``), through a small adapter (no ``langchain-community``).

Every backend is imported inside its branch: importing this module is cheap.

How an answer is built (:class:`LLMAnswerer`):

1. :func:`build_messages`: a French system prompt (answer only from the numbered
   passages, briefly, in the question's language, cite ``[n]`` after each claim, or
   reply exactly « Je ne trouve pas cela dans le corpus. »), the passages ``[1]..[n]``
   with title and date, the previous turns, the question.
2. The reply's ``<think>…</think>`` blocks (reasoning models) are dropped. A refusal
   (« Je ne trouve pas … dans le corpus », small variations, or the English equivalent)
   that cites nothing gives ``abstained=True`` and no citations.
3. Citation markers ``[1]``, ``[1, 3]``, ``[1-3]``, ``[1][2]``, ``[Passage 2]``, ``【2】`` are
   parsed; numbers that name no passage (``[7]`` with 5 passages) are dropped — from the
   citations *and* from ``Answer.text`` — duplicates are merged, first-cited first.
   The valid markers stay in ``Answer.text`` as the model wrote them and are never
   renumbered: ``[n]`` in the text is ``Answer.passages[n - 1]`` (``Answer.passages`` is
   exactly the list of passages given, in order).
4. For each cited passage the quote is chosen, never written: the sentence of the passage
   (:func:`qa.chunking.split_sentences`) sharing the most (IDF-weighted :func:`qa.analysis.analyze`)
   terms with the claim the marker closes (the words before it in its sentence, then the
   whole answer sentence), the question breaking ties; an adjacent sentence is added when
   it brings at least two more of the claim's terms. ``Citation.quote`` is always
   ``passage.text[start:end]``.
5. A reply that cites nothing valid takes the ``fallback`` answerer's citations (the
   extractive answerer), the LLM's text kept.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator, Sequence
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qa.analysis import analyze, fold
from qa.answering.text import REFUSAL, History, document_frequencies, idf, trim_social_tail
from qa.chunking import split_sentences
from qa.errors import ConfigError, QAError
from qa.schema import Answer, Citation, Passage

if TYPE_CHECKING:
    from langchain_core.language_models import BaseChatModel
    from langchain_core.messages import BaseMessage

__all__ = [
    "LLMAnswerer",
    "LLMError",
    "PROVIDERS",
    "build_messages",
    "cited_numbers",
    "is_refusal",
    "make_chat_model",
    "make_llm_answerer",
    "parse_answerer",
]

PROVIDERS = ("openai", "ollama", "llamacpp")
EXTRACTIVE_STAGES = ("extractive:lexical", "extractive:reader", "extractive:combined")
_ACCEPTED = (
    "'extractive', 'openai:<model>' (OpenAI, or an OpenAI-compatible server at QA_LLM_BASE_URL), "
    "'ollama:<model>' or 'llamacpp:<path/to/model.gguf>'"
)
DEFAULT_OLLAMA_URL = "http://localhost:11434"

Fallback = Callable[[str, list[Passage]], Answer]


class LLMError(QAError):
    """The language model could not be reached or failed to answer."""


# --------------------------------------------------------------------------- specs and models


def parse_answerer(spec: str) -> tuple[str, str]:
    """``"openai:gpt-4o-mini"`` → ``("openai", "gpt-4o-mini")``; ``"extractive"`` → ``("extractive", "")``.

    The provider is case-insensitive; the model part is kept verbatim (a path may hold ``:``).
    """
    text = (spec or "").strip()
    if text.lower() == "extractive":
        return "extractive", ""
    if text.lower() in EXTRACTIVE_STAGES:  # one stage of the reading answerer alone (``qa eval``)
        return "extractive", text.lower().partition(":")[2]
    provider, sep, model = text.partition(":")
    provider = provider.strip().lower().replace(".", "").replace("-", "").replace("_", "")  # llama.cpp, llama-cpp
    model = model.strip()
    if not sep or provider not in PROVIDERS or not model:
        why = "no model named after the provider" if sep and provider in PROVIDERS else "unknown answerer"
        raise ConfigError(f"QA_ANSWERER={spec!r} is not valid ({why}): use {_ACCEPTED}")
    return provider, model


def make_chat_model(
    spec: str,
    *,
    base_url: str | None = None,
    api_key: str | None = None,
    temperature: float = 0.0,
    timeout: float = 60.0,
    max_retries: int = 1,
) -> BaseChatModel:
    """The LangChain chat model named by ``spec`` (``QA_ANSWERER``); see the module docstring.

    Nothing is contacted here; a server that is down shows up as :class:`LLMError` on the
    first question.
    """
    provider, model = parse_answerer(spec)
    if provider == "extractive":
        raise ConfigError(f"QA_ANSWERER={spec!r} is the extractive answerer, not a language model: use {_ACCEPTED}")
    if provider == "openai":
        return _openai(model, base_url, api_key, temperature, timeout, max_retries)
    if provider == "ollama":
        return _ollama(model, base_url, temperature, timeout)
    return _llamacpp(model, temperature)


def _openai(
    model: str, base_url: str | None, api_key: str | None, temperature: float, timeout: float, retries: int
) -> BaseChatModel:
    url = base_url or os.environ.get("OPENAI_BASE_URL") or os.environ.get("OPENAI_API_BASE") or None
    key = api_key or os.environ.get("OPENAI_API_KEY") or ("not-needed" if url else None)
    if not key:
        raise ConfigError(
            f"QA_ANSWERER=openai:{model} needs an API key: set QA_LLM_API_KEY (or OPENAI_API_KEY), "
            "or set QA_LLM_BASE_URL to a local OpenAI-compatible server (llama.cpp, vLLM, LM Studio, Ollama's /v1)"
        )
    try:
        from langchain_openai import ChatOpenAI
    except ImportError:  # pragma: no cover - a declared dependency
        raise ConfigError("QA_ANSWERER=openai:… needs langchain-openai: pip install langchain-openai") from None
    from pydantic import SecretStr  # what ChatOpenAI makes of a str key anyway

    return ChatOpenAI(
        model=model, base_url=url, api_key=SecretStr(key), temperature=temperature, timeout=timeout, max_retries=retries
    )


def _ollama(model: str, base_url: str | None, temperature: float, timeout: float):
    try:
        from langchain_ollama import ChatOllama
    except ImportError:  # pragma: no cover - a declared dependency
        raise ConfigError("QA_ANSWERER=ollama:… needs langchain-ollama: pip install langchain-ollama") from None
    url = (base_url or os.environ.get("OLLAMA_HOST") or DEFAULT_OLLAMA_URL).rstrip("/")
    url = re.sub(r"/v1$", "", url)  # the OpenAI-compatible URL of the same server
    if not re.match(r"https?://", url):
        url = "http://" + url  # OLLAMA_HOST may be a bare host:port
    return ChatOllama(model=model, base_url=url, temperature=temperature, client_kwargs={"timeout": timeout})


def _llamacpp(model_path: str, temperature: float):
    path = Path(model_path).expanduser()
    if not path.is_file():
        what = "is a directory, not a .gguf file" if path.is_dir() else "does not exist"
        raise ConfigError(f"QA_ANSWERER=llamacpp:{model_path}: {path} {what}; give the path of a local .gguf model")
    try:
        import llama_cpp
    except ImportError:
        raise ConfigError(f"QA_ANSWERER=llamacpp:{model_path} needs llama-cpp-python: pip install 'qa[llamacpp]'") from None
    try:
        # rope_freq_base=0.0 (llama-cpp-python's default): use the value stored in the GGUF
        llama = llama_cpp.Llama(model_path=str(path), n_ctx=4096, rope_freq_base=0.0, verbose=False)
    except Exception as exc:  # a corrupt or unsupported file
        raise ConfigError(f"QA_ANSWERER=llamacpp:{model_path}: cannot load {path} with llama-cpp-python: {exc}") from exc
    return llamacpp_chat_model(llama, model_name=path.name, temperature=temperature)


def llamacpp_chat_model(llama: Any, *, model_name: str = "gguf", temperature: float = 0.0, max_tokens: int = 512):
    """Wrap a ``llama_cpp.Llama`` (anything with ``create_chat_completion``) as a LangChain chat model."""
    return _llamacpp_class()(client=llama, model_name=model_name, temperature=temperature, max_tokens=max_tokens)


@cache
def _llamacpp_class() -> type:
    from langchain_core.language_models import BaseChatModel
    from langchain_core.messages import AIMessage, AIMessageChunk
    from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
    from pydantic import Field

    roles = {"system": "system", "human": "user", "ai": "assistant", "tool": "tool"}

    class LlamaCppChatModel(BaseChatModel):
        """``llama_cpp.Llama.create_chat_completion`` behind the LangChain chat-model interface."""

        client: Any = Field(exclude=True)
        model_name: str = "gguf"
        temperature: float = 0.0
        max_tokens: int = 512

        @property
        def _llm_type(self) -> str:
            return "llamacpp"

        @property
        def _identifying_params(self) -> dict[str, Any]:
            return {"model_name": self.model_name, "temperature": self.temperature, "max_tokens": self.max_tokens}

        def _request(self, messages: list[BaseMessage], stop: list[str] | None) -> dict[str, Any]:
            return {
                "messages": [{"role": roles.get(m.type, "user"), "content": str(m.text)} for m in messages],
                "temperature": self.temperature,
                "max_tokens": self.max_tokens,
                "stop": stop or [],
            }

        def _generate(self, messages, stop=None, run_manager=None, **kwargs: Any) -> ChatResult:
            out = self.client.create_chat_completion(**self._request(messages, stop))
            text = (out["choices"][0].get("message") or {}).get("content") or ""
            return ChatResult(generations=[ChatGeneration(message=AIMessage(content=text))])

        def _stream(self, messages, stop=None, run_manager=None, **kwargs: Any) -> Iterator[ChatGenerationChunk]:
            for part in self.client.create_chat_completion(**self._request(messages, stop), stream=True):
                choices = part.get("choices") or [{}]
                delta = (choices[0].get("delta") or {}).get("content")
                if delta:
                    chunk = ChatGenerationChunk(message=AIMessageChunk(content=delta))
                    if run_manager:
                        run_manager.on_llm_new_token(delta, chunk=chunk)
                    yield chunk

    return LlamaCppChatModel


# --------------------------------------------------------------------------- prompt

SYSTEM_PROMPT = """Tu réponds à des questions sur des articles de presse.
Règles :
- Réponds UNIQUEMENT à partir des passages numérotés ci-dessous, jamais avec tes propres connaissances.
- Réponds brièvement (une à trois phrases), dans la langue de la question.
- Après chaque affirmation, cite entre crochets le numéro du ou des passages qui la justifient, par exemple [1] ou [1][3].
- Si les passages ne contiennent pas la réponse, réponds exactement : « {refusal} »"""

REWRITE_PROMPT = """Réécris la dernière question de l'utilisateur en une question autonome, compréhensible sans \
la conversation qui précède, dans la langue de cette question. Remplace les pronoms et les ellipses par ce \
qu'ils désignent. Si la question est déjà autonome, recopie-la telle quelle. Ne réponds pas à la question : \
écris seulement la question réécrite, sur une ligne, sans explication."""

_ROLES_USER = {"user", "human", "utilisateur"}
_ROLES_AI = {"assistant", "ai", "bot"}


def format_passages(passages: Sequence[Passage]) -> str:
    """``[1] Titre — 2022-02-07 — Source`` then the passage text, for every passage."""
    blocks = []
    for i, p in enumerate(passages, 1):
        head = " — ".join(x for x in (p.title.strip(), p.date.strip(), p.source.strip()) if x)
        blocks.append(f"[{i}] {head}\n{p.text.strip()}" if head else f"[{i}]\n{p.text.strip()}")
    return "\n\n".join(blocks)


def _turns(history: History | None) -> list[tuple[str, str]]:
    """History as ``(role, text)``: ``(question, answer)`` pairs, or already ``(role, text)`` pairs."""
    items = list(history or [])
    if items and all(str(a).strip().lower() in _ROLES_USER | _ROLES_AI | {"system"} for a, _ in items):
        roles = [(str(a).strip().lower(), b) for a, b in items]
        return [("user" if r in _ROLES_USER else "assistant", b) for r, b in roles if r != "system"]
    turns: list[tuple[str, str]] = []
    for question, answer in items:
        turns.append(("user", question))
        if answer:
            turns.append(("assistant", answer))
    return turns


def build_messages(question: str, passages: Sequence[Passage], history: History | None = None) -> list[BaseMessage]:
    """System prompt with the numbered passages, the previous turns, then the question.

    ``history`` is a list of ``(question, answer)`` pairs, oldest first (``("user", …)`` /
    ``("assistant", …)`` pairs are accepted too). Citation markers are removed from past
    answers: their numbers referred to other passages.
    """
    from langchain_core.messages import AIMessage, HumanMessage, SystemMessage

    system = SYSTEM_PROMPT.format(refusal=REFUSAL)
    system += "\n\nPassages :\n\n" + (format_passages(passages) if passages else "(aucun passage)")
    messages: list[BaseMessage] = [SystemMessage(content=system)]
    for role, text in _turns(history):
        if role == "user":
            messages.append(HumanMessage(content=text))
        else:
            messages.append(AIMessage(content=_strip_markers(text)))
    messages.append(HumanMessage(content=question))
    return messages


# --------------------------------------------------------------------------- reading the reply

_BRA, _KET = r"[\[【]", r"[\]】]"
_LABEL = r"(?:(?:passages?|sources?|documents?|docs?|extraits?|p\.?|n[°o]\.?|#)\s*)?"
_NUM = rf"{_LABEL}\d{{1,4}}(?:\s*[-–]\s*\d{{1,4}})?"
_MARKER = re.compile(rf"{_BRA}\s*({_NUM}(?:\s*(?:[,;/&]|\bet\b|\band\b)\s*{_NUM})*)\s*(?:†[^\]】]*)?{_KET}", re.IGNORECASE)
_NUMBERS = re.compile(r"(\d+)(?:\s*[-–]\s*(\d+))?")
_THINK = re.compile(r"<think>.*?</think>\s*", re.DOTALL | re.IGNORECASE)
_REFUSAL = re.compile(  # matched against fold(text): lower case, no accents
    r"^\W*(?:desole\W+)?"
    r"(?:(?:je\s+ne\s+(?:trouve|retrouve|vois)\s+pas|je\s+ne\s+peux\s+pas\s+trouver|je\s+n\W?ai\s+pas\s+trouve)\b"
    r".{0,80}?\bdans\s+(?:le|ce|les|ces)\s+(?:corpus|passages?)"
    r"|i\s+(?:cannot|can\s*not|can\W?t|could\s+not|couldn\W?t|do\s+not|don\W?t)\s+(?:find|see)\b"
    r".{0,80}?\bin\s+the\s+(?:corpus|passages?))",
    re.DOTALL,
)


def _marker_numbers(inner: str) -> list[int]:
    out: list[int] = []
    for m in _NUMBERS.finditer(inner):
        a = int(m.group(1))
        b = int(m.group(2)) if m.group(2) else a
        out.extend(range(a, b + 1) if a <= b <= a + 20 else [a, b] if m.group(2) else [a])
    return out


def cited_numbers(text: str, n_passages: int | None = None) -> list[int]:
    """Passage numbers cited in ``text``, first-cited first, deduplicated (only ``1..n_passages`` if given)."""
    seen: list[int] = []
    for m in _MARKER.finditer(text):
        for k in _marker_numbers(m.group(1)):
            if k not in seen and (n_passages is None or 1 <= k <= n_passages):
                seen.append(k)
    return seen


_SPACED_MARKER = re.compile(r"[ \t]*" + _MARKER.pattern, re.IGNORECASE)


def _strip_markers(text: str) -> str:
    """``text`` without its citation markers (and the spaces before them)."""
    return _SPACED_MARKER.sub("", text).strip()


def _keep_valid_markers(text: str, n: int) -> str:
    """Remove the numbers that name no passage; the valid markers stay as written."""

    def fix(m: re.Match[str]) -> str:
        numbers = _marker_numbers(m.group(1))
        valid = [k for k in dict.fromkeys(numbers) if 1 <= k <= n]
        if len(valid) == len(numbers):
            return m.group(0)
        spaces = m.group(0)[: len(m.group(0)) - len(m.group(0).lstrip(" \t"))]
        if not valid:  # drop it with the spaces before it, unless another marker follows
            return spaces if text[m.end() : m.end() + 1] in ("[", "【") else ""
        return spaces + "".join(f"[{k}]" for k in valid)

    return _SPACED_MARKER.sub(fix, text).strip()


def strip_think(text: str, *, final: bool = True) -> str:
    """Drop ``<think>…</think>`` blocks; an unclosed one hides what follows it.

    With ``final=False`` (streaming) a trailing partial ``<think>`` tag is held back too.
    """
    text = _THINK.sub("", text)
    lower = text.lower()
    cut = lower.find("<think>")
    if cut >= 0:
        text = text[:cut]
    elif not final:
        for k in range(min(len(text), 6), 0, -1):
            if "<think>".startswith(lower[-k:]):
                text = text[:-k]
                break
    return text.lstrip()


def is_refusal(text: str) -> bool:
    """Is ``text`` the « Je ne trouve pas cela dans le corpus. » refusal (case, punctuation, wording may vary)?"""
    return bool(_REFUSAL.match(fold(_strip_markers(text))))


# --------------------------------------------------------------------------- choosing quotes


def _claims(text: str, n: int) -> dict[int, tuple[str, str]]:
    """For each cited passage: (the words right before its markers, the answer sentences holding them)."""
    sentences = split_sentences(text)
    claims: dict[int, tuple[list[str], list[str]]] = {}
    prev_end = 0
    prev_claim: tuple[str, str] | None = None
    for m in _MARKER.finditer(text):
        sent = next(((s, e) for s, e in sentences if s <= m.start() < e), None)
        s, e = sent if sent else (0, len(text))
        segment = _strip_markers(text[max(s, prev_end) : m.start()])
        sentence = _strip_markers(text[s:e])
        if not re.search(r"\w", sentence) and prev_claim:  # « … 1994. [2] »: the marker closes the previous sentence
            claim = prev_claim
        elif not re.search(r"\w", segment) and prev_claim and prev_end > s:  # « [1][3] »: same claim
            claim = prev_claim
        else:
            claim = (segment, sentence)
        prev_end, prev_claim = m.end(), claim
        for k in _marker_numbers(m.group(1)):
            if 1 <= k <= n:
                seg_list, sent_list = claims.setdefault(k, ([], []))
                seg_list.append(claim[0])
                if claim[1] not in sent_list:
                    sent_list.append(claim[1])
    return {k: (" ".join(a), " ".join(b)) for k, (a, b) in claims.items()}


def _sentence_spans(text: str) -> list[tuple[int, int]]:
    spans = split_sentences(text)
    if spans:
        return spans
    stripped = text.strip()
    return [(text.index(stripped), text.index(stripped) + len(stripped))] if stripped else []


def _quote_idf(passages: Sequence[Passage]) -> dict[str, float]:
    """The IDF of every term over the sentences of ``passages`` (``log(1 + n / df)``)."""
    docs = [set(analyze(p.text[s:e])) for p in passages for s, e in _sentence_spans(p.text)]
    return {t: idf(c, len(docs), bm25=False) for t, c in document_frequencies(docs).items()}


def select_quote(
    passage: Passage, claim: str, question: str = "", *, context: str = "", idf: dict[str, float] | None = None
) -> tuple[int, int] | None:
    """``(start, end)`` of the sentence(s) of ``passage.text`` that best support ``claim``.

    Score: IDF-weighted shared terms with ``claim`` (twice) and ``context`` (the answer
    sentence), then with ``question``, then the earlier sentence. An adjacent sentence is
    added (up to 3 sentences) when it brings at least two more of the claim's terms.
    Trailing hashtags, mentions and links (a quoted tweet) are left out of the span.
    """
    spans = _sentence_spans(passage.text)
    if not spans:
        return None
    idf = idf if idf is not None else _quote_idf([passage])
    terms = [set(analyze(passage.text[s:e])) for s, e in spans]
    claim_terms, context_terms, question_terms = set(analyze(claim)), set(analyze(context)), set(analyze(question))
    if not claim_terms and not context_terms:
        context_terms = question_terms

    def weight(ts: set[str]) -> float:
        return sum(idf.get(t, 1.0) for t in ts)

    def score(i: int) -> tuple[float, float, int]:
        return (2 * weight(terms[i] & claim_terms) + weight(terms[i] & context_terms), weight(terms[i] & question_terms), -i)

    best = max(range(len(spans)), key=score)
    lo = hi = best
    wanted = claim_terms | context_terms
    covered = terms[best] & wanted
    while hi - lo < 2:
        options = [i for i in (lo - 1, hi + 1) if 0 <= i < len(spans)]
        gains = {i: (terms[i] & wanted) - covered for i in options}
        pick = max(options, key=lambda i: (len(gains[i]), weight(gains[i])), default=None)
        if pick is None or len(gains[pick]) < 2:
            break
        covered |= gains[pick]
        lo, hi = min(lo, pick), max(hi, pick)
    start, end = spans[lo][0], spans[hi][1]
    # « … à Almaty. #EUinKZ pic.twitter.com/… »: the hashtags are no support
    return start, trim_social_tail(passage.text, start, end, after_stop=False)


def _verified(citations: Sequence[Citation]) -> list[Citation]:
    """Keep the citations whose quote really is in their passage (offsets fixed when they are off)."""
    out = []
    for c in citations:
        text = c.passage.text
        if not c.quote:
            continue
        if text[c.start : c.end] == c.quote:
            out.append(c)
        elif (i := text.find(c.quote)) >= 0:
            out.append(Citation(passage=c.passage, quote=c.quote, start=i, end=i + len(c.quote)))
    return out


def _short_answer(text: str) -> str:
    """The answer itself when it is one short sentence (« En novembre 1994 [2]. » → « En novembre 1994 »)."""
    bare = _strip_markers(text).strip().rstrip(".!…").strip()
    return bare if bare and len(bare.split()) <= 12 and len(split_sentences(bare)) <= 1 else ""


# --------------------------------------------------------------------------- the answerer


class LLMAnswerer:
    """Answer a question from retrieved passages with a chat model; citations checked against the passages."""

    def __init__(self, chat_model: BaseChatModel, *, name: str = "llm", fallback: Fallback | None = None) -> None:
        self.chat_model = chat_model
        self.name = name
        self.fallback = fallback

    def __repr__(self) -> str:
        return f"LLMAnswerer(name={self.name!r})"

    # -- calling the model
    def _fail(self, exc: Exception) -> LLMError:
        return LLMError(
            f"the language model ({self.name}) failed: {type(exc).__name__}: {exc}. "
            "Check that its server is running and reachable (QA_LLM_BASE_URL), the model name (QA_ANSWERER) "
            "and the API key (QA_LLM_API_KEY), or set QA_ANSWERER=extractive"
        )

    def _invoke(self, messages: list[BaseMessage]) -> str:
        try:
            reply = self.chat_model.invoke(messages)
        except QAError:
            raise
        except Exception as exc:
            raise self._fail(exc) from exc
        return str(reply.text)

    # -- public API
    def answer(self, question: str, passages: list[Passage], history: History | None = None) -> Answer:
        passages = list(passages)
        if not passages:
            return self._abstain(question, passages)
        reply = self._invoke(build_messages(question, passages, history))
        return self.finish(question, passages, reply)

    def stream(self, question: str, passages: list[Passage], history: History | None = None) -> Iterator[str | Answer]:
        """Yield the reply's text as the model streams it (``str`` chunks), then the final :class:`Answer`.

        The chunks are the raw reply (``<think>`` blocks held back); the Answer's text is
        the cleaned reply (markers naming no passage removed), as :meth:`answer` gives it.
        """
        passages = list(passages)
        if not passages:
            yield REFUSAL
            yield self._abstain(question, passages)
            return
        messages = build_messages(question, passages, history)
        raw = ""
        shown = 0
        try:
            for chunk in self.chat_model.stream(messages):
                piece = str(chunk.text)
                if not piece:
                    continue
                raw += piece
                visible = strip_think(raw, final=False)
                if len(visible) > shown:
                    yield visible[shown:]
                    shown = len(visible)
        except QAError:
            raise
        except Exception as exc:
            raise self._fail(exc) from exc
        visible = strip_think(raw)
        if len(visible) > shown:
            yield visible[shown:]
        yield self.finish(question, passages, raw)

    def finish(self, question: str, passages: list[Passage], reply: str) -> Answer:
        """Turn the model's raw ``reply`` into an :class:`Answer` with checked citations."""
        text = strip_think(reply).strip()
        n = len(passages)
        numbers = cited_numbers(text, n)
        if not text or (not numbers and is_refusal(text)):
            return self._abstain(question, passages, text or REFUSAL)
        text = _keep_valid_markers(text, n)
        citations: list[Citation] = []
        if numbers:
            term_idf = _quote_idf(passages)
            claims = _claims(text, n)
            for k in numbers:
                passage = passages[k - 1]
                segment, sentence = claims.get(k, ("", text))
                span = select_quote(passage, segment, question, context=sentence or text, idf=term_idf)
                if span:
                    s, e = span
                    citations.append(Citation(passage=passage, quote=passage.text[s:e], start=s, end=e))
        elif self.fallback is not None:
            citations = _verified(self.fallback(question, passages).citations)
        return Answer(
            text=text,
            citations=citations,
            passages=passages,
            abstained=False,
            confidence=None,
            short_answer=_short_answer(text),
            question=question,
        )

    def _abstain(self, question: str, passages: list[Passage], text: str = REFUSAL) -> Answer:
        return Answer(text=_strip_markers(text), passages=list(passages), abstained=True, question=question)

    def rewrite_followup(self, question: str, history: History) -> str:
        """A standalone version of a follow-up question, or ``question`` itself.

        « Et à Bruxelles ? » after « Quand le bureau de l'UE a-t-il ouvert à Almaty ? » →
        « Quand le Kazakhstan a-t-il ouvert son bureau à Bruxelles ? ». Without history the
        model is not called; an empty, over-long, refusing or answering (citing) reply
        gives back ``question``.
        """
        from langchain_core.messages import HumanMessage, SystemMessage

        turns = _turns(history)[-6:]
        if not turns or not question.strip():
            return question
        lines = []
        for role, text in turns:
            text = _strip_markers(text)
            text = text if len(text) <= 600 else text[:600] + "…"
            lines.append(f"{'Utilisateur' if role == 'user' else 'Assistant'} : {text}")
        prompt = "Conversation :\n" + "\n".join(lines) + f"\n\nDernière question : {question}\n\nQuestion autonome :"
        reply = self._invoke([SystemMessage(content=REWRITE_PROMPT), HumanMessage(content=prompt)])
        return _clean_rewrite(reply, question)


def _clean_rewrite(reply: str, question: str) -> str:
    text = strip_think(reply).strip()
    line = next((x.strip() for x in text.splitlines() if x.strip()), "")
    line = re.sub(r"^(?:\*\*)?(?:question(?:\s+(?:autonome|réécrite|reformulée))?|standalone question|rewritten question)"
                  r"(?:\*\*)?\s*:\s*", "", line, flags=re.IGNORECASE)  # fmt: skip
    line = line.strip().strip("«»\"“”'`*").strip()
    too_long = len(line) > max(300, 3 * len(question))
    if not line or too_long or is_refusal(line) or _MARKER.search(line) or len(line.split()) < 2:
        return question
    return line


def make_llm_answerer(
    spec: str,
    *,
    base_url: str | None = None,
    api_key: str | None = None,
    fallback: Fallback | None = None,
    temperature: float = 0.0,
    timeout: float = 60.0,
) -> LLMAnswerer:
    """``LLMAnswerer(make_chat_model(spec, …), name=spec, fallback=fallback)``."""
    model = make_chat_model(spec, base_url=base_url, api_key=api_key, temperature=temperature, timeout=timeout)
    return LLMAnswerer(model, name=spec, fallback=fallback)
