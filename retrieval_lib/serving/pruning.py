"""Threshold pruning: cut a retriever's candidates at one global score threshold.

A retrieval stage hands its candidates to a more expensive ranker; every candidate it can drop saves
ranking work. The cheapest rule is a single score threshold for all queries, which only works when a
score means the same thing for every query. The paper's multi-part hinge loss is built for this
[paper]; chapter 8 measures it. Here a candidate list is a :class:`~retrieval_lib.serving.base.SearchResult`
(``PAD`` ids, ``-inf`` scores pad it), and which candidates are labels is given as a boolean mask, so
this module never reads latent truth itself.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from retrieval_lib.serving.base import PAD, SearchResult


def prune(result: SearchResult, threshold: float) -> SearchResult:
    """Keep the candidates scoring at least ``threshold``; the rest become padding (order kept).

    Kept candidates stay in their places at the front of each row, since a result is best first.
    """
    ids, scores = np.asarray(result.ids), np.asarray(result.scores)
    if ids.shape != scores.shape:
        raise ValueError(f"ids {ids.shape} and scores {scores.shape} differ in shape")
    if math.isnan(threshold):
        raise ValueError("the pruning threshold is NaN")
    keep = (ids != PAD) & (scores >= threshold)
    return SearchResult(np.where(keep, ids, PAD), np.where(keep, scores, -np.inf).astype(scores.dtype))


def _check(scores: np.ndarray, hits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scores, hits = np.asarray(scores, dtype=np.float64), np.asarray(hits, dtype=bool)
    if scores.shape != hits.shape or scores.ndim != 2:
        raise ValueError(f"need (queries, candidates) scores and hits of one shape, got {scores.shape} and "
                         f"{hits.shape}")
    if np.isnan(scores).any():
        raise ValueError("candidate scores contain NaN")
    if (hits & ~np.isfinite(scores)).any():
        raise ValueError("a label sits on a padded candidate (score -inf)")
    return scores, hits


def threshold_for_retention(scores: np.ndarray, hits: np.ndarray, keep: float) -> float:
    """The highest global threshold that keeps at least a share ``keep`` of the labels among the candidates.

    ``scores`` ``(n, k)`` are the candidates' scores (``-inf`` for padding), ``hits`` marks the
    candidates that are labels. With the label scores sorted from high to low, the threshold is the
    ``ceil(keep * n_labels)``-th of them: everything scoring at least that much is kept.
    """
    scores, hits = _check(scores, hits)
    return _threshold(np.sort(scores[hits])[::-1], keep)


def _threshold(labels: np.ndarray, keep: float) -> float:
    """The ``ceil(keep * n)``-th of the label scores ``labels``, sorted from high to low."""
    if not 0 < keep <= 1:
        raise ValueError(f"keep must be in (0, 1], got {keep!r}")
    if labels.size == 0:
        raise ValueError("the candidates hold no labels: nothing to keep")
    return float(labels[math.ceil(round(keep * labels.size, 9)) - 1])


def pruning_effect(scores: np.ndarray, hits: np.ndarray, threshold: float) -> tuple[float, float]:
    """``(labels kept, candidates removed)``: shares of the labels and of the candidates a threshold cuts.

    Labels kept counts only labels that were among the candidates; padding is not a candidate.
    """
    scores, hits = _check(scores, hits)
    real = np.isfinite(scores)
    if not real.any():
        raise ValueError("there are no candidates to prune")
    kept = scores >= threshold
    labels_kept = float(kept[hits].mean()) if hits.any() else float("nan")
    return labels_kept, float((~kept & real).sum() / real.sum())


def pruning_curve(scores: np.ndarray, hits: np.ndarray, segments: Sequence[str] | np.ndarray | None = None,
                  keeps: Sequence[float] = tuple(np.round(np.linspace(0.5, 1.0, 26), 2))) -> pd.DataFrame:
    """The pruning curve: for each target share of labels kept, one global threshold and what it does.

    The threshold is set on all queries (:func:`threshold_for_retention`); the table then reports, for
    all queries and for each query segment (``segments``, one name per row of ``scores``), the share
    of labels kept and the share of candidates removed (as :func:`pruning_effect` would, computed here
    from sorted scores so that a whole curve over a million candidates takes a second). Columns:
    ``keep``, ``threshold``, ``segment``, ``labels_kept``, ``removed``.
    """
    scores, hits = _check(scores, hits)
    groups = {"all": np.ones(len(scores), dtype=bool)}
    if segments is not None:
        segments = np.asarray(segments, dtype=object)
        if segments.shape != (len(scores),):
            raise ValueError(f"need one segment per query ({len(scores)}), got {segments.shape}")
        groups |= {str(g): segments == g for g in pd.unique(segments)}
    by_score = np.sort(scores[hits])[::-1]
    thresholds = np.array([_threshold(by_score, keep) for keep in keeps])
    rows = []
    for name, rows_in in groups.items():
        part, part_hits = scores[rows_in], hits[rows_in]
        candidates = np.sort(part[np.isfinite(part)])
        labels = np.sort(part[part_hits])
        if candidates.size == 0:
            raise ValueError(f"segment {name!r} has no candidates to prune")
        removed = np.searchsorted(candidates, thresholds, side="left") / candidates.size
        kept = (1 - np.searchsorted(labels, thresholds, side="left") / labels.size if labels.size
                else np.full(len(thresholds), np.nan))
        rows += [{"keep": float(k), "threshold": float(t), "segment": name, "labels_kept": float(lk),
                  "removed": float(r)} for k, t, lk, r in zip(keeps, thresholds, kept, removed, strict=True)]
    # rows run group by group; a stable sort on keep lists every group for each keep, in group order
    return pd.DataFrame(rows).sort_values("keep", kind="stable").reset_index(drop=True)


def labels_kept_by_cuts(scores: np.ndarray, hits: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray, int]:
    """Per row, whether a global ``threshold`` and a top-``N`` cut of the same mean length keep its label.

    ``N`` is the threshold's mean list length rounded (at least 1, at most the candidates); the top
    ``N`` are the first ``N`` candidates of each row, in the ranking's order (re-computed scores may
    differ from the index's in the last bits, so a row need not be exactly sorted). Returns
    ``(kept by the threshold, kept by the top N, N)``, two float arrays of 0/1 for a paired bootstrap.
    Rows hold at most one label: a row's value is whether that label is kept, a label outside the
    candidates counting as missed.
    """
    return _cuts(*_check_one_label(scores, hits), threshold)[:3]


def _check_one_label(scores: np.ndarray, hits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scores, hits = _check(scores, hits)
    if len(scores) == 0:
        raise ValueError("there are no rows to cut")
    if hits.sum(axis=1).max() > 1:
        raise ValueError("a row holds more than one label; absolute recall here counts one label per row")
    return scores, hits


def _cuts(scores: np.ndarray, hits: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray, int, float]:
    """:func:`labels_kept_by_cuts` on checked input, with the threshold's mean list length last."""
    if math.isnan(threshold):
        raise ValueError("a pruning threshold is NaN")
    kept = np.isfinite(scores) & (scores >= threshold)
    mean_length = float(kept.sum(axis=1).mean())
    n = min(max(1, round(mean_length)), scores.shape[1])
    return (kept & hits).any(axis=1).astype(float), hits[:, :n].any(axis=1).astype(float), n, mean_length


