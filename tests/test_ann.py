import numpy as np
import pytest
import torch

from retrieval_lib.serving.ann import HNSWIndex, ann_recall
from retrieval_lib.serving.base import PAD
from retrieval_lib.serving.exact import exact_top_k


@pytest.fixture(scope="module")
def vectors():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, 16)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_hnsw_agrees_with_exact_search(vectors):
    index = HNSWIndex(ef=100).build(vectors, np.arange(2000) + 10)
    queries = vectors[:50] + 0.01
    assert ann_recall(index, queries, vectors, 10) > 0.95
    ids, scores = index.search(queries, 10)
    exact_ids, exact_scores = exact_top_k(queries, vectors, 10, item_ids=np.arange(2000) + 10)
    assert (ids[:, 0] == exact_ids[:, 0]).mean() > 0.95
    np.testing.assert_allclose(scores[:, 0], exact_scores[:, 0], atol=1e-4)


def test_same_seed_same_index(vectors):
    a = HNSWIndex(seed=3).build(vectors).search(vectors[:20], 5)[0]
    b = HNSWIndex(seed=3).build(torch.from_numpy(vectors)).search(vectors[:20], 5)[0]
    np.testing.assert_array_equal(a, b)


def test_more_neighbours_than_items_are_padded(vectors):
    index = HNSWIndex().build(vectors[:5])
    ids, scores = index.search(vectors[:2], 8)
    assert (ids[:, 5:] == PAD).all() and np.isinf(scores[:, 5:]).all()
    assert sorted(ids[0, :5].tolist()) == list(range(5))


def test_bad_input_is_a_clear_error(vectors):
    with pytest.raises(RuntimeError, match="build"):
        HNSWIndex().search(vectors[:1], 3)
    index = HNSWIndex().build(vectors)
    with pytest.raises(ValueError, match="dimension"):
        index.search(np.ones((1, 3), dtype=np.float32), 3)
    with pytest.raises(ValueError, match="ids"):
        HNSWIndex().build(vectors, np.arange(3))
    with pytest.raises(ValueError):
        HNSWIndex().build(np.empty((0, 4)))
    with pytest.raises(ValueError):
        HNSWIndex(m=0)
