"""LLM answerers: scripted fake chat models and a fake OpenAI-compatible server; no real LLM anywhere."""

from __future__ import annotations

import random
import subprocess
import sys
import types

import pytest
from langchain_core.language_models.fake_chat_models import FakeListChatModel, GenericFakeChatModel
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage

from qa.answering.llm import (
    LLMAnswerer,
    LLMError,
    build_messages,
    cited_numbers,
    is_refusal,
    llamacpp_chat_model,
    make_chat_model,
    make_llm_answerer,
    parse_answerer,
)
from qa.answering.text import REFUSAL
from qa.chunking import split_sentences
from qa.errors import ConfigError
from qa.schema import Answer, Citation, Passage

from fake_openai import FakeOpenAIServer, ScriptedError
from helpers import SEED

QUESTION = "Quand le bureau de l'UE a-t-il ouvert à Almaty ?"
ALMATY = "En novembre 1994, la délégation de l’UE au Kazakhstan a commencé ses travaux à Almaty."
BRUXELLES = "En décembre 1993, le Kazakhstan a ouvert son bureau à Bruxelles."


def _passages() -> list[Passage]:
    """The seed article cut by hand into 4 chunks, in a retrieval order: the tweet is passage 2."""
    text = SEED.read_text(encoding="utf-8")
    lines = text.split("\n")
    bounds, pos = [], 0
    for line in lines:
        bounds.append((pos, pos + len(line)))
        pos += len(line) + 1

    def chunk(first: int, last: int, i: int) -> Passage:
        start, end = bounds[first][0], bounds[last][1]
        return Passage(
            doc_id="ue-kazakhstan",
            chunk_id=f"ue-kazakhstan:{i}",
            text=text[start:end],
            title="L'UE et le Kazakhstan",
            source="Astana Times",
            date="2022-02-07",
            start=start,
            end=end,
        )

    a, b, c, d = chunk(0, 1, 0), chunk(2, 3, 1), chunk(4, 5, 2), chunk(6, 8, 3)
    assert ALMATY in d.text and BRUXELLES in d.text
    return [a, d, b, c]


@pytest.fixture
def passages() -> list[Passage]:
    return _passages()


def _fallback_citing(passage_index: int):
    calls = []

    def fallback(question: str, passages: list[Passage]) -> Answer:
        calls.append((question, passages))
        p = passages[passage_index]
        start = p.text.index(ALMATY) if ALMATY in p.text else 0
        end = start + (len(ALMATY) if ALMATY in p.text else 20)
        cit = Citation(passage=p, quote=p.text[start:end], start=start, end=end)
        return Answer(text="extractive", citations=[cit], passages=passages, short_answer="novembre 1994")

    fallback.calls = calls  # type: ignore[attr-defined]
    return fallback


def _answer(reply: str, passages: list[Passage], question: str = QUESTION, **kwargs) -> Answer:
    return LLMAnswerer(FakeListChatModel(responses=[reply]), **kwargs).answer(question, passages)


def _assert_honest(answer: Answer, passages: list[Passage]) -> None:
    for c in answer.citations:
        assert c.passage in passages
        assert c.quote and c.passage.text[c.start : c.end] == c.quote
        assert c.quote == c.quote.strip()


# --------------------------------------------------------------------------- specs


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("extractive", ("extractive", "")),
        (" Extractive ", ("extractive", "")),
        ("openai:gpt-4o-mini", ("openai", "gpt-4o-mini")),
        ("OpenAI:gpt-4o-mini", ("openai", "gpt-4o-mini")),
        ("ollama:qwen2.5:7b-instruct", ("ollama", "qwen2.5:7b-instruct")),
        ("llamacpp:/models/mistral.gguf", ("llamacpp", "/models/mistral.gguf")),
        ("llama.cpp:C:/models/m.gguf", ("llamacpp", "C:/models/m.gguf")),
    ],
)
def test_parse_answerer(spec, expected):
    assert parse_answerer(spec) == expected


@pytest.mark.parametrize("spec", ["", "gpt-4o", "openai:", "openai:  ", "anthropic:claude", "extractive:x", ":model"])
def test_parse_answerer_rejects_bad_specs(spec):
    with pytest.raises(ConfigError) as err:
        parse_answerer(spec)
    message = str(err.value)
    assert "QA_ANSWERER" in message
    for form in ("extractive", "openai:<model>", "ollama:<model>", "llamacpp:<path/to/model.gguf>"):
        assert form in message