def threshold_against_top_n(scores: np.ndarray, hits: np.ndarray, thresholds: Sequence[float]) -> pd.DataFrame:
    """What a global threshold buys against a fixed top-N cut of the same mean list length.

    A threshold gives each query a list of its own length; a top-N cut gives every query ``N``. With
    the ranker's cost proportional to the candidates it scores, the fair comparison is at equal mean
    length. For each threshold the table gives the mean list length, the *absolute* recall (share of
    rows, i.e. of all labels, whose label is kept) and the recall of the top-``N`` cut of
    :func:`labels_kept_by_cuts`. Columns: ``threshold``, ``mean_length``, ``recall``, ``top_n``,
    ``top_n_recall``.
    """
    scores, hits = _check_one_label(scores, hits)
    rows = []
    for t in thresholds:
        by_threshold, by_top_n, n, mean_length = _cuts(scores, hits, t)
        rows.append({"threshold": float(t), "mean_length": mean_length, "recall": float(by_threshold.mean()),
                     "top_n": n, "top_n_recall": float(by_top_n.mean())})
    return pd.DataFrame(rows)


def removed_at_keep(scores: np.ndarray, hits: np.ndarray, segments: Sequence[str] | np.ndarray,
                    keep: float = 0.95) -> dict[str, float]:
    """What one global threshold keeping ``keep`` of the labels removes: all queries, each segment, relative.

    ``removed.<segment>`` (and ``removed.all``) are :func:`pruning_curve`'s shares of candidates
    removed at ``keep``; ``removed_relative`` is the same for a threshold on each query's scores minus
    its own best score (a per-query offset, observable), which shows whether calibrating each query
    alone would do what a well-calibrated score does globally. The figures a seed study records per
    run, so that a claim about a loss's pruning rests on several seeds.
    """
    curve = pruning_curve(scores, hits, segments, (keep,))
    out = {f"removed.{row.segment}": float(row.removed) for row in curve.itertuples()}
    scores, hits = _check(scores, hits)
    shifted = scores - scores[:, :1]
    out["removed_relative"] = pruning_effect(shifted, hits, threshold_for_retention(shifted, hits, keep))[1]
    return out
