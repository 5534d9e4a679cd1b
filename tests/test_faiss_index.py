"""Faiss indexes from factory strings, with and without exact re-ranking, against exact search."""

import numpy as np
import pytest
import torch

from retrieval_lib.serving.ann import overlap_at_k
from retrieval_lib.serving.base import PAD
from retrieval_lib.serving.exact import exact_top_k
from retrieval_lib.serving.faiss_index import FaissIndex

#: 4-bit fast-scan PQ with 8 sub-vectors of 2 dimensions; every one of the 16 lists probed, so only the
#: codes' approximation loses recall.
PQ = "IVF16,PQ8x4fs"
ALL_LISTS = {"nprobe": 16}


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, 16)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    q = rng.normal(size=(100, 16)).astype(np.float32)
    return x, q


def test_flat_is_exact_search(data):
    x, q = data
    ids, scores = FaissIndex("Flat").build(torch.from_numpy(x), np.arange(2000) + 100).search(q, 10)
    exact = exact_top_k(q, x, 10, item_ids=np.arange(2000) + 100)
    np.testing.assert_array_equal(ids, exact.ids)
    np.testing.assert_allclose(scores, exact.scores, atol=1e-5)
    assert ids.dtype == np.int64 and scores.dtype == np.float32


def test_hnsw_with_a_wide_search_agrees_with_exact(data):
    x, q = data
    index = FaissIndex("HNSW32", {"efSearch": 128}).build(x)
    assert index.index.hnsw.efSearch == 128  # the parameter reached the index
    assert overlap_at_k(index.search(q, 10).ids, exact_top_k(q, x, 10).ids) >= 0.95
    index.set_params({"efSearch": 16})
    assert index.index.hnsw.efSearch == 16 and index.params == {"efSearch": 16}


def test_reranking_recovers_what_the_codes_lose(data):
    x, q = data
    exact = exact_top_k(q, x, 10).ids
    plain = FaissIndex(PQ, ALL_LISTS, rerank=0).build(x)
    reranked = FaissIndex(PQ, ALL_LISTS, rerank=4).build(x)
    plain_recall = overlap_at_k(plain.search(q, 10).ids, exact)
    rerank_recall = overlap_at_k(reranked.search(q, 10).ids, exact)
    assert rerank_recall > plain_recall + 0.1
    assert rerank_recall > 0.8
    # after re-ranking the scores are the exact inner products, best first
    ids, scores = reranked.search(q, 10)
    np.testing.assert_allclose(scores, np.take_along_axis(q @ x.T, ids, axis=1), atol=1e-5)
    assert np.all(np.diff(scores, axis=1) <= 0)
    # without, they are the codes' estimates, which differ from the exact ones
    ids, scores = plain.search(q, 10)
    assert not np.allclose(scores, np.take_along_axis(q @ x.T, ids, axis=1), atol=1e-3)
    # a 4-bit code of 8 sub-vectors is far smaller than 16 floats
    assert plain.bytes_per_vector() < 4 * 16 / 2


def test_rerank_one_rescores_without_changing_the_candidates(data):
    x, q = data
    plain = FaissIndex(PQ, ALL_LISTS).build(x).search(q, 10)
    once = FaissIndex(PQ, ALL_LISTS, rerank=1).build(x).search(q, 10)
    np.testing.assert_array_equal(np.sort(plain.ids, axis=1), np.sort(once.ids, axis=1))
    np.testing.assert_allclose(once.scores, np.take_along_axis(q @ x.T, once.ids, axis=1), atol=1e-5)


def test_ids_are_mapped_through_item_ids(data):
    x, q = data
    item_ids = np.random.default_rng(5).permutation(2000) * 10 + 3
    rows = FaissIndex(PQ, ALL_LISTS, rerank=4).build(x).search(q, 10).ids
    mapped = FaissIndex(PQ, ALL_LISTS, rerank=4).build(x, item_ids).search(q, 10).ids
    np.testing.assert_array_equal(mapped, item_ids[rows])
    with pytest.raises(ValueError, match="ids"):
        FaissIndex("Flat").build(x, item_ids[:5])


@pytest.mark.parametrize("rerank", [0, 3])
def test_more_neighbours_than_items_are_padded(data, rerank):
    x, q = data
    ids, scores = FaissIndex("Flat", rerank=rerank).build(x[:5], np.arange(5) + 50).search(q[:3], 8)
    assert ids.shape == (3, 8) and (ids[:, 5:] == PAD).all() and np.isneginf(scores[:, 5:]).all()
    assert all(sorted(row[:5]) == list(range(50, 55)) for row in ids.tolist())
    assert np.isfinite(scores[:, :5]).all()


def test_lists_probed_short_of_k_are_padded(data):
    """One probed list of sixteen holds ~125 items: asking for 500 pads the rest, scores -inf, not -FLT_MAX."""
    x, q = data
    for rerank in (0, 2):
        ids, scores = FaissIndex("IVF16,Flat", {"nprobe": 1}, rerank=rerank).build(x).search(q[:5], 500)
        missing = ids == PAD
        assert missing.any() and not missing.all()
        assert np.isneginf(scores[missing]).all() and np.isfinite(scores[~missing]).all()
        assert (np.diff(missing.astype(int), axis=1) >= 0).all()  # padding only at the end


def test_bad_input_is_a_clear_error(data):
    x, q = data
    with pytest.raises(RuntimeError, match="build"):
        FaissIndex("Flat").search(q, 3)
    with pytest.raises(RuntimeError, match="build"):
        FaissIndex("Flat").bytes_per_vector()
    index = FaissIndex("Flat").build(x)
    assert index.dim == 16 and FaissIndex("Flat").dim == 0
    with pytest.raises(ValueError, match=r"dimension 8\b.*dimension 16"):
        index.search(q[:, :8], 3)
    with pytest.raises(ValueError, match="k"):
        index.search(q, 0)
    with pytest.raises(ValueError):
        FaissIndex("Flat").build(np.empty((0, 16), dtype=np.float32))
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="rerank"):
            FaissIndex("Flat", rerank=bad)
    with pytest.raises(ValueError, match="threads"):
        FaissIndex("Flat", threads=0)


def test_same_data_same_index(data):
    x, q = data
    a = FaissIndex(PQ, {"nprobe": 4}, rerank=2, threads=1).build(x).search(q, 10)
    b = FaissIndex(PQ, {"nprobe": 4}, rerank=2, threads=1).build(x.copy()).search(q, 10)
    np.testing.assert_array_equal(a.ids, b.ids)
    np.testing.assert_array_equal(a.scores, b.scores)
    c = FaissIndex(PQ, {"nprobe": 4}, threads=1).build(x).search(q, 10)
    d = FaissIndex(PQ, {"nprobe": 4}, threads=1).build(x).search(q, 10)
    np.testing.assert_array_equal(c.ids, d.ids)
    np.testing.assert_array_equal(c.scores, d.scores)


def test_nan_query_is_a_clear_error(data):
    x, q = data
    bad = q[:2].copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        FaissIndex("Flat").build(x).search(bad, 3)


def test_faiss_leaves_torchs_thread_count_alone():
    """Faiss and torch share one OpenMP runtime: a Faiss call must not change the threads torch trains on."""
    before = torch.get_num_threads()
    x = np.random.default_rng(0).normal(size=(300, 8)).astype(np.float32)
    index = FaissIndex("Flat", threads=1).build(x)
    assert torch.get_num_threads() == before
    index.search(x[:25], 5)
    assert torch.get_num_threads() == before