def test_make_chat_model_openai(monkeypatch):
    from langchain_openai import ChatOpenAI

    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_API_BASE"):
        monkeypatch.delenv(name, raising=False)
    model = make_chat_model("openai:gpt-4o-mini", api_key="sk-test", timeout=12)
    assert isinstance(model, ChatOpenAI)
    assert model.model_name == "gpt-4o-mini" and model.temperature == 0.0 and model.request_timeout == 12
    assert model.openai_api_key.get_secret_value() == "sk-test"

    local = make_chat_model("openai:qwen", base_url="http://127.0.0.1:8080/v1")  # a local server needs no key
    assert local.openai_api_base == "http://127.0.0.1:8080/v1"
    assert local.openai_api_key.get_secret_value() == "not-needed"

    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:1234/v1")
    assert make_chat_model("openai:m").openai_api_base == "http://127.0.0.1:1234/v1"
    monkeypatch.delenv("OPENAI_BASE_URL")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env")
    assert make_chat_model("openai:m").openai_api_key.get_secret_value() == "sk-env"


def test_make_chat_model_openai_without_key_or_url(monkeypatch):
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_API_BASE"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ConfigError) as err:
        make_chat_model("openai:gpt-4o-mini")
    assert "QA_LLM_API_KEY" in str(err.value) and "OPENAI_API_KEY" in str(err.value)
    assert "QA_LLM_BASE_URL" in str(err.value)


def test_make_chat_model_ollama(monkeypatch):
    from langchain_ollama import ChatOllama

    monkeypatch.delenv("OLLAMA_HOST", raising=False)
    model = make_chat_model("ollama:qwen2.5:7b", timeout=5)
    assert isinstance(model, ChatOllama)
    assert model.model == "qwen2.5:7b" and model.base_url == "http://localhost:11434" and model.temperature == 0.0
    assert model.client_kwargs == {"timeout": 5}
    # the OpenAI-compatible URL of an Ollama server also works
    assert make_chat_model("ollama:m", base_url="http://gpu:11434/v1/").base_url == "http://gpu:11434"


def test_make_chat_model_extractive_is_not_a_model():
    with pytest.raises(ConfigError, match="extractive"):
        make_chat_model("extractive")
    with pytest.raises(ConfigError, match="QA_ANSWERER"):
        make_chat_model("mistral")


def test_llamacpp_missing_file(tmp_path):
    with pytest.raises(ConfigError) as err:
        make_chat_model(f"llamacpp:{tmp_path / 'nope.gguf'}")
    assert "does not exist" in str(err.value) and "nope.gguf" in str(err.value)
    with pytest.raises(ConfigError, match="directory"):
        make_chat_model(f"llamacpp:{tmp_path}")


def test_llamacpp_without_the_package(tmp_path, monkeypatch):
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF")
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # import llama_cpp -> ImportError
    with pytest.raises(ConfigError) as err:
        make_chat_model(f"llamacpp:{gguf}")
    assert "pip install 'qa[llamacpp]'" in str(err.value)


class _FakeLlama:
    """Stands for llama_cpp.Llama: records its arguments, answers from a script."""

    instances: list[_FakeLlama] = []

    def __init__(self, **kwargs) -> None:
        self.kwargs = kwargs
        self.requests: list[dict] = []
        self.replies = ["En novembre 1994 [2].", "En novembre 1994 [2]."]
        _FakeLlama.instances.append(self)

    def create_chat_completion(self, *, messages, stream=False, **kwargs):
        self.requests.append({"messages": messages, "stream": stream, **kwargs})
        reply = self.replies.pop(0)
        if not stream:
            return {"choices": [{"index": 0, "message": {"role": "assistant", "content": reply}, "finish_reason": "stop"}]}
        words = reply.split(" ")
        pieces = [w + " " for w in words[:-1]] + [words[-1]]
        return iter([{"choices": [{"index": 0, "delta": {"content": p}}]} for p in pieces] + [{"choices": [{"delta": {}}]}])


