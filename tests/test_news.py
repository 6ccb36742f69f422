"""The news question set (``benchmarks/data/news-questions.jsonl``), ``qa eval news`` and ``qa gen-news``.

The articles here are written for the tests (OrangeSum's text never enters the repository)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from qa.errors import DocumentError
from qa.evaluation import load_news_questions, news_split

REPO = Path(__file__).resolve().parents[1]
QUESTION_SET = REPO / "benchmarks" / "data" / "news-questions.jsonl"

ARTICLES = [
    {
        "id": "t-almaty",
        "title": "L'UE et le Kazakhstan",
        "date": "2022-02-10",
        "text": "Le représentant spécial de l'Union européenne s'est rendu à Nour-Soultan en février 2022. "
        "En décembre 1993, le Kazakhstan a ouvert son bureau à Bruxelles. "
        "La délégation de l'Union européenne a commencé ses travaux à Almaty en novembre 1994. "
        "Les échanges entre les deux partenaires ont atteint 24 milliards d'euros en 2021.",
    },
    {
        "id": "t-lyon",
        "title": "Un nouveau pont à Lyon",
        "date": "2020-06-03",
        "text": "La métropole de Lyon a inauguré mardi un pont piéton au-dessus du Rhône. "
        "Le chantier a coûté 12 millions d'euros et a duré trois ans. "
        "Le maire Grégory Doucet a salué un ouvrage attendu depuis 2015.",
    },
    {
        "id": "t-bordeaux",
        "title": "Tramway à Bordeaux",
        "date": "2019-09-12",
        "text": "Bordeaux a ouvert une quatrième ligne de tramway en septembre 2019. "
        "La ligne dessert 22 stations entre la gare Saint-Jean et Mérignac. "
        "Alain Juppé avait lancé le projet en 2012.",
    },
]


def _question(qid: str, article: str, kind: str, question: str, answers: list[str], trap: str = "") -> dict:
    text = next(a["text"] for a in ARTICLES if a["id"] == article)
    row = {
        "id": qid,
        "kind": kind,
        "article": article,
        "question": question,
        "answers": [{"text": a, "start": text.index(a)} for a in answers],
    }
    if trap:
        row["trap"] = {"article": article, "start": text.index(trap), "text": trap}
    return row


QUESTIONS = [
    _question("q1", "t-lyon", "plain", "Combien a coûté le chantier du pont piéton de Lyon ?", ["12 millions d'euros"]),
    _question(
        "q2",
        "t-almaty",
        "near-miss",
        "Quand la délégation de l'UE a-t-elle commencé son travail à Almaty ?",
        ["novembre 1994"],
        trap="décembre 1993",
    ),
    _question(
        "q3",
        "t-bordeaux",
        "unanswerable",
        "Combien de voyageurs la quatrième ligne du tramway de Bordeaux transporte-t-elle ?",
        [],
    ),
]


def _write(tmp_path: Path) -> tuple[Path, Path]:
    articles = tmp_path / "articles.jsonl"
    articles.write_text("".join(json.dumps(a, ensure_ascii=False) + "\n" for a in ARTICLES), encoding="utf-8")
    questions = tmp_path / "questions.jsonl"
    questions.write_text("".join(json.dumps(q, ensure_ascii=False) + "\n" for q in QUESTIONS), encoding="utf-8")
    return articles, questions


# -- the shipped question set ---------------------------------------------------------------------------------------


def test_the_shipped_set_has_the_size_and_mix_the_issue_asks() -> None:
    questions = load_news_questions(QUESTION_SET)
    kinds = Counter(q.kind for q in questions)
    assert len(questions) >= 400
    assert len({q.doc_id for q in questions}) >= 150
    assert kinds["near-miss"] / len(questions) >= 0.25
    assert kinds["unanswerable"] / len(questions) >= 0.20
    assert len({q.id for q in questions}) == len(questions)
    for q in questions:
        assert q.text.rstrip().endswith("?"), q.id
        assert (q.kind == "unanswerable") == (not q.answers), q.id
        assert (q.kind == "near-miss") == bool(q.trap), q.id


def test_the_shipped_set_is_split_by_article() -> None:
    questions = load_news_questions(QUESTION_SET)
    sides: dict[str, set[str]] = {}
    for q in questions:
        sides.setdefault(q.doc_id, set()).add(q.split)
        assert q.split == news_split(q.doc_id), q.id  # the stored split is the hash's
    assert all(len(s) == 1 for s in sides.values())
    dev = [q for q in questions if q.split == "dev"]
    assert 0.35 <= len(dev) / len(questions) <= 0.65
    assert {q.kind for q in dev} == {"plain", "near-miss", "unanswerable"}


def test_the_shipped_set_keeps_no_article_text() -> None:
    """Only questions, ids and short answer strings: never an article's sentences (OrangeSum has no licence)."""
    for line in QUESTION_SET.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        assert set(row) <= {"id", "split", "kind", "article", "question", "answers", "trap"}
        for a in row["answers"] + ([row["trap"]] if "trap" in row else []):
            assert len(a["text"]) <= 80, (row["id"], a["text"])


