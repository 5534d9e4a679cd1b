import numpy as np
import pytest
import pytrec_eval

from retrieval_lib.evaluation.metrics import dcg, hits, ndcg_at_k, recall_at_k, reciprocal_rank

RANKED = np.array([
    [5, 3, 9, 1],
    [2, 7, 4, -1],
    [8, -1, -1, -1],
    [6, 0, 3, 2],
    [-1, -1, -1, -1],
])
TARGETS = np.array([9, 7, 1, -1, -1])


def test_hits_marks_target_positions():
    expected = np.array([
        [False, False, True],
        [False, True, False],
        [False, False, False],
        [False, False, False],
        [False, False, False],
    ])
    h = hits(RANKED, TARGETS, 3)
    assert h.dtype == bool and h.shape == (5, 3)
    np.testing.assert_array_equal(h, expected)


def test_padding_never_counts_as_a_hit():
    ranked = np.array([[-1, -1, 4], [-1, 2, -1]])
    targets = np.array([-1, -1])
    assert not hits(ranked, targets, 3).any()
    np.testing.assert_array_equal(recall_at_k(ranked, targets, 3), [0.0, 0.0])
    np.testing.assert_array_equal(reciprocal_rank(ranked, targets), [0.0, 0.0])


@pytest.mark.parametrize("k, expected", [
    (1, [0.0, 0.0, 0.0, 0.0, 0.0]),
    (2, [0.0, 1.0, 0.0, 0.0, 0.0]),
    (3, [1.0, 1.0, 0.0, 0.0, 0.0]),
    (4, [1.0, 1.0, 0.0, 0.0, 0.0]),
    (50, [1.0, 1.0, 0.0, 0.0, 0.0]),
])
def test_recall_at_k(k, expected):
    np.testing.assert_array_equal(recall_at_k(RANKED, TARGETS, k), expected)


def test_recall_counts_a_repeated_target_once():
    np.testing.assert_array_equal(recall_at_k(np.array([[4, 4, 4]]), np.array([4]), 3), [1.0])


def test_reciprocal_rank():
    np.testing.assert_allclose(reciprocal_rank(RANKED, TARGETS), [1 / 3, 1 / 2, 0.0, 0.0, 0.0])
    np.testing.assert_allclose(reciprocal_rank(RANKED, TARGETS, k=2), [0.0, 1 / 2, 0.0, 0.0, 0.0])
    np.testing.assert_allclose(reciprocal_rank(RANKED, TARGETS, k=100), [1 / 3, 1 / 2, 0.0, 0.0, 0.0])
    first = reciprocal_rank(np.array([[3, 3, 1], [1, 2, 3]]), np.array([3, 3]))
    np.testing.assert_allclose(first, [1.0, 1 / 3])


def test_dcg_hand_computed():
    gains = np.array([[3, 2, 0, 1], [0, 0, 0, 0], [0, 0, 0, 5]])
    np.testing.assert_allclose(dcg(gains, 4), [3 + 2 / np.log2(3) + 1 / np.log2(5), 0.0, 5 / np.log2(5)])
    np.testing.assert_allclose(dcg(gains, 2), [3 + 2 / np.log2(3), 0.0, 0.0])
    np.testing.assert_allclose(dcg(gains, 1), [3.0, 0.0, 0.0])
    np.testing.assert_allclose(dcg(gains, 10), dcg(gains, 4))


def test_ndcg_hand_computed():
    gains = np.array([[0, 3, 1], [2, 0, 0], [0, 0, 0], [1, 0, 0]])
    ideal = np.array([[1, 3, 0, 2], [2, 0, 0, 0], [0, 0, 0, 0], [0, 1, 1, 1]])
    got = ndcg_at_k(gains, ideal, 2)
    best_first = 3 + 2 / np.log2(3)
    expected = [(3 / np.log2(3)) / best_first, 1.0, 0.0, 1 / (1 + 1 / np.log2(3))]
    np.testing.assert_allclose(got, expected)


def test_ndcg_with_k_beyond_the_ranked_columns_keeps_the_ideal_over_k():
    gains = np.array([[2, 1]])
    ideal = np.array([[2, 1, 1, 1]])
    got = ndcg_at_k(gains, ideal, 10)
    ideal_dcg = 2 + 1 / np.log2(3) + 1 / np.log2(4) + 1 / np.log2(5)
    np.testing.assert_allclose(got, [(2 + 1 / np.log2(3)) / ideal_dcg])
    assert got[0] < 1.0


def test_ndcg_of_the_ideal_ranking_is_one():
    ideal = np.array([[3, 2, 1, 0], [1, 0, 0, 0]])
    np.testing.assert_allclose(ndcg_at_k(ideal, ideal[:, ::-1], 3), [1.0, 1.0])


