import numpy as np
import pandas as pd
import pytest
import torch

from retrieval_lib.serving.ann import (
    SPACES,
    HNSWIndex,
    ann_recall,
    ann_sweep,
    cheapest_setting,
    mips_to_l2_items,
    mips_to_l2_queries,
    overlap_at_k,
    sweep_to_target,
)
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


# --- the MIPS-to-L2 reduction ---------------------------------------------------------------------


def test_mips_to_l2_by_hand():
    items, r = mips_to_l2_items(np.array([[3.0, 4.0], [1.0, 0.0]]))
    assert r == pytest.approx(5.0)
    np.testing.assert_allclose(items, [[3, 4, 0], [1, 0, np.sqrt(24)]], rtol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(items, axis=1), [5, 5], rtol=1e-6)
    assert items.dtype == np.float32
    wider, r = mips_to_l2_items(np.array([[3.0, 4.0], [1.0, 0.0]]), radius=10)
    assert r == 10.0
    np.testing.assert_allclose(wider[:, 2], [np.sqrt(75), np.sqrt(99)], rtol=1e-6)
    np.testing.assert_array_equal(mips_to_l2_queries(np.array([[1.0, 2.0]])), [[1, 2, 0]])
    with pytest.raises(ValueError, match="radius"):
        mips_to_l2_items(np.array([[3.0, 4.0], [1.0, 0.0]]), radius=4.9)


def test_nearest_in_l2_is_the_largest_inner_product():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 6)) * rng.uniform(0.1, 5.0, size=(300, 1))  # very unequal norms
    q = rng.normal(size=(40, 6)) * 3
    items, r = mips_to_l2_items(x)
    np.testing.assert_allclose(np.linalg.norm(items, axis=1), r, rtol=1e-5)
    queries = mips_to_l2_queries(q)
    dist = ((queries[:, None, :] - items[None, :, :]) ** 2).sum(-1)
    ip = q @ x.T
    np.testing.assert_array_equal(dist.argmin(axis=1), ip.argmax(axis=1))
    # and the distance is |q|^2 + R^2 - 2 q.x
    np.testing.assert_allclose(dist, (q * q).sum(1, keepdims=True) + r * r - 2 * ip, rtol=1e-4, atol=1e-3)


@pytest.fixture(scope="module")
def hydrated():
    """Unit vectors with quality-like features in [0, 1] appended (norms 1 to ~2.2), queries with small weights."""
    rng = np.random.default_rng(2)
    p = rng.normal(size=(2000, 16))
    p /= np.linalg.norm(p, axis=1, keepdims=True)
    items = np.hstack([p, rng.uniform(size=(2000, 4))]).astype(np.float32)
    q = rng.normal(size=(100, 16))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    queries = np.hstack([q, np.full((100, 4), 0.05)]).astype(np.float32)
    return items, queries


def test_l2_space_returns_exact_inner_products_and_beats_ip_on_unequal_norms(hydrated):
    items, queries = hydrated
    norms = np.linalg.norm(items, axis=1)
    assert norms.max() / norms.min() > 1.8
    l2 = HNSWIndex(m=16, ef_construction=100, ef=40, space="l2").build(items, np.arange(2000) + 7)
    ip = HNSWIndex(m=16, ef_construction=100, ef=40, space="ip").build(items, np.arange(2000) + 7)
    assert l2.dim == 20 and l2.radius == pytest.approx(norms.max(), rel=1e-5)
    ids, scores = l2.search(queries, 10)
    exact = queries @ items.T
    np.testing.assert_allclose(scores, np.take_along_axis(exact, ids - 7, axis=1), atol=1e-4)
    assert np.all(np.diff(scores, axis=1) <= 1e-6)  # best first
    recall_l2, recall_ip = ann_recall(l2, queries, items, 10), ann_recall(ip, queries, items, 10)
    assert recall_l2 >= 0.9
    assert recall_l2 >= recall_ip


def test_ef_below_k_is_raised_to_k(vectors):
    index = HNSWIndex(ef=5).build(vectors)
    ids, scores = index.search(vectors[:30], 50)
    assert ids.shape == (30, 50) and (ids != PAD).all() and np.isfinite(scores).all()
    assert all(len(set(row)) == 50 for row in ids.tolist())
    assert ann_recall(index, vectors[:30], vectors, 50) > 0.9
    assert index.ef == 5  # the setting itself is left alone


# --- saving and loading ---------------------------------------------------------------------------


@pytest.mark.parametrize("space", SPACES)
def test_save_load_round_trip(vectors, tmp_path, space):
    index = HNSWIndex(m=8, ef_construction=50, ef=37, seed=4, space=space).build(vectors * 1.5, np.arange(2000) * 3)
    folder = index.save(tmp_path / "index")
    loaded = HNSWIndex.load(folder)
    assert loaded.ef == 37 and loaded.index.ef == 37
    assert (loaded.m, loaded.ef_construction, loaded.seed, loaded.space) == (8, 50, 4, space)
    assert loaded.dim == 16 and loaded.radius == pytest.approx(index.radius)
    np.testing.assert_array_equal(loaded.item_ids, index.item_ids)
    queries = vectors[:40] + 0.05
    a, b = index.search(queries, 10), loaded.search(queries, 10)
    np.testing.assert_array_equal(a.ids, b.ids)
    np.testing.assert_array_equal(a.scores, b.scores)