def test_a_bad_question_line_names_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "q.jsonl"
    path.write_text(
        json.dumps({"id": "a", "question": "Où ?", "article": "x", "kind": "plain", "answers": [{"text": "Lyon"}]})
        + "\n"
        + json.dumps({"id": "b", "question": "Où ?", "article": "x", "kind": "unanswerable", "answers": [{"text": "Lyon"}]})
        + "\n",
        encoding="utf-8",
    )
    with pytest.raises(DocumentError) as err:
        load_news_questions(path)
    assert "q.jsonl:2:" in str(err.value) and "unanswerable" in str(err.value)


# -- qa eval news -----------------------------------------------------------------------------------------------------


def test_qa_eval_news_measures_answers_traps_and_abstention(
    tmp_path: Path, use_fake_embedder: object, capsys: pytest.CaptureFixture[str]
) -> None:
    from qa.cli import main

    articles, questions = _write(tmp_path)
    index = tmp_path / "news-index"
    code = main(
        [
            "eval",
            "news",
            str(questions),
            "--articles",
            str(articles),
            "--corpus-size",
            "3",
            "--index",
            str(index),
            "--json",
            "--per-question",
        ]
    )
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["questions"] == 3 and result["articles"] == 3
    assert result["kinds"] == {"plain": 1, "near-miss": 1, "unanswerable": 1}
    rows = {r["id"]: r for r in result["per_question"]}
    # the lexical answerer quotes the Almaty sentence, not the Brussels one; the Lyon question is counted by its quote
    assert rows["q2"]["hit"] == 1.0 and rows["q2"]["trap"] == 0.0 and "Almaty" in rows["q2"]["quote"]
    assert rows["q1"]["hit"] == float(not rows["q1"]["abstained"] and "12 millions d'euros" in rows["q1"]["quote"])
    assert rows["q1"]["article"] == float(not rows["q1"]["abstained"] and "Lyon" in rows["q1"]["quote"])
    assert result["answers"]["quote_contains_answer"] == (rows["q1"]["hit"] + 1.0) / 2
    assert result["near_miss"] == {"quote_contains_answer": 1.0, "trap_quoted": 0.0}
    assert result["unanswerable"]["abstention_rate"] == float(rows["q3"]["abstained"])


def test_qa_eval_news_split_and_missing_articles(
    tmp_path: Path, use_fake_embedder: object, capsys: pytest.CaptureFixture[str]
) -> None:
    from qa.cli import main

    articles, questions = _write(tmp_path)
    only_two = tmp_path / "two.jsonl"
    only_two.write_text("".join(articles.read_text(encoding="utf-8").splitlines(keepends=True)[:2]), encoding="utf-8")
    code = main(["eval", "news", str(questions), "--articles", str(only_two), "--index", str(tmp_path / "i")])
    assert code == 1
    err = capsys.readouterr().err
    assert "no article t-bordeaux" in err and "--articles" in err
    code = main(
        ["eval", "news", str(questions), "--articles", str(articles), "--split", "dev", "--index", str(tmp_path / "i"), "--json"]
    )
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["questions"] == sum(news_split(q["article"]) == "dev" for q in QUESTIONS)