def test_shape_errors_raise_value_error():
    with pytest.raises(ValueError, match="2-D"):
        hits(np.array([1, 2, 3]), np.array([1]), 1)
    with pytest.raises(ValueError, match="2-D"):
        recall_at_k(np.zeros((2, 3, 1)), np.array([1, 2]), 1)
    with pytest.raises(ValueError, match="rows"):
        recall_at_k(RANKED, TARGETS[:3], 2)
    with pytest.raises(ValueError, match="rows"):
        reciprocal_rank(RANKED, np.append(TARGETS, 4))
    with pytest.raises(ValueError, match="2-D"):
        ndcg_at_k(np.array([1.0, 0.0]), np.array([[1.0]]), 1)
    with pytest.raises(ValueError, match="same number of rows"):
        ndcg_at_k(np.ones((3, 2)), np.ones((2, 2)), 2)


@pytest.mark.parametrize("k", [0, -1])
def test_non_positive_k_raises(k):
    with pytest.raises(ValueError, match="k must be positive"):
        hits(RANKED, TARGETS, k)
    with pytest.raises(ValueError, match="k must be positive"):
        recall_at_k(RANKED, TARGETS, k)
    with pytest.raises(ValueError, match="k must be positive"):
        reciprocal_rank(RANKED, TARGETS, k)


# -- cross-check against trec_eval (pytrec_eval) on random runs ------------------------------------------

N_QUERIES, K, N_DOCS = 60, 100, 400


@pytest.fixture
def random_run():
    rng = np.random.default_rng(7)
    ranked = np.stack([rng.permutation(N_DOCS)[:K] for _ in range(N_QUERIES)])
    for i in range(0, N_QUERIES, 4):  # every fourth list is short: padded with -1
        ranked[i, rng.integers(1, K):] = -1
    # trec_eval sorts by score (ties by docid), so give strictly decreasing scores
    run = {f"q{i}": {f"d{d}": float(K - r) for r, d in enumerate(row) if d >= 0}
           for i, row in enumerate(ranked)}
    return rng, ranked, run


def _evaluate(qrels, run, measure):
    per_query = pytrec_eval.RelevanceEvaluator(qrels, {measure}).evaluate(run)
    assert sorted(per_query) == sorted(run)
    return np.array([per_query[f"q{i}"][measure] for i in range(len(run))])


def test_recall_and_reciprocal_rank_match_trec_eval(random_run):
    rng, ranked, run = random_run
    # half the targets are drawn from the ranked lists so that many requests have a hit
    from_list = np.array([rng.choice(row[row >= 0]) for row in ranked])
    targets = np.where(rng.random(N_QUERIES) < 0.5, from_list, rng.integers(0, N_DOCS, N_QUERIES))
    qrels = {f"q{i}": {f"d{t}": 1} for i, t in enumerate(targets)}

    ours_recall = recall_at_k(ranked, targets, 100)
    ours_rr = reciprocal_rank(ranked, targets)
    assert 0 < ours_recall.sum() < N_QUERIES  # both outcomes occur
    np.testing.assert_allclose(ours_recall, _evaluate(qrels, run, "recall_100"), rtol=0, atol=1e-9)
    np.testing.assert_allclose(ours_rr, _evaluate(qrels, run, "recip_rank"), rtol=0, atol=1e-9)


def test_ndcg_matches_trec_eval(random_run):
    rng, ranked, run = random_run
    n_graded = 15
    qrels, gains, ideal = {}, np.zeros(ranked.shape), np.zeros((N_QUERIES, n_graded))
    for i, row in enumerate(ranked):
        # graded docs: a few from the top of the list, the rest from anywhere, no duplicates
        pool = rng.permutation(np.r_[row[:12][row[:12] >= 0], rng.permutation(N_DOCS)[:40]])
        docs = list(dict.fromkeys(int(d) for d in pool))[:n_graded]
        grades = rng.integers(0, 4, n_graded)  # 0..3; trec_eval ignores grade 0 for the ideal
        qrels[f"q{i}"] = {f"d{d}": int(g) for d, g in zip(docs, grades, strict=True)}
        grade_of = dict(zip(docs, grades, strict=True))
        gains[i] = [grade_of.get(int(d), 0) for d in row]
        ideal[i] = grades

    ours = ndcg_at_k(gains, ideal, 10)
    assert (ours > 0).sum() > N_QUERIES // 2
    np.testing.assert_allclose(ours, _evaluate(qrels, run, "ndcg_cut_10"), rtol=0, atol=1e-9)