def test_save_replaces_an_existing_folder(vectors, tmp_path):
    target = tmp_path / "index"
    target.mkdir()
    (target / "stale.txt").write_text("old")
    HNSWIndex(m=8, ef_construction=50).build(vectors[:100]).save(target)
    assert sorted(p.name for p in target.iterdir()) == ["index.bin", "item_ids.npy", "meta.json"]
    assert len(HNSWIndex.load(target).item_ids) == 100
    HNSWIndex(m=8, ef_construction=50).build(vectors[:200]).save(target)
    assert len(HNSWIndex.load(target).item_ids) == 200
    assert [p.name for p in tmp_path.iterdir()] == ["index"]  # no temporary folder left behind


def test_a_failed_save_leaves_nothing_half_written(vectors, tmp_path, monkeypatch):
    index = HNSWIndex(m=8, ef_construction=50).build(vectors[:100])

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "save", broken)
    with pytest.raises(OSError, match="disk full"):
        index.save(tmp_path / "fresh")
    assert list(tmp_path.iterdir()) == []
    # an existing index survives a failed save over it
    monkeypatch.undo()
    HNSWIndex(m=8, ef_construction=50).build(vectors[:50]).save(tmp_path / "kept")
    monkeypatch.setattr(np, "save", broken)
    with pytest.raises(OSError):
        index.save(tmp_path / "kept")
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir()] == ["kept"]
    assert len(HNSWIndex.load(tmp_path / "kept").item_ids) == 50


# --- errors ---------------------------------------------------------------------------------------


def test_dimension_mismatch_and_nan_are_clear_errors(vectors):
    index = HNSWIndex(m=8, ef_construction=50).build(vectors[:100])
    with pytest.raises(ValueError, match=r"dimension 3\b.*dimension 16"):
        index.search(np.ones((2, 3), dtype=np.float32), 3)
    l2 = HNSWIndex(m=8, ef_construction=50, space="l2").build(vectors[:100])
    with pytest.raises(ValueError, match=r"dimension 17\b.*dimension 16"):
        l2.search(np.ones((2, 17), dtype=np.float32), 3)  # the reduction's extra coordinate is not the caller's
    bad = vectors[:2].copy()
    bad[1, 4] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        index.search(bad, 3)
    with pytest.raises(ValueError, match="NaN"):
        HNSWIndex().build(np.where(np.arange(16) == 3, np.inf, vectors[:10]))
    with pytest.raises(ValueError, match="k"):
        index.search(vectors[:2], 0)


@pytest.mark.parametrize("kwargs", [{"m": 0}, {"ef": 0}, {"ef_construction": -1}, {"num_threads": 0},
                                    {"m": True}, {"ef": 2.5}, {"space": "cosine"}])
def test_invalid_constructor_arguments(kwargs):
    with pytest.raises(ValueError, match=rf"\b{next(iter(kwargs))}\b"):
        HNSWIndex(**kwargs)


# --- measuring ------------------------------------------------------------------------------------


def test_overlap_at_k_by_hand():
    approx = np.array([[1, 2, 3], [4, 5, PAD]])
    exact = np.array([[1, 3, 9], [4, PAD, PAD]])
    assert overlap_at_k(approx, exact) == pytest.approx(3 / 4)  # 1, 3 and 4 of 1, 3, 9 and 4
    assert overlap_at_k(exact, exact) == 1.0
    # PAD in both lists is not a match, and PAD in the exact list is not wanted
    assert overlap_at_k(np.array([[PAD, PAD]]), np.array([[7, PAD]])) == 0.0
    assert np.isnan(overlap_at_k(np.array([[PAD, 1]]), np.array([[PAD, PAD]])))
    with pytest.raises(ValueError, match="shape"):
        overlap_at_k(approx[:, :2], exact)


def test_ann_sweep_rows_and_columns(vectors):
    queries = vectors[:60] + 0.05
    sweep = ann_sweep(vectors, queries, ms=[4, 16], efs=[10, 80], ef_construction=40, k=10, timed_queries=10)
    assert list(sweep.columns) == ["M", "ef_construction", "ef", "recall_vs_exact", "build_seconds",
                                   "bytes_per_vector", "ms_per_query"]
    assert list(zip(sweep["M"], sweep["ef"], strict=True)) == [(4, 10), (4, 80), (16, 10), (16, 80)]
    assert sweep["recall_vs_exact"].between(0, 1).all()
    assert (sweep["ms_per_query"] > 0).all() and (sweep["build_seconds"] > 0).all()
    assert (sweep["bytes_per_vector"] > 4 * 16).all()
    by = sweep.set_index(["M", "ef"])["recall_vs_exact"]
    for m in (4, 16):
        assert by[(m, 80)] >= by[(m, 10)] - 0.01
    assert by[(16, 80)] > 0.95
    # memory grows with M (more links per node); ef is a search setting and changes neither memory nor build
    assert sweep.groupby("M")["bytes_per_vector"].first().is_monotonic_increasing
    assert (sweep.groupby("M")[["bytes_per_vector", "build_seconds"]].nunique() == 1).all().all()
    # ef below k is reported as the k actually used
    assert ann_sweep(vectors[:200], queries[:5], ms=[4], efs=[3], k=10, timed_queries=2)["ef"].tolist() == [10]


