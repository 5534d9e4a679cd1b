"""Ranking metrics: recall@K, NDCG@K and MRR, per request (average them yourself or use ``evaluation``).

All functions take a ranked ``(n, K)`` matrix and return one value per row, so the same numbers can be
averaged overall or by segment. Padding ids (``-1``) never count as hits.
"""

from __future__ import annotations

import numpy as np


def _check_ranked(ranked: np.ndarray, n: int | None = None) -> np.ndarray:
    ranked = np.asarray(ranked)
    if ranked.ndim != 2:
        raise ValueError(f"ranked must be a 2-D (requests x K) array, got shape {ranked.shape}")
    if n is not None and ranked.shape[0] != n:
        raise ValueError(f"ranked has {ranked.shape[0]} rows but there are {n} targets")
    return ranked


def hits(ranked: np.ndarray, targets: np.ndarray, k: int) -> np.ndarray:
    """Boolean ``(n, k)`` matrix: whether the item at each of the first ``k`` ranks is the target."""
    targets = np.asarray(targets)
    ranked = _check_ranked(ranked, targets.shape[0])
    if k <= 0:
        raise ValueError(f"k must be positive, got {k}")
    top = ranked[:, :k]
    return (top == targets[:, None]) & (top >= 0)


def recall_at_k(ranked: np.ndarray, targets: np.ndarray, k: int) -> np.ndarray:
    """Recall@k with one relevant item per request (the purchase): 1.0 if it is in the top ``k``, else 0.0.

    A request whose target is missing (``-1``) scores 0.
    """
    return hits(ranked, targets, k).any(axis=1).astype(float)


def reciprocal_rank(ranked: np.ndarray, targets: np.ndarray, k: int | None = None) -> np.ndarray:
    """1 / rank of the target within the first ``k`` (default: all) ranks, 0 if absent (mean = MRR)."""
    ranked = _check_ranked(ranked)
    h = hits(ranked, targets, ranked.shape[1] if k is None else k)
    first = h.argmax(axis=1)
    return np.where(h.any(axis=1), 1.0 / (first + 1.0), 0.0)


def dcg(gains: np.ndarray, k: int) -> np.ndarray:
    """Discounted cumulative gain of the first ``k`` gains per row: sum(g_i / log2(i + 2)) (linear gains)."""
    gains = np.asarray(gains, dtype=float)[:, :k]
    discounts = 1.0 / np.log2(np.arange(gains.shape[1]) + 2.0)
    return gains @ discounts


def ndcg_at_k(gains: np.ndarray, ideal_gains: np.ndarray, k: int) -> np.ndarray:
    """NDCG@k from the graded gains of the ranked items and the best achievable gains.

    ``ideal_gains`` holds each request's highest gains in the whole collection (any order; they are
    sorted here). Requests with no relevant item at all score 0.
    """
    gains = _check_ranked(gains)
    ideal = -np.sort(-np.asarray(ideal_gains, dtype=float), axis=1)
    if ideal.shape[0] != gains.shape[0]:
        raise ValueError("gains and ideal_gains must have the same number of rows")
    best = dcg(ideal, k)
    return np.divide(dcg(gains, k), best, out=np.zeros_like(best), where=best > 0)
