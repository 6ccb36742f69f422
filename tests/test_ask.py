"""KnowledgeBase.ask and `qa ask`/`qa eval` with the fake embedder and the real extractive answerer."""

import json

import pytest
from langchain_core.language_models.fake_chat_models import FakeListChatModel

from qa import Answer
from qa.answering.chain import is_follow_up, rewrite_follow_up
from qa.answering.llm import LLMAnswerer
from qa.cli import main

from helpers import ROOT, SEED

QUESTION = "Quand le bureau de l'UE a-t-il ouvert à Almaty ?"
ALMATY = "En novembre 1994, la délégation de l’UE au Kazakhstan a commencé ses travaux à Almaty."
TINY = ROOT / "tests" / "data" / "tiny-squad.json"


@pytest.fixture
def seeded(kb):
    kb.ingest([SEED])
    return kb


def test_ask_answers_with_the_almaty_quote(seeded):
    answer = seeded.ask(QUESTION)
    assert isinstance(answer, Answer) and not answer.abstained
    assert "novembre 1994" in answer.text
    quote = answer.citations[0]
    assert quote.quote.startswith(ALMATY[:-1]) and "Bruxelles" not in quote.quote
    assert quote.passage.text[quote.start : quote.end] == quote.quote
    assert answer.passages and answer.question == QUESTION


def test_ask_abstains_when_the_corpus_does_not_hold_the_answer(seeded):
    answer = seeded.ask("Quel est le PIB du Kazakhstan en 2021 ?")
    assert answer.abstained and not answer.citations and answer.passages
    assert "corpus" in answer.text


def test_follow_up_is_rewritten_from_the_history(seeded):
    history = [(QUESTION, "En novembre 1994.")]
    answer = seeded.ask("Et à Bruxelles ?", history=history)
    assert answer.question == "Quand le bureau de l'UE a-t-il ouvert à Bruxelles ?"
    assert not answer.abstained and "décembre 1993" in answer.text
    assert "Bruxelles" in answer.citations[0].quote


@pytest.mark.parametrize(
    ("question", "expected"),
    [
        ("Et à Bruxelles ?", "Quand le bureau de l'UE a-t-il ouvert à Bruxelles ?"),
        ("Et Bruxelles ?", "Quand le bureau de l'UE a-t-il ouvert à Bruxelles ?"),
        ("Qui est le président du Kazakhstan ?", "Qui est le président du Kazakhstan ?"),
    ],
)
def test_rule_based_follow_up_rewriting(question, expected):
    assert rewrite_follow_up(question, [(QUESTION, "En novembre 1994.")]) == expected


def test_follow_up_detection_and_chained_follow_ups():
    assert is_follow_up("Et à Bruxelles ?") and is_follow_up("Et en 1995 ?") and not is_follow_up(QUESTION)
    history = [(QUESTION, "En novembre 1994."), ("Et à Bruxelles ?", "En décembre 1993.")]
    assert rewrite_follow_up("Et à Paris ?", history) == "Quand le bureau de l'UE a-t-il ouvert à Paris ?"
    assert rewrite_follow_up("Et à Paris ?", None) == "Et à Paris ?"


def test_llm_path_with_a_scripted_model_cites_the_almaty_passage(seeded):
    hits = seeded.search(QUESTION, k=5)
    number = next(i for i, p in enumerate(hits, 1) if ALMATY in p.text)
    model = FakeListChatModel(responses=[f"Le bureau a ouvert en novembre 1994 [{number}]."])
    answer = seeded.ask(QUESTION, answerer=LLMAnswerer(model, name="scripted"))
    assert "novembre 1994" in answer.text and not answer.abstained
    [citation] = answer.citations
    assert ALMATY[:-1] in citation.quote and "Bruxelles" not in citation.quote
    assert citation.passage.text[citation.start : citation.end] == citation.quote