def test_cheapest_setting_by_hand():
    sweep = pd.DataFrame({"M": [4, 8, 16, 32, 8], "ef": [10, 20, 10, 10, 10],
                          "recall_vs_exact": [0.90, 0.99, 0.97, 0.995, 0.96],
                          "ms_per_query": [1.0, 5.0, 3.0, 3.0, 9.0], "bytes_per_vector": [10, 12, 20, 15, 12]})
    assert cheapest_setting(sweep, 0.5)["M"] == 4  # the smallest index
    chosen = cheapest_setting(sweep, 0.95)  # two as small: the smaller ef wins, however slow it measured
    assert (chosen["M"], chosen["ef"]) == (8, 10)
    assert cheapest_setting(sweep, 0.99)["ef"] == 20
    assert cheapest_setting(sweep, 0.99, by=("ms_per_query",))["M"] == 32
    assert cheapest_setting(sweep, 0.99)["reached"]


def test_cheapest_setting_that_misses_the_target_returns_the_best_and_says_so():
    """A measured recall below the target (another machine, other rounding) never fails a chapter."""
    sweep = pd.DataFrame({"M": [8, 16, 32, 8], "ef": [100, 100, 100, 400],
                          "recall_vs_exact": [0.97, 0.9868, 0.9868, 0.98], "bytes_per_vector": [10, 20, 30, 10]})
    chosen = cheapest_setting(sweep, 0.99)
    assert not chosen["reached"]
    assert (chosen["M"], chosen["recall_vs_exact"]) == (16, 0.9868)  # the best, the smaller index among equals
    with pytest.raises(ValueError, match="no settings"):
        cheapest_setting(sweep.iloc[:0], 0.99)


@pytest.fixture(scope="module")
def queries():
    return np.random.default_rng(1).normal(size=(50, 16)).astype(np.float32)


def test_sweep_to_target_extends_ef_until_the_target_is_reached(vectors, queries):
    base = ann_sweep(vectors, queries, ms=[4, 8], efs=[10], k=10, timed_queries=2)
    target = base["recall_vs_exact"].max() + 1e-9  # just out of the grid's reach
    sweep = sweep_to_target(vectors, queries, target, ms=[4, 8], efs=[10], max_ef=640, k=10, timed_queries=2)
    extra = sweep.iloc[2:]
    assert len(extra) >= 1 and (extra["M"] == 8).all()  # only the largest index is searched further
    assert extra["ef"].tolist() == [20 * 2**i for i in range(len(extra))]  # doubling
    assert sweep["recall_vs_exact"].iloc[-1] >= target or extra["ef"].iloc[-1] == 640
    assert cheapest_setting(sweep, target)["reached"] == (sweep["recall_vs_exact"] >= target).any()


def test_sweep_to_target_stops_at_max_ef_and_the_choice_reports_the_miss(vectors, queries):
    sweep = sweep_to_target(vectors, queries, 1.01, ms=[4], efs=[10, 20], max_ef=80, k=10, timed_queries=2)
    assert sweep["ef"].tolist() == [10, 20, 40, 80]  # bounded: recall cannot reach 1.01
    chosen = cheapest_setting(sweep, 1.01)
    assert not chosen["reached"] and chosen["recall_vs_exact"] == sweep["recall_vs_exact"].max()


def test_bytes_per_vector_counts_vector_and_links(vectors):
    index = HNSWIndex(m=8, ef_construction=50).build(vectors)
    assert 4 * 16 < index.bytes_per_vector() < 4 * 16 + 4 * 2 * 8 * 4  # vector + at most a few link lists
    with pytest.raises(RuntimeError, match="build"):
        HNSWIndex().bytes_per_vector()


def test_measure_reports_recall_memory_and_latency(vectors):
    from retrieval_lib.serving.ann import measure

    index = HNSWIndex(ef=50).build(vectors)
    queries = vectors[:40] + 0.01
    exact = exact_top_k(queries, vectors, 10).ids
    row = measure(index, queries, exact, k=10, timed_queries=5)
    assert set(row) == {"recall_vs_exact", "build_seconds", "bytes_per_vector", "ms_per_query"}
    assert row["recall_vs_exact"] == pytest.approx(ann_recall(index, queries, vectors, 10))
    assert row["bytes_per_vector"] == index.bytes_per_vector() and row["build_seconds"] == index.build_seconds
    assert row["ms_per_query"] > 0
    wrong = np.roll(exact, 1, axis=0)  # another query's neighbours: recall must drop
    assert measure(index, queries, wrong, k=10, timed_queries=1)["recall_vs_exact"] < 0.5