# -- qa gen-news ------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_gen_news_writes_squad2_questions_with_unanswerable_swaps(tmp_path: Path) -> None:
    """Real spaCy French model: questions whose answers sit at their offsets, swapped variants whose new name the
    article never mentions, the same file for the same seed, and the dev part's articles never read."""
    from qa.cli import main

    articles, _ = _write(tmp_path)
    more = [
        {
            "id": f"t-extra-{i}",
            "title": "",
            "text": f"Le festival de Marseille a accueilli {1000 + i} spectateurs en juillet 2018. "
            f"La ville de Toulouse prépare une exposition pour le mois de mars 2019. "
            f"Le ministre Jean Dupont a annoncé {i + 3} millions d'euros pour la culture à Nantes.",
        }
        for i in range(6)
    ]
    with articles.open("a", encoding="utf-8") as fh:
        fh.writelines(json.dumps(a, ensure_ascii=False) + "\n" for a in more)
    exclude = tmp_path / "set.jsonl"
    dev_article = next(a["id"] for a in ARTICLES + more if news_split(a["id"]) == "dev")
    exclude.write_text(
        json.dumps({"id": "x", "question": "Où ?", "article": dev_article, "kind": "unanswerable", "answers": []}) + "\n",
        encoding="utf-8",
    )
    out = tmp_path / "gen.json"
    args = ["gen-news", "--articles", str(articles), "--start", "0", "--exclude", str(exclude), "--swap-share", "1", "-q"]
    assert main([*args, "--out", str(out)]) == 0
    data = json.loads(out.read_text(encoding="utf-8"))
    titles = {e["title"] for e in data["data"]}
    assert dev_article not in titles and titles
    texts = {a["id"]: a["text"] for a in ARTICLES + more}
    answerable = impossible = 0
    for entry in data["data"]:
        context = entry["paragraphs"][0]["context"]
        assert context == texts[entry["title"]]
        for qa in entry["paragraphs"][0]["qas"]:
            assert qa["question"].endswith(" ?")
            if qa["is_impossible"]:
                impossible += 1
                assert not qa["answers"] and qa["plausible_answers"]
                original = next(q for q in entry["paragraphs"][0]["qas"] if q["id"] == qa["id"].removesuffix("-swapped"))
                assert qa["question"] != original["question"]
            else:
                answerable += 1
                a = qa["answers"][0]
                assert context[a["answer_start"] : a["answer_start"] + len(a["text"])] == a["text"]
                assert a["text"] not in qa["question"]
    assert answerable >= 6 and impossible >= 1
    again = tmp_path / "again.json"
    assert main([*args, "--out", str(again)]) == 0
    assert json.loads(again.read_text(encoding="utf-8"))["data"] == data["data"]


def test_the_split_of_piaf_is_the_same_with_generated_files_beside(tmp_path: Path) -> None:
    """Each group of files is split on its own: adding generated news or SQuAD 2.0 never moves a PIAF article."""
    from qa.training.data import load_examples, split_examples

    def squad(path: Path, titles: list[str], extra: dict | None = None) -> Path:
        data = {
            "data": [
                {
                    "title": t,
                    "paragraphs": [
                        {
                            "context": f"{t} est une ville. Elle compte 100 habitants.",
                            "qas": [
                                {
                                    "id": f"{t}-q",
                                    "question": f"Combien d'habitants compte {t} ?",
                                    "answers": [{"text": "100 habitants", "answer_start": len(t) + 28}],
                                }
                            ],  # fmt: skip
                        }
                    ],
                }
                for t in titles
            ],
            **(extra or {}),
        }
        path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
        return path

    piaf = squad(tmp_path / "piaf.json", [f"Ville{i}" for i in range(20)])
    generated = squad(tmp_path / "gen.json", [f"orangesum-{i}" for i in range(30)], {"meta": {"generated_by": "qa gen-news"}})
    alone = split_examples(load_examples([piaf]), 0.25, 13)
    both = split_examples(load_examples([piaf, generated]), 0.25, 13)
    assert {e.title for e in alone[1]} == {e.title for e in both[1] if e.title.startswith("Ville")}
    assert any(e.title.startswith("orangesum") for e in both[1])


def test_mixed_order_follows_the_shares() -> None:
    from qa.training.trainer import mixed_order, parse_mix

    groups = ["squad"] * 50 + ["generated"] * 500
    order = mixed_order(groups, parse_mix("squad=0.5,generated=0.5"), 400, 4, seed=3)
    drawn = Counter(groups[i] for step in order for i in step)
    assert len(order) == 400 and all(len(step) == 4 for step in order)
    assert 0.4 < drawn["squad"] / 1600 < 0.6
    assert order == mixed_order(groups, parse_mix("squad=0.5,generated=0.5"), 400, 4, seed=3)


def test_fit_combiner_reads_the_news_set_by_part(tmp_path: Path) -> None:
    """``qa fit-combiner --news``: each article its own paragraph (its id is what retrieval excludes), the
    unanswerable questions flagged, the two parts apart."""
    from qa.training.combiner import news_examples
    from qa.training.retrieval import doc_id

    _, questions = _write(tmp_path)
    parts = {part: news_examples(questions, part) for part in ("train", "dev")}
    assert sorted(e.id for e in parts["train"] + parts["dev"]) == ["q1", "q2", "q3"]
    for part, examples in parts.items():
        for e in examples:
            source = next(q for q in QUESTIONS if q["id"] == e.id)
            assert news_split(source["article"]) == part and doc_id(e) == source["article"]
            assert e.impossible == (source["kind"] == "unanswerable")
            assert e.answers == [a["text"] for a in source["answers"]]