def test_llamacpp_adapter_with_a_fake_package(tmp_path, monkeypatch, passages):
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF")
    monkeypatch.setitem(sys.modules, "llama_cpp", types.SimpleNamespace(Llama=_FakeLlama))
    _FakeLlama.instances.clear()
    answerer = make_llm_answerer(f"llamacpp:{gguf}")
    llama = _FakeLlama.instances[0]
    assert llama.kwargs["model_path"] == str(gguf)
    assert llama.kwargs["rope_freq_base"] == 0.0  # the GGUF's own value, not 10000

    answer = answerer.answer(QUESTION, passages)
    assert answer.citations[0].passage is passages[1] and answer.citations[0].quote.startswith("En novembre 1994")
    sent = llama.requests[0]["messages"]
    assert [m["role"] for m in sent] == ["system", "user"] and sent[-1]["content"] == QUESTION
    assert llama.requests[0]["temperature"] == 0.0

    items = list(answerer.stream(QUESTION, passages))
    assert len([x for x in items if isinstance(x, str)]) >= 3 and isinstance(items[-1], Answer)
    assert items[-1].citations[0].passage is passages[1]


def test_llamacpp_chat_model_wraps_any_client():
    llama = _FakeLlama()
    model = llamacpp_chat_model(llama, model_name="m.gguf")
    assert model.invoke("Bonjour").content == "En novembre 1994 [2]."
    assert llama.requests[0]["messages"] == [{"role": "user", "content": "Bonjour"}]


