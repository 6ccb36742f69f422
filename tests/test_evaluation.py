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
