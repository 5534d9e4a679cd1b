"""Threshold pruning: one global score threshold over every query's candidates."""

import numpy as np
import pytest

from retrieval_lib.serving.base import PAD, SearchResult
from retrieval_lib.serving.pruning import (
    labels_kept_by_cuts,
    prune,
    pruning_curve,
    pruning_effect,
    removed_at_keep,
    threshold_against_top_n,
    threshold_for_retention,
)

NEG = -np.inf

# two queries, four candidates each (best first); query 1 has only three candidates
SCORES = np.array([[0.9, 0.8, 0.4, 0.1],
                   [0.5, 0.3, 0.2, NEG]])
HITS = np.array([[False, True, False, False],
                 [False, False, True, False]])


def test_prune_keeps_candidates_at_or_above_the_threshold():
    result = SearchResult(np.array([[3, 1, 4, 0], [7, 5, 6, PAD]]), SCORES.astype(np.float32))
    pruned = prune(result, 0.4)
    np.testing.assert_array_equal(pruned.ids, [[3, 1, 4, PAD], [7, PAD, PAD, PAD]])
    assert np.isneginf(pruned.scores[0, 3]) and pruned.scores[0, 2] == pytest.approx(0.4)
    assert pruned.scores.dtype == np.float32
    with pytest.raises(ValueError, match="NaN"):
        prune(result, float("nan"))
    with pytest.raises(ValueError, match="shape"):
        prune(SearchResult(result.ids[:, :2], result.scores), 0.4)


def test_threshold_for_retention_by_hand():
    # label scores 0.8 and 0.2: keeping half of them needs 0.8, keeping all needs 0.2
    assert threshold_for_retention(SCORES, HITS, 0.5) == pytest.approx(0.8)
    assert threshold_for_retention(SCORES, HITS, 0.51) == pytest.approx(0.2)
    assert threshold_for_retention(SCORES, HITS, 1.0) == pytest.approx(0.2)
    for keep in (0, 1.5, -0.1):
        with pytest.raises(ValueError, match="keep"):
            threshold_for_retention(SCORES, HITS, keep)
    with pytest.raises(ValueError, match="no labels"):
        threshold_for_retention(SCORES, np.zeros_like(HITS), 0.9)


def test_threshold_keeps_at_least_the_share_asked_for():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(50, 20))
    hits = rng.random((50, 20)) < 0.1
    for keep in (0.5, 0.8, 0.95, 1.0):
        t = threshold_for_retention(scores, hits, keep)
        kept, _ = pruning_effect(scores, hits, t)
        assert kept >= keep
        # any higher threshold keeps less than asked
        higher = np.min(scores[hits][scores[hits] > t], initial=np.inf)
        if np.isfinite(higher):
            assert pruning_effect(scores, hits, higher)[0] < keep


def test_pruning_effect_by_hand():
    labels_kept, removed = pruning_effect(SCORES, HITS, 0.35)
    assert labels_kept == pytest.approx(0.5)        # 0.8 kept, 0.2 cut
    assert removed == pytest.approx(3 / 7)          # 0.1, 0.3 and 0.2 of 7 real candidates
    assert pruning_effect(SCORES, HITS, -1.0) == (1.0, 0.0)
    with pytest.raises(ValueError, match="padded"):
        pruning_effect(SCORES, np.array([[False] * 4, [False, False, False, True]]), 0.1)
    with pytest.raises(ValueError, match="NaN"):
        pruning_effect(np.array([[np.nan, 0.1]]), np.array([[False, True]]), 0.1)


def test_pruning_curve_reports_every_segment_at_one_global_threshold():
    curve = pruning_curve(SCORES, HITS, segments=np.array(["head", "tail"]), keeps=(0.5, 1.0))
    assert list(curve.columns) == ["keep", "threshold", "segment", "labels_kept", "removed"]
    assert len(curve) == 2 * 3
    half = curve[curve["keep"] == 0.5].set_index("segment")
    np.testing.assert_allclose(half["threshold"], 0.8)
    assert half.loc["all", "labels_kept"] == pytest.approx(0.5)
    assert half.loc["head", "labels_kept"] == 1.0 and half.loc["tail", "labels_kept"] == 0.0
    assert half.loc["head", "removed"] == pytest.approx(2 / 4)
    assert half.loc["tail", "removed"] == pytest.approx(3 / 3)
    full = curve[curve["keep"] == 1.0].set_index("segment")
    assert full.loc["all", "labels_kept"] == 1.0 and full.loc["all", "removed"] == pytest.approx(1 / 7)
    with pytest.raises(ValueError, match="segment"):
        pruning_curve(SCORES, HITS, segments=np.array(["head"]))


