import json

import pytest

from qa.evaluation import first_relevant_rank, load_squad, mrr_at, recall_at


def test_rank_counts_distinct_articles():
    assert first_relevant_rank(["a", "a", "b", "c"], "c") == 3
    assert first_relevant_rank(["a", "b"], "z") is None


def test_recall_and_mrr_by_hand():
    ranks = [1, 3, None, 2, 11]
    assert recall_at(ranks, 1) == pytest.approx(1 / 5)
    assert recall_at(ranks, 5) == pytest.approx(3 / 5)
    assert mrr_at(ranks, 10) == pytest.approx((1 + 1 / 3 + 1 / 2) / 5)
    assert recall_at([], 5) == 0.0


def test_load_squad(tmp_path):
    data = {
        "version": "1",
        "data": [
            {
                "title": "Paris",
                "paragraphs": [
                    {
                        "context": "Paris est la capitale de la France.",
                        "qas": [
                            {
                                "id": "q1",
                                "question": "Quelle est la capitale ?",
                                "answers": [{"text": "Paris", "answer_start": 0}],
                            }
                        ],
                    }
                ],
            }
        ],
    }
    path = tmp_path / "s.json"
    path.write_text(json.dumps(data))
    [article], [q] = load_squad(path)
    assert (article.id, article.title, q.doc_id, q.answers) == ("0-0", "Paris", "0-0", ["Paris"])


def test_french_answer_normalisation_and_scores():
    from qa.evaluation import exact_match, f1_score, normalize_answer, quote_contains_answer

    assert normalize_answer("L'Union européenne, de l’Asie !") == "union européenne asie"
    assert exact_match("en novembre 1994", ["Novembre 1994."]) == 0.0
    assert exact_match("la France", ["France"]) == 1.0
    # « en novembre 1994 » vs « novembre 1994 »: precision 2/3, recall 1 -> F1 0.8
    assert f1_score("en novembre 1994", ["novembre 1994"]) == pytest.approx(0.8)
    assert f1_score("", ["x"]) == 0.0 and f1_score("Paris", ["Lyon", "paris"]) == 1.0
    assert quote_contains_answer(["En novembre 1994, la délégation de l’UE…"], ["novembre 1994"])
    assert not quote_contains_answer(["En décembre 1993, …"], ["novembre 1994"])
    assert not quote_contains_answer(["Les 1994 délégués"], ["199"])  # whole tokens only


def test_threshold_table_by_hand():
    from qa.evaluation import threshold_table

    answerable = [(0.9, 1.0), (0.5, 1.0), (0.2, 0.0), (0.1, 1.0)]
    unanswerable = [0.05, 0.3, 0.6]
    [row] = threshold_table(answerable, unanswerable, [0.4])
    assert row == {
        "threshold": 0.4,
        "false_abstention_rate": 0.5,  # 0.2 and 0.1 fall below
        "quote_contains_answer": 0.5,  # hits kept: 0.9 and 0.5
        "unanswerable_abstention_rate": round(2 / 3, 4),
    }