def test_cli_ask_prints_answer_and_numbered_citations(use_fake_embedder, capsys):
    main(["ingest", "-q", str(SEED)])
    capsys.readouterr()
    assert main(["ask", QUESTION]) == 0
    out = capsys.readouterr().out
    first, _, rest = out.partition("\n")
    assert "novembre 1994" in first
    assert "[1] ue-kazakhstan" in rest and "« En novembre 1994, la délégation" in rest
    assert main(["ask", "Quel est le PIB du Kazakhstan en 2021 ?", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["abstained"] is True and data["citations"] == [] and data["passages"]


def test_cli_eval_on_a_tiny_squad_file(use_fake_embedder, capsys, tmp_path):
    report = tmp_path / "report.md"
    assert main(["eval", "squad", str(TINY), "--compare", "--unanswerable", "--json", "--report", str(report)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["questions"] == 5 and result["articles"] == 3
    assert set(result["retrieval"]) == {"hybrid", "rerank", "dense", "lexical"}
    assert result["retrieval"]["lexical"]["recall@5"] == 1.0  # 3 articles: the gold one is always in the top 5
    assert 0 <= result["answers"]["quote_contains_answer"] <= 1 and 0 <= result["unanswerable"]["abstention_rate"] <= 1
    text = report.read_text()
    assert "## Retrieval" in text and "| lexical |" in text and "## By question type" in text
    assert "![recall@k for k = 1..20 per retriever](report-recall.png)" in text
    png = (tmp_path / "report-recall.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000
    assert result["recall_curve"]["dense"][19] >= result["recall_curve"]["dense"][0]


def test_ask_stream_yields_llm_chunks_then_the_answer(seeded):
    from langchain_core.language_models.fake_chat_models import GenericFakeChatModel

    hits = seeded.search(QUESTION, k=5)
    number = next(i for i, p in enumerate(hits, 1) if ALMATY in p.text)
    model = GenericFakeChatModel(messages=iter([f"Le bureau a ouvert en novembre 1994 [{number}]."]))
    items = list(seeded.ask_stream(QUESTION, answerer=LLMAnswerer(model, name="scripted")))
    chunks, final = items[:-1], items[-1]
    assert len(chunks) > 2 and all(isinstance(c, str) for c in chunks)
    assert "".join(chunks) == f"Le bureau a ouvert en novembre 1994 [{number}]."
    assert isinstance(final, Answer) and ALMATY[:-1] in final.citations[0].quote
    [only] = list(seeded.ask_stream(QUESTION))  # the extractive answerer gives the Answer at once
    assert isinstance(only, Answer) and "novembre 1994" in only.text


def test_cli_ask_streams_from_an_openai_compatible_server(use_fake_embedder, fake_openai, capsys, monkeypatch):
    main(["ingest", "-q", str(SEED)])
    capsys.readouterr()
    monkeypatch.setenv("QA_LLM_BASE_URL", fake_openai.base_url)
    fake_openai.add("En novembre 1994 [1][2].")
    assert main(["ask", QUESTION, "--answerer", "openai:test-model"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("En novembre 1994 [1][2].")
    assert "[1] ue-kazakhstan" in out
    [request] = fake_openai.chat_requests
    assert QUESTION in json.dumps(request.body, ensure_ascii=False)


def test_the_extractive_chain_runs_its_steps_without_langchain(tmp_path):
    """`ask` runs the chain's steps as calls unless LangChain takes part: a cold process answering with the extractive
    answerer never imports langchain_core (0.42 s of a cold start); the LCEL chain gives the very same answer."""
    code = f"""
import json, sys
sys.path.insert(0, {str(ROOT / "tests")!r})
from helpers import SEED, FakeEmbedder
from qa import KnowledgeBase
kb = KnowledgeBase.open({str(tmp_path / "index")!r}, embedder=FakeEmbedder())
kb.ingest([SEED])
plain = kb.ask({QUESTION!r}).to_dict()
loaded = sorted(m for m in sys.modules if m.startswith(("langchain", "langsmith")))
from qa.answering.chain import build_chain
chosen, state = kb._ask_inputs({QUESTION!r}, None, 5, None, None, {{}})
lcel = build_chain(kb.retriever.search, chosen).invoke(state).to_dict()
print(json.dumps({{"loaded": loaded, "same": plain == lcel, "text": plain["text"]}}))
"""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report == {"loaded": [], "same": True, "text": report["text"]} and "novembre 1994" in report["text"]


def test_langchain_runs_the_chain_when_an_llm_answers_or_tracing_is_on(seeded, monkeypatch):
    from qa.answering import chain

    extractive = seeded.answerer("extractive")
    llm = LLMAnswerer(FakeListChatModel(responses=["En novembre 1994 [1]."]), name="fake")
    for variable in chain.TRACING_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    assert not chain.uses_langchain(extractive) and chain.uses_langchain(llm)
    monkeypatch.setenv("LANGCHAIN_TRACING_V2", "true")
    assert chain.uses_langchain(extractive)
    monkeypatch.setenv("LANGCHAIN_TRACING_V2", "false")
    assert not chain.uses_langchain(extractive)
    built = []
    real = chain.build_chain
    monkeypatch.setattr(chain, "build_chain", lambda *a: built.append(a) or real(*a))
    assert "novembre 1994" in seeded.ask(QUESTION, answerer=llm).text and len(built) == 1
