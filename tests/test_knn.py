import numpy as np
import pytest
from scipy import sparse

from retrieval_lib.evaluation.probes import neighbor_precision
from retrieval_lib.serving.base import PAD
from retrieval_lib.serving.exact import candidate_scores, exact_top_k


def test_exact_top_k_matches_a_brute_force_sort():
    rng = np.random.default_rng(0)
    q, x = rng.normal(size=(7, 5)), rng.normal(size=(40, 5))
    ids, scores = exact_top_k(q, x, 6, chunk=3)
    brute = np.argsort(-(q @ x.T), axis=1)[:, :6]
    np.testing.assert_array_equal(ids, brute)
    np.testing.assert_allclose(scores, np.take_along_axis(q @ x.T, brute, axis=1), rtol=1e-5)


def test_exact_top_k_pads_and_maps_ids():
    ids, scores = exact_top_k(np.eye(2), np.eye(2), 4, item_ids=np.array([10, 20]))
    assert ids.tolist() == [[10, 20, -1, -1], [20, 10, -1, -1]]
    assert np.isinf(scores[:, 2:]).all()


def test_exact_top_k_rejects_bad_input():
    with pytest.raises(ValueError, match="dimension mismatch"):
        exact_top_k(np.ones((2, 3)), np.ones((4, 5)), 1)
    with pytest.raises(ValueError):
        exact_top_k(np.ones((2, 3)), np.ones((4, 3)), 0)


def test_neighbor_precision_on_clusters():
    vectors = np.array([[1, 0], [1, 0.1], [0, 1], [0.1, 1]], dtype=float)
    labels = np.array([0, 0, 1, 1])
    assert neighbor_precision(vectors, labels, k=1) == 1.0
    assert neighbor_precision(vectors, np.array([0, 1, 0, 1]), k=1) == 0.0
    assert neighbor_precision(sparse.csr_matrix(vectors), labels, k=1) == 1.0
    with pytest.raises(ValueError):
        neighbor_precision(vectors, labels, k=4)


def test_candidate_scores_are_the_inner_products_of_the_listed_ids():
    rng = np.random.default_rng(0)
    q, x = rng.normal(size=(3, 4)), rng.normal(size=(10, 4))
    ids = np.array([[2, 0, PAD], [9, 9, 1], [PAD, PAD, PAD]])
    scores = candidate_scores(q, x, ids)
    assert scores.shape == (3, 3) and scores.dtype == np.float32
    np.testing.assert_allclose(scores[0, :2], [q[0] @ x[2], q[0] @ x[0]], rtol=1e-5)
    np.testing.assert_allclose(scores[1], [q[1] @ x[9], q[1] @ x[9], q[1] @ x[1]], rtol=1e-5)
    assert np.isneginf(scores[0, 2]) and np.isneginf(scores[2]).all()
    # the exact search's own scores come back for its own ranking
    top = exact_top_k(q, x, 5)
    np.testing.assert_allclose(candidate_scores(q, x, top.ids), top.scores, rtol=1e-5)
    np.testing.assert_array_equal(candidate_scores(q, x, ids, chunk=2), scores)  # chunks change nothing


def test_candidate_scores_reject_bad_ids_and_shapes():
    q, x = np.zeros((2, 4)), np.zeros((5, 4))
    with pytest.raises(ValueError, match="item rows 0 to 4"):
        candidate_scores(q, x, np.array([[0, 5], [1, 2]]))
    with pytest.raises(ValueError, match="one row of candidate ids per query"):
        candidate_scores(q, x, np.array([[0, 1]]))
    with pytest.raises(ValueError, match="dimension mismatch"):
        candidate_scores(q, np.zeros((5, 3)), np.array([[0], [1]]))
