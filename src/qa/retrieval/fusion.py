"""Fusing rankings: weighted reciprocal ranks, or weighted min-max normalised scores."""

from __future__ import annotations

from collections.abc import Sequence


def rrf_fuse(rankings: Sequence[Sequence[str]], weights: Sequence[float] | None = None, k: int = 60) -> list[tuple[str, float]]:
    """Weighted reciprocal rank fusion of several rankings (ids best first).

    ``score(id) = sum_i weights[i] / (k + rank_i(id))`` with 1-based ranks, over the rankings
    that hold ``id`` (a repeated id counts at its first rank). Best first; ties keep the order
    of first appearance (ranking by ranking, rank by rank).
    """
    if k < 0:
        raise ValueError(f"k={k} must be >= 0")
    if weights is None:
        weights = [1.0] * len(rankings)
    if len(weights) != len(rankings):
        raise ValueError(f"{len(weights)} weights for {len(rankings)} rankings")
    scores: dict[str, float] = {}
    for ranking, weight in zip(rankings, weights, strict=True):
        seen: set[str] = set()
        for rank, item in enumerate(ranking, start=1):
            if item not in seen:
                seen.add(item)
                scores[item] = scores.get(item, 0.0) + weight / (k + rank)
    order = {item: i for i, item in enumerate(scores)}
    return sorted(scores.items(), key=lambda kv: (-kv[1], order[kv[0]]))


def score_fuse(results: Sequence[Sequence[tuple[str, float]]], weights: Sequence[float] | None = None) -> list[tuple[str, float]]:
    """Weighted fusion of several scored result lists (``(id, score)``, higher is better).

    Each list's scores are min-max normalised over the candidates it returned (the best gets 1,
    the last 0; a list whose scores are all equal gives them all 1), then
    ``score(id) = sum_i weights[i] * norm_i(id) / sum(weights)``, an id missing from a list
    counting 0 there. In [0, 1]; 1 = best in every list. Best first; ties keep the order of first
    appearance. Unlike rank fusion it keeps how far apart the scores are: a passage far ahead in
    one ranking is not pulled level with the runner-up.
    """
    if weights is None:
        weights = [1.0] * len(results)
    if len(weights) != len(results):
        raise ValueError(f"{len(weights)} weights for {len(results)} result lists")
    total = sum(weights)
    if total <= 0:
        raise ValueError("the weights must not all be 0")
    scores: dict[str, float] = {}
    for result, weight in zip(results, weights, strict=True):
        best: dict[str, float] = {}
        for item, score in result:
            best.setdefault(item, score)  # a repeated id counts at its first (best) score
        if not best:
            continue
        lo, hi = min(best.values()), max(best.values())
        for item, score in best.items():
            norm = (score - lo) / (hi - lo) if hi > lo else 1.0
            scores[item] = scores.get(item, 0.0) + weight * norm / total
    order = {item: i for i, item in enumerate(scores)}
    return sorted(scores.items(), key=lambda kv: (-kv[1], order[kv[0]]))
