import numpy as np
import pytest
from scipy import sparse

from retrieval_lib.evaluation.probes import neighbor_precision
from retrieval_lib.serving.exact import exact_top_k


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