def test_removed_at_keep_by_hand():
    out = removed_at_keep(SCORES, HITS, np.array(["head", "tail"]), keep=0.5)
    # one global threshold, 0.8: head loses 0.4 and 0.1, tail all three of its candidates
    assert out["removed.all"] == pytest.approx(5 / 7)
    assert out["removed.head"] == pytest.approx(2 / 4) and out["removed.tail"] == pytest.approx(1.0)
    # relative to each query's best: labels at -0.1 and -0.3, threshold -0.1 removes -0.5, -0.8, -0.2, -0.3
    assert out["removed_relative"] == pytest.approx(4 / 7)
    assert set(out) == {"removed.all", "removed.head", "removed.tail", "removed_relative"}


def test_removed_share_grows_as_fewer_labels_are_kept():
    rng = np.random.default_rng(1)
    scores = np.sort(rng.normal(size=(40, 30)), axis=1)[:, ::-1]
    hits = np.zeros_like(scores, dtype=bool)
    hits[np.arange(40), rng.integers(0, 30, 40)] = True
    curve = pruning_curve(scores, hits)
    assert np.all(np.diff(curve["removed"].to_numpy()) <= 0)  # keeps rise, so removal falls
    assert np.all(curve["labels_kept"].to_numpy() >= curve["keep"].to_numpy())


def test_the_curve_agrees_with_pruning_effect_at_every_point():
    rng = np.random.default_rng(2)
    scores = rng.normal(size=(30, 25))
    scores[rng.random((30, 25)) < 0.05] = NEG  # some padding
    hits = np.zeros_like(scores, dtype=bool)
    rows = rng.integers(0, 30, 20)
    cols = rng.integers(0, 25, 20)
    ok = np.isfinite(scores[rows, cols])
    hits[rows[ok], cols[ok]] = True
    segments = rng.choice(["head", "torso", "tail"], 30)
    curve = pruning_curve(scores, hits, segments, keeps=(0.5, 0.8, 1.0))
    for _, row in curve.iterrows():
        mask = np.ones(30, dtype=bool) if row["segment"] == "all" else segments == row["segment"]
        kept, removed = pruning_effect(scores[mask], hits[mask], row["threshold"])
        assert removed == pytest.approx(row["removed"])
        if hits[mask].any():
            assert kept == pytest.approx(row["labels_kept"])


def test_threshold_against_top_n_by_hand():
    scores = np.array([[0.9, 0.5, 0.1], [0.8, 0.7, 0.6], [0.3, 0.2, -np.inf]])
    hits = np.array([[False, True, False], [False, False, True], [False, False, False]])
    table = threshold_against_top_n(scores, hits, [0.55, 0.5, 0.0, 2.0])
    assert table["mean_length"].tolist() == pytest.approx([4 / 3, 5 / 3, 8 / 3, 0.0])
    assert table["recall"].tolist() == pytest.approx([1 / 3, 2 / 3, 2 / 3, 0.0])
    assert table["top_n"].tolist() == [1, 2, 3, 1]  # never a list of length 0
    assert table["top_n_recall"].tolist() == pytest.approx([0.0, 1 / 3, 2 / 3, 0.0])


def test_threshold_against_top_n_matches_pruning_at_equal_length():
    # with the same length N in every row, the threshold just below each row's N-th score is a top-N cut
    rng = np.random.default_rng(0)
    scores = -np.sort(-rng.random((50, 20)), axis=1)
    hits = np.zeros_like(scores, dtype=bool)
    hits[np.arange(50), rng.integers(0, 20, 50)] = True
    cut = threshold_against_top_n(scores, hits, [-1.0])
    assert cut.loc[0, "mean_length"] == 20 and cut.loc[0, "recall"] == cut.loc[0, "top_n_recall"] == 1.0


def test_threshold_against_top_n_rejects_bad_input():
    scores = np.array([[0.9, 0.5]])
    with pytest.raises(ValueError, match="more than one label"):
        threshold_against_top_n(scores, np.array([[True, True]]), [0.5])
    with pytest.raises(ValueError, match="NaN"):
        threshold_against_top_n(scores, np.array([[True, False]]), [float("nan")])


def test_labels_kept_by_cuts_by_hand():
    scores = np.array([[0.9, 0.5, 0.1], [0.8, 0.7, 0.6], [0.3, 0.2, -np.inf]])
    hits = np.array([[False, True, False], [False, False, True], [False, False, False]])
    by_threshold, by_top_n, n = labels_kept_by_cuts(scores, hits, 0.5)  # lengths 2, 3, 0: N = 2
    assert n == 2 and by_threshold.tolist() == [1.0, 1.0, 0.0] and by_top_n.tolist() == [1.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="NaN"):
        labels_kept_by_cuts(scores, hits, float("nan"))