def test_importing_qa_llm_loads_no_backend():
    code = (
        "import sys, qa.answering.llm\n"
        "heavy = [m for m in ('langchain_openai', 'langchain_ollama', 'openai', 'ollama', 'llama_cpp') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# --------------------------------------------------------------------------- prompt


def test_build_messages(passages):
    history = [("Qui est Terhi Hakala ?", "La représentante spéciale de l'UE pour l'Asie centrale [1].")]
    messages = build_messages(QUESTION, passages, history)
    assert isinstance(messages[0], SystemMessage)
    system = messages[0].content
    assert "UNIQUEMENT" in system and REFUSAL in system and "[1] ou [1][3]" in system
    for i, p in enumerate(passages, 1):
        assert f"[{i}] L'UE et le Kazakhstan — 2022-02-07 — Astana Times\n{p.text.strip()}" in system
    assert "[5]" not in system
    assert isinstance(messages[1], HumanMessage) and messages[1].content == "Qui est Terhi Hakala ?"
    assert isinstance(messages[2], AIMessage) and "[1]" not in messages[2].content  # old numbers mean nothing now
    assert isinstance(messages[3], HumanMessage) and messages[3].content == QUESTION
    assert len(messages) == 4
    # (role, text) pairs are understood too
    roles = build_messages(QUESTION, passages, [("user", "Q ?"), ("assistant", "R.")])
    assert [type(m) for m in roles] == [SystemMessage, HumanMessage, AIMessage, HumanMessage]
    assert build_messages(QUESTION, [], None)[-1].content == QUESTION


# --------------------------------------------------------------------------- citations


def test_almaty_cites_the_almaty_sentence_not_bruxelles(passages):
    answer = _answer("En novembre 1994 [2].", passages)
    assert answer.text == "En novembre 1994 [2]."
    assert not answer.abstained and answer.question == QUESTION and answer.passages == passages
    assert answer.short_answer == "En novembre 1994"
    [cit] = answer.citations
    assert cit.passage is passages[1]
    assert cit.quote == ALMATY  # the trailing « #EUinKZ pic.twitter.com/… » is left out
    assert "Bruxelles" not in cit.quote
    assert passages[1].text[cit.start : cit.end] == cit.quote


def test_a_longer_almaty_answer_and_the_bruxelles_one(passages):
    answer = _answer("La délégation de l'UE a commencé ses travaux à Almaty en novembre 1994 [2].", passages)
    assert answer.citations[0].quote == ALMATY
    bxl = _answer("Le Kazakhstan a ouvert son bureau à Bruxelles en décembre 1993 [2].", passages)
    assert bxl.citations[0].quote == BRUXELLES


def test_two_claims_on_adjacent_sentences_quote_both(passages):
    reply = (
        "Le Kazakhstan a ouvert son bureau à Bruxelles en décembre 1993, et la délégation de l'UE à Almaty en novembre 1994 [2]."
    )
    [cit] = _answer(reply, passages).citations
    assert cit.quote.startswith(BRUXELLES) and ALMATY in cit.quote


def test_nonexistent_numbers_are_dropped(passages):
    answer = _answer("En novembre 1994 [2][9]. Les relations datent de 1993 [7, 1].", passages)
    assert [c.passage for c in answer.citations] == [passages[1], passages[0]]
    assert answer.text == "En novembre 1994 [2]. Les relations datent de 1993 [1]."
    _assert_honest(answer, passages)


def test_marker_forms_order_and_dedupe(passages):
    reply = "Almaty, novembre 1994 [Passage 2]. Hakala a rencontré Tokaïev [1, 2]. Enquête sur janvier [3][2]."
    answer = _answer(reply, passages)
    assert [c.passage for c in answer.citations] == [passages[1], passages[0], passages[2]]
    assert answer.text == reply  # valid markers are kept as written, never renumbered
    assert "enquête" in answer.citations[2].quote
    assert cited_numbers("voir [1-3], [passages 4 et 5], 【6】 et [sic]") == [1, 2, 3, 4, 5, 6]
    assert cited_numbers("[1994] [2]", 4) == [2]


def test_marker_after_the_full_stop(passages):
    answer = _answer("En novembre 1994. [2]", passages)
    assert answer.citations[0].quote == ALMATY


def test_no_citation_uses_the_fallback_citations(passages):
    fallback = _fallback_citing(1)
    answer = _answer("En novembre 1994.", passages, fallback=fallback)
    assert answer.text == "En novembre 1994."  # the LLM's text is kept
    assert [c.quote for c in answer.citations] == [ALMATY]
    assert fallback.calls == [(QUESTION, passages)]
    only_bad = _answer("En novembre 1994 [9].", passages, fallback=_fallback_citing(1))
    assert only_bad.text == "En novembre 1994." and only_bad.citations[0].passage is passages[1]
    assert _answer("En novembre 1994.", passages).citations == []  # no fallback: no citation


def test_fallback_citations_are_checked(passages):
    def sloppy(question, ps):
        p = ps[1]
        good = Citation(passage=p, quote=ALMATY, start=0, end=3)  # wrong offsets: fixed
        invented = Citation(passage=p, quote="Le bureau a ouvert en 1995.", start=0, end=10)  # not in the passage: dropped
        return Answer(text="x", citations=[invented, good])

    answer = _answer("En novembre 1994.", passages, fallback=sloppy)
    assert [c.quote for c in answer.citations] == [ALMATY]
    _assert_honest(answer, passages)


@pytest.mark.parametrize(
    "reply",
    [
        REFUSAL,
        "je ne trouve pas cela dans le corpus",
        "Je ne trouve pas cette information dans le corpus !",
        "« Je ne trouve pas cela dans le corpus. »",
        "Désolé, je ne trouve pas la réponse dans les passages fournis.",
        "Je n’ai pas trouvé cette information dans le corpus.",
        "I cannot find this in the corpus.",
        "<think>Rien sur Paris.</think>Je ne trouve pas cela dans le corpus.",
        "Je ne trouve pas cela dans le corpus [9].",
        "",
    ],
)
def test_refusal_abstains(reply, passages):
    answer = _answer(reply, passages, fallback=_fallback_citing(1))
    assert answer.abstained and answer.citations == []
    assert answer.passages == passages and answer.question == QUESTION
    assert answer.text and "[9]" not in answer.text and "think" not in answer.text  # the model's wording is kept


def test_is_refusal():
    assert is_refusal(REFUSAL) and is_refusal("JE NE TROUVE PAS CELA DANS LE CORPUS")
    assert not is_refusal("En novembre 1994 [2].") and not is_refusal("Je ne sais pas.")


def test_refusal_with_a_citation_is_an_answer(passages):
    answer = _answer("Je ne trouve pas la date exacte dans le corpus, mais la délégation a ouvert en 1994 [2].", passages)
    assert not answer.abstained and answer.citations[0].passage is passages[1]


def test_no_passages_abstains_without_calling_the_model():
    model = FakeListChatModel(responses=["En 1994 [1]."])
    answer = LLMAnswerer(model).answer(QUESTION, [])
    assert answer.abstained and answer.text == REFUSAL and model.i == 0
    assert list(LLMAnswerer(model).stream(QUESTION, []))[-1].abstained


def test_think_blocks_are_dropped(passages):
    answer = _answer("<think>Le passage 2 parle d'Almaty [3].</think>\nEn novembre 1994 [2].", passages)
    assert answer.text == "En novembre 1994 [2]." and [c.passage for c in answer.citations] == [passages[1]]


def test_every_quote_is_verbatim_over_many_replies(passages):
    rng = random.Random(7)
    sentences = [p.text[s:e] for p in passages for s, e in split_sentences(p.text)]
    forms = ["[{}]", "[Passage {}]", "[{}, {}]", "[{}][{}]", "【{}】", "[passage {} et {}]"]
    seen_citations = 0
    for _ in range(150):
        parts = []
        for _ in range(rng.randint(1, 3)):
            words = rng.choice(sentences).split()
            a = rng.randrange(len(words))
            claim = " ".join(words[a : a + rng.randint(1, 12)])
            numbers = [rng.randint(0, 7) for _ in range(2)]
            parts.append(f"{claim} {rng.choice(forms).format(*numbers)}.")
        answer = _answer(" ".join(parts), passages, question=rng.choice(sentences))
        _assert_honest(answer, passages)
        valid = [k for k in cited_numbers(" ".join(parts)) if 1 <= k <= len(passages)]
        assert [c.passage for c in answer.citations] == [passages[k - 1] for k in valid]
        assert not any(f"[{k}]" in answer.text for k in (0, 5, 6, 7))
        seen_citations += len(answer.citations)
    assert seen_citations > 100


# --------------------------------------------------------------------------- streaming


def test_stream_yields_chunks_then_the_answer(passages):
    reply = "La délégation de l'UE a commencé ses travaux à Almaty en novembre 1994 [2]."
    items = list(LLMAnswerer(GenericFakeChatModel(messages=iter([reply]))).stream(QUESTION, passages))
    chunks, final = items[:-1], items[-1]
    assert len(chunks) > 3 and all(isinstance(c, str) for c in chunks)
    assert "".join(chunks) == reply
    assert isinstance(final, Answer)
    assert final == _answer(reply, passages)  # what answer() gives


def test_stream_hides_think_blocks(passages):
    reply = "<think>Voyons le passage 2 …</think> En novembre 1994 [2]."
    items = list(LLMAnswerer(FakeListChatModel(responses=[reply])).stream(QUESTION, passages))  # one character per chunk
    chunks = items[:-1]
    assert "".join(chunks) == "En novembre 1994 [2]." and not any("<" in c for c in chunks)
    assert items[-1].citations[0].quote == ALMATY


def test_model_errors_become_llm_errors(passages):
    class Broken(FakeListChatModel):
        def _call(self, *args, **kwargs):
            raise ConnectionError("connection refused")

    answerer = LLMAnswerer(Broken(responses=["x"]), name="openai:m")
    with pytest.raises(LLMError, match="openai:m.*connection refused.*QA_LLM_BASE_URL"):
        answerer.answer(QUESTION, passages)
    with pytest.raises(LLMError):
        answerer.rewrite_followup("Et à Bruxelles ?", [(QUESTION, "En 1994.")])


# --------------------------------------------------------------------------- follow-ups


def test_rewrite_followup():
    standalone = "Quand le Kazakhstan a-t-il ouvert son bureau à Bruxelles ?"
    history = [(QUESTION, "En novembre 1994 [2].")]
    for reply in (standalone, f"Question autonome : « {standalone} »", f"<think>…</think>{standalone}\nExplication : …"):
        assert LLMAnswerer(FakeListChatModel(responses=[reply])).rewrite_followup("Et à Bruxelles ?", history) == standalone


@pytest.mark.parametrize(
    "reply",
    ["", "   ", "Bruxelles", "x " * 400, REFUSAL, "En décembre 1993 [2].", "<think>hmm"],
)
def test_rewrite_followup_keeps_the_question_when_the_reply_is_absurd(reply):
    answerer = LLMAnswerer(FakeListChatModel(responses=[reply]))
    assert answerer.rewrite_followup("Et à Bruxelles ?", [(QUESTION, "En novembre 1994.")]) == "Et à Bruxelles ?"


def test_rewrite_followup_without_history_does_not_call_the_model():
    model = FakeListChatModel(responses=["autre chose ?"])
    assert LLMAnswerer(model).rewrite_followup(QUESTION, []) == QUESTION and model.i == 0


# --------------------------------------------------------------------------- the fake OpenAI server, end to end


def test_openai_end_to_end(fake_openai: FakeOpenAIServer, passages):
    fake_openai.add("La délégation de l'UE a commencé ses travaux à Almaty en novembre 1994 [2][9].")
    answerer = make_llm_answerer("openai:test-model", base_url=fake_openai.base_url, api_key="x")
    assert answerer.name == "openai:test-model"
    answer = answerer.answer(QUESTION, passages, history=[("Qui est Hakala ?", "La représentante de l'UE [1].")])
    assert answer.text == "La délégation de l'UE a commencé ses travaux à Almaty en novembre 1994 [2]."
    assert [c.quote for c in answer.citations] == [ALMATY]

    [request] = fake_openai.chat_requests
    assert request.headers.get("authorization") == "Bearer x"
    body = request.body
    assert body["model"] == "test-model" and body["temperature"] == 0.0 and not body.get("stream")
    assert [m["role"] for m in body["messages"]] == ["system", "user", "assistant", "user"]
    system = body["messages"][0]["content"]
    for i, p in enumerate(passages, 1):
        assert f"[{i}] L'UE et le Kazakhstan — 2022-02-07" in system and p.text.strip() in system
    assert body["messages"][-1]["content"] == QUESTION


def test_openai_streaming_end_to_end(fake_openai: FakeOpenAIServer, passages):
    reply = "En novembre 1994, à Almaty [2]."
    fake_openai.add(reply)
    answerer = LLMAnswerer(make_chat_model("openai:test-model", base_url=fake_openai.base_url, api_key="x"))
    items = list(answerer.stream(QUESTION, passages))
    chunks = items[:-1]
    assert len(chunks) >= 3 and "".join(chunks) == reply
    assert isinstance(items[-1], Answer) and items[-1].citations[0].quote == ALMATY
    [request] = fake_openai.chat_requests
    assert request.body["stream"] is True and "[4]" in request.text() and QUESTION in request.text()


def test_openai_rewrite_followup_end_to_end(fake_openai: FakeOpenAIServer):
    fake_openai.add("Quand le Kazakhstan a-t-il ouvert son bureau à Bruxelles ?")
    answerer = LLMAnswerer(make_chat_model("openai:test-model", base_url=fake_openai.base_url))  # no key: local server
    out = answerer.rewrite_followup("Et à Bruxelles ?", [(QUESTION, "En novembre 1994 [2].")])
    assert out == "Quand le Kazakhstan a-t-il ouvert son bureau à Bruxelles ?"
    prompt = fake_openai.chat_requests[0].text()
    assert QUESTION in prompt and "Et à Bruxelles ?" in prompt and "[2]" not in prompt
    assert fake_openai.chat_requests[0].headers.get("authorization") == "Bearer not-needed"


def test_openai_server_errors_become_llm_errors(fake_openai: FakeOpenAIServer, passages):
    fake_openai.add(ScriptedError(401, "invalid api key"), ScriptedError(401, "invalid api key"))
    answerer = make_llm_answerer("openai:test-model", base_url=fake_openai.base_url, api_key="bad")
    with pytest.raises(LLMError, match="invalid api key"):
        answerer.answer(QUESTION, passages)
    with pytest.raises(LLMError, match="invalid api key"):
        list(answerer.stream(QUESTION, passages))


def test_fake_server_only_listens_on_loopback(fake_openai: FakeOpenAIServer):
    assert fake_openai.base_url.startswith("http://127.0.0.1:")
    assert fake_openai._server is not None and fake_openai._server.server_address[0] == "127.0.0.1"


def test_llm_answerer_is_a_conversational_answerer():
    from qa.answering.base import Answerer, ConversationalAnswerer

    answerer: ConversationalAnswerer = LLMAnswerer(FakeListChatModel(responses=["En novembre 1994 [1]."]))
    assert isinstance(answerer, ConversationalAnswerer) and isinstance(answerer, Answerer)
