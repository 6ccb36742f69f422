"""BM25 over SQLite FTS5 (qa.index.lexical): ranking, analysis, writes, filters, transactions, RRF."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from qa.filters import Filters
from qa.index.lexical import CHUNKS_TABLE, FTS_TABLE, LexicalIndex, LexicalRow, query_expression
from qa.retrieval.fusion import rrf_fuse, score_fuse
from qa.schema import ArticleMeta

from helpers import lexical_row

ROWS = [
    lexical_row(
        "kz#0", "kz", "Le bureau de la délégation de l'Union européenne a ouvert à Almaty en novembre 1994.", "UE et Kazakhstan"
    ),
    lexical_row("kz#1", "kz", "En décembre 1993, le Kazakhstan a ouvert son bureau à Bruxelles.", "UE et Kazakhstan"),
    lexical_row(
        "foot#0", "foot", "Le match de football s'est joué au stade de France, dit la presse.", "Sport", "AFP", "2022-03-01"
    ),
    lexical_row("vin#0", "vin", "Les vendanges en Bourgogne ont commencé tôt, dit la presse.", "Vins", "Le Monde", "2021-09-15"),
    lexical_row("vin#1", "vin", "Un millésime précoce : la presse salue les vendanges.", "Vins", "Le Monde", ""),
]


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    """Like the manifest's: autocommit, WAL."""
    db = sqlite3.connect(str(tmp_path / "lexical.sqlite3"), isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    yield db
    db.close()


@pytest.fixture
def index(conn: sqlite3.Connection) -> LexicalIndex:
    idx = LexicalIndex(conn)
    idx.add(ROWS)
    return idx


def ids(hits: list[tuple[str, float]]) -> list[str]:
    return [chunk_id for chunk_id, _ in hits]


def test_rare_shared_terms_rank_first_with_positive_scores(index: LexicalIndex) -> None:
    hits = index.search("Quand le bureau de l'UE a-t-il ouvert à Almaty ?", 5)
    assert ids(hits)[:2] == ["kz#0", "kz#1"]
    scores = [s for _, s in hits]
    assert scores == sorted(scores, reverse=True) and all(s > 0 for s in scores)
    assert ids(index.search("vendanges précoces", 5))[0] == "vin#1"


def test_elisions_and_accents_match(index: LexicalIndex) -> None:
    assert ids(index.search("Union Europeenne", 1)) == ["kz#0"]
    assert ids(index.search("l'UNION EUROPÉENNE", 1)) == ["kz#0"]
    assert ids(index.search("délégations", 1)) == ["kz#0"]  # stemmed


def test_title_is_indexed(index: LexicalIndex) -> None:
    assert set(ids(index.search("Kazakhstan", 5))) == {"kz#0", "kz#1"}
    assert ids(index.search("sport", 5)) == ["foot#0"]


def test_or_semantics_and_k(index: LexicalIndex) -> None:
    assert set(ids(index.search("football Bourgogne", 10))) == {"foot#0", "vin#0"}
    assert len(index.search("presse", 2)) == 2
    assert index.search("presse", 0) == []


def test_add_is_idempotent_and_replaces(index: LexicalIndex) -> None:
    index.add(ROWS)
    assert index.count() == len(ROWS)
    index.add([lexical_row("foot#0", "foot", "Le tournoi de rugby à Toulouse.", "Sport", "AFP", "2022-03-01")])
    assert index.count() == len(ROWS)
    assert index.search("football", 5) == []
    assert ids(index.search("rugby", 5)) == ["foot#0"]
    index.add([lexical_row("x", "d", "premier texte"), lexical_row("x", "d", "second texte")])  # the last one wins
    assert ids(index.search("premier", 5)) == [] and ids(index.search("second", 5)) == ["x"]
    index.add([])


def test_delete_chunks_and_doc(index: LexicalIndex, conn: sqlite3.Connection) -> None:
    index.delete_chunks(["kz#1", "unknown"])
    index.delete_chunks([])
    assert index.count() == len(ROWS) - 1
    assert ids(index.search("Bruxelles", 5)) == []
    index.delete_doc("vin")
    index.delete_doc("unknown")
    assert index.doc_ids() == {"kz", "foot"}
    assert ids(index.search("presse vendanges", 5)) == ["foot#0"]
    # no orphan left in the FTS table
    assert conn.execute(f"SELECT COUNT(*) FROM {FTS_TABLE}").fetchone()[0] == index.count() == 2


def test_delete_doc_uses_the_doc_id_index(index: LexicalIndex, conn: sqlite3.Connection) -> None:
    plan = " ".join(str(r) for r in conn.execute(f"EXPLAIN QUERY PLAN DELETE FROM {CHUNKS_TABLE} WHERE doc_id = ?", ("x",)))
    assert "USING INDEX" in plan or "USING COVERING INDEX" in plan


def test_filters(index: LexicalIndex) -> None:
    q = "presse"
    assert set(ids(index.search(q, 10))) == {"foot#0", "vin#0", "vin#1"}
    assert ids(index.search(q, 10, Filters.of(source="AFP"))) == ["foot#0"]
    assert set(ids(index.search(q, 10, Filters.of(source=["AFP", "Le Monde"])))) == {"foot#0", "vin#0", "vin#1"}
    assert set(ids(index.search(q, 10, Filters.of(source=[])))) == {"foot#0", "vin#0", "vin#1"}  # empty = no filter
    assert index.search(q, 10, Filters.of(source="Reuters")) == []
    assert set(ids(index.search(q, 10, Filters.of(date_from="2022-01-01")))) == {"foot#0"}  # undated never passes a range
    assert ids(index.search(q, 10, Filters.of(date_to="2022-01-01"))) == ["vin#0"]  # undated excluded by date_to
    assert ids(index.search(q, 10, Filters.of(date_from="2021-09-15", date_to="2021-09-15"))) == ["vin#0"]  # inclusive
    assert ids(index.search(q, 10, Filters.of(source="AFP", date_to="2021-12-31"))) == []
    assert set(ids(index.search(q, 10, Filters.of(exclude=["vin"])))) == {"foot#0"}
    assert ids(index.search(q, 10, Filters.of(exclude="foot", date_from="2021-01-01"))) == ["vin#0"]


def test_clear_count_doc_ids(index: LexicalIndex, conn: sqlite3.Connection) -> None:
    assert index.count() == 5 and index.doc_ids() == {"kz", "foot", "vin"}
    index.clear()
    assert index.count() == 0 and index.doc_ids() == set() and index.search("presse", 5) == []
    assert conn.execute(f"SELECT COUNT(*) FROM {FTS_TABLE}").fetchone()[0] == 0
    index.add(ROWS[:1])
    assert index.count() == 1


def test_reopening_keeps_the_data(index: LexicalIndex, conn: sqlite3.Connection, tmp_path: Path) -> None:
    assert LexicalIndex(conn).count() == 5
    other = sqlite3.connect(str(tmp_path / "lexical.sqlite3"))  # autocommit writes are visible elsewhere
    try:
        assert LexicalIndex(other).count() == 5
    finally:
        other.close()


@pytest.mark.parametrize(
    "query",
    [
        "",
        "   ",
        '"',
        '""',
        '"presse',
        "*",
        "presse*",
        "NEAR(presse vendanges)",
        "NEAR(",
        "AND",
        "presse AND",
        "OR presse",
        "NOT presse",
        "-presse",
        "title:presse",
        "body : presse",
        "^presse",
        "(presse",
        "presse)",
        "{title body}: presse",
        "presse + vendanges",
        "🍷🎉",
        "🍷 presse 🎉",
        "_",
        "presse_vendanges",
        "l' d' qu'",
        "le la les de",
        "\x00presse",
        "presse\n\t\r",
        "ﬁn œuvre Straße ı",
        "Москва 東京 القاهرة",
        "presse " * 2000,
        " ".join(f"mot{i}" for i in range(1000)),
    ],
)
def test_hostile_queries_are_plain_words(index: LexicalIndex, query: str) -> None:
    hits = index.search(query, 5)
    assert all(chunk_id in {r.chunk_id for r in ROWS} for chunk_id, _ in hits)
    if "presse" in query and "presse_" not in query:
        assert hits, query


def test_query_expression_quotes_every_term() -> None:
    assert query_expression('Le bureau "ouvert" (NEAR*) à Almaty') == '"bureau" OR "ouvert" OR "near" OR "almaty"'
    assert query_expression("bureau bureaux BUREAU") == '"bureau"'
    assert query_expression("le la ?!") is None
    assert query_expression("") is None


def test_operators_are_not_operators(index: LexicalIndex) -> None:
    # as FTS5 syntax these would exclude or require; as words they only add (absent) terms
    assert set(ids(index.search("presse NOT vendanges", 10))) == {"foot#0", "vin#0", "vin#1"}
    assert index.search("NEAR AND OR NOT", 10) == []


def test_caller_rollback_leaves_nothing(index: LexicalIndex, conn: sqlite3.Connection) -> None:
    conn.execute("BEGIN")
    index.add([lexical_row("new#0", "new", "Une nouvelle usine à Lyon.")])
    index.delete_doc("kz")
    index.delete_chunks(["foot#0"])
    assert index.count() == 3 and ids(index.search("usine", 5)) == ["new#0"]
    index.clear()
    assert conn.in_transaction  # never committed on our own
    conn.execute("ROLLBACK")
    assert index.count() == 5 and index.doc_ids() == {"kz", "foot", "vin"}
    assert index.search("usine", 5) == []
    assert ids(index.search("Almaty", 5)) == ["kz#0"]


def test_caller_commit_keeps_everything(index: LexicalIndex, conn: sqlite3.Connection) -> None:
    conn.execute("BEGIN IMMEDIATE")
    index.add([lexical_row("new#0", "new", "Une nouvelle usine à Lyon.")])
    index.delete_doc("kz")
    conn.execute("COMMIT")
    assert index.count() == 4 and ids(index.search("usine", 5)) == ["new#0"]


def test_a_failed_write_is_undone_and_keeps_the_callers_transaction(index: LexicalIndex, conn: sqlite3.Connection) -> None:
    conn.execute("BEGIN")
    index.add([lexical_row("new#0", "new", "Une nouvelle usine à Lyon.")])
    bad = LexicalRow("bad#0", "texte", ArticleMeta(None))  # type: ignore[arg-type]  # NOT NULL doc_id
    with pytest.raises(sqlite3.IntegrityError):
        index.add([lexical_row("kz#0", "kz", "remplacé"), bad])
    assert conn.in_transaction
    assert ids(index.search("Almaty", 5)) == ["kz#0"] and index.search("remplacé", 5) == []  # kz#0 not half replaced
    assert ids(index.search("usine", 5)) == ["new#0"]  # the caller's earlier work is still there
    conn.execute("COMMIT")
    assert index.count() == 6


def test_legacy_transaction_control_leaves_the_commit_to_the_caller(tmp_path: Path) -> None:
    db = sqlite3.connect(str(tmp_path / "legacy.sqlite3"))  # Python's default: implicit BEGIN before writes
    try:
        idx = LexicalIndex(db)
        db.commit()
        idx.add(ROWS)
        assert db.in_transaction
        db.rollback()
        assert idx.count() == 0
        idx.add(ROWS)
        db.commit()
        assert idx.count() == 5
    finally:
        db.close()


def test_rrf_hand_computed() -> None:
    fused = dict(rrf_fuse([["a", "b", "c"], ["b", "d"]], k=60))
    assert fused["a"] == pytest.approx(1 / 61)
    assert fused["b"] == pytest.approx(1 / 62 + 1 / 61)
    assert fused["c"] == pytest.approx(1 / 63)
    assert fused["d"] == pytest.approx(1 / 62)
    assert [i for i, _ in rrf_fuse([["a", "b", "c"], ["b", "d"]])] == ["b", "a", "d", "c"]


def test_rrf_weights_and_k() -> None:
    fused = rrf_fuse([["a", "b"], ["b", "a"]], weights=[2.0, 1.0], k=0)
    assert fused == [("a", pytest.approx(2 / 1 + 1 / 2)), ("b", pytest.approx(2 / 2 + 1 / 1))]
    assert [i for i, _ in rrf_fuse([["a", "b"], ["b", "a"]], weights=[1.0, 3.0], k=1)] == ["b", "a"]
    assert rrf_fuse([["a"], ["b"]], weights=[0.0, 1.0]) == [("b", pytest.approx(1 / 61)), ("a", 0.0)]
    with pytest.raises(ValueError):
        rrf_fuse([["a"]], weights=[1.0, 1.0])
    with pytest.raises(ValueError):
        rrf_fuse([["a"]], k=-1)


def test_rrf_ties_keep_first_appearance() -> None:
    assert [i for i, _ in rrf_fuse([["x", "y"], ["y", "x"]])] == ["x", "y"]  # equal sums
    assert [i for i, _ in rrf_fuse([["p"], ["q"], ["r"]])] == ["p", "q", "r"]
    assert rrf_fuse([["a", "a", "b"]], k=0) == [("a", 1.0), ("b", pytest.approx(1 / 3))]  # a repeat counts once
    assert rrf_fuse([]) == [] and rrf_fuse([[], []]) == []


def test_prune_terms_drops_the_most_common_terms_over_the_budget():
    from qa.index.lexical import prune_terms

    df = {"autr": 19070, "nom": 8732, "john": 526, "connor": 2}
    terms = ["autr", "nom", "john", "connor"]
    assert prune_terms(terms, df, budget=100_000) == terms  # under budget: all kept
    assert prune_terms(terms, df, budget=8000) == ["john", "connor"]  # order of the query kept
    assert prune_terms(terms, df, budget=10) == ["connor"]
    assert prune_terms(["autr", "nom"], df, budget=10) == ["nom"]  # the rarest term is always kept
    assert prune_terms(["zzz", "autr"], df, budget=10) == ["zzz"]  # unknown terms cost nothing


def test_common_terms_are_left_out_only_past_the_budget(monkeypatch):
    import sqlite3

    import qa.index.lexical
    from qa.index.lexical import LexicalIndex

    index = LexicalIndex(sqlite3.connect(":memory:"))
    rows = [lexical_row(f"c{i}", f"d{i}", "le gouvernement annonce une réforme") for i in range(50)]
    rows.append(lexical_row("rare", "dr", "le gouvernement annonce la réforme des retraites"))
    index.add(rows)
    assert index.doc_freq(["gouvern", "retrait", "absent"]) == {"gouvern": 51, "retrait": 1}
    query = "Quelle réforme des retraites le gouvernement annonce-t-il ?"
    assert len(index.search(query, k=100)) == 51  # every chunk holding a term is scored
    monkeypatch.setattr(qa.index.lexical, "MATCH_BUDGET", 10)
    assert [cid for cid, _ in index.search(query, k=100)] == ["rare"]  # only the rare term is matched


def test_score_fuse_normalises_each_list_and_weights_them() -> None:
    dense = [("a", 0.9), ("b", 0.8), ("c", 0.5)]  # normalised: a 1, b 0.75, c 0
    lexical = [("b", 12.0), ("d", 4.0), ("a", 2.0)]  # normalised: b 1, d 0.2, a 0
    fused = dict(score_fuse([dense, lexical]))
    assert fused == pytest.approx({"a": 0.5, "b": 0.875, "c": 0.0, "d": 0.1})
    assert [i for i, _ in score_fuse([dense, lexical])] == ["b", "a", "d", "c"]
    # a weight of 3 on the lexical list: a = 1/4, b = (0.75 + 3) / 4
    weighted = dict(score_fuse([dense, lexical], weights=[1.0, 3.0]))
    assert weighted["a"] == pytest.approx(0.25) and weighted["b"] == pytest.approx(0.9375)


def test_score_fuse_keeps_the_gap_that_rank_fusion_loses() -> None:
    # « a » is far ahead in the dense list, barely behind in the lexical one: ranks tie, scores do not
    dense = [("a", 0.95), ("b", 0.60), ("c", 0.59)]
    lexical = [("b", 10.0), ("a", 9.9), ("c", 1.0)]
    assert [i for i, _ in rrf_fuse([[i for i, _ in dense], [i for i, _ in lexical]])][:2] == ["a", "b"]
    fused = score_fuse([dense, lexical])
    assert fused[0][0] == "a" and fused[0][1] > fused[1][1] + 0.4


def test_score_fuse_edge_cases() -> None:
    assert score_fuse([[], []]) == []
    assert score_fuse([[("x", 0.3)], []]) == [("x", pytest.approx(0.5))]  # a lone result is its list's best
    assert score_fuse([[("x", 1.0), ("x", 0.2), ("y", 0.2)]])[0] == ("x", pytest.approx(1.0))  # first score counts
    with pytest.raises(ValueError, match="weights"):
        score_fuse([[("x", 1.0)]], weights=[1.0, 2.0])
    with pytest.raises(ValueError, match="not all be 0"):
        score_fuse([[("x", 1.0)]], weights=[0.0])
