"""The ranking stage: candidate helpers, logged pages, observable features and the LambdaMART ranker."""

import numpy as np
import pandas as pd
import pytest
import torch

from retrieval_lib.baselines.bm25 import BM25Retriever
from retrieval_lib.models.unified import UnifiedConfig, UnifiedModel, UnifiedRetriever
from retrieval_lib.ranking import (
    FEATURES,
    GAINS,
    Ranker,
    RankerConfig,
    RankingFeatures,
    available,
    logged_pages,
    merge_candidates,
    top_by_score,
)
from retrieval_lib.serving.base import PAD

#: A small, quick ranker for the tiny world (the defaults are the book's).
QUICK = RankerConfig(n_trees=30, num_leaves=7, min_child_samples=20, patience=10)
COL = {name: j for j, name in enumerate(FEATURES)}
#: Hash buckets of the tiny unified features (conftest's TINY_BUCKETS).
BUCKETS = 2**14


# --- top_by_score and merge_candidates: by hand -----------------------------------------------------


def test_top_by_score_by_hand():
    candidates = np.array([[10, 11, 12, 13],
                           [20, 21, PAD, 23],
                           [30, 31, 32, 33]])
    scores = np.array([[1.0, 3.0, 3.0, 2.0],  # a tie: 11 before 12, their candidate order
                       [5.0, -np.inf, 9.0, 1.0],  # -inf and padding (whatever its score) drop out
                       [-np.inf, -np.inf, -np.inf, -np.inf]])  # nothing left: all padding
    np.testing.assert_array_equal(top_by_score(candidates, scores, 3),
                                  [[11, 12, 13], [20, 23, PAD], [PAD, PAD, PAD]])
    np.testing.assert_array_equal(top_by_score(candidates, scores, 1), [[11], [20], [PAD]])
    # k wider than the candidates: padded to k
    np.testing.assert_array_equal(top_by_score(candidates, scores, 6),
                                  [[11, 12, 13, 10, PAD, PAD], [20, 23, PAD, PAD, PAD, PAD], [PAD] * 6])
    # an all-tied row keeps candidate order
    np.testing.assert_array_equal(top_by_score(np.array([[7, 5, 6]]), np.zeros((1, 3)), 3), [[7, 5, 6]])
    assert top_by_score(candidates, scores, 3).dtype == np.int64


def test_top_by_score_rejects_bad_input():
    with pytest.raises(ValueError, match="shape"):
        top_by_score(np.zeros((2, 3), int), np.zeros((2, 4)), 2)
    with pytest.raises(ValueError, match="shape"):
        top_by_score(np.zeros((2, 3), int), np.zeros((3, 3)), 2)
    for k in (0, -1):
        with pytest.raises(ValueError, match="positive"):
            top_by_score(np.zeros((2, 3), int), np.zeros((2, 3)), k)


def test_merge_candidates_by_hand():
    lexical = np.array([[1, 2, 3, PAD],
                        [5, 6, PAD, PAD]])
    learned = np.array([[3, 4, 1],
                        [PAD, 6, 7]])
    # each id once, first where it first appears, sources in order; padding only at the end
    np.testing.assert_array_equal(merge_candidates(lexical, learned),
                                  [[1, 2, 3, 4, PAD, PAD, PAD], [5, 6, 7, PAD, PAD, PAD, PAD]])
    np.testing.assert_array_equal(merge_candidates(learned, lexical),
                                  [[3, 4, 1, 2, PAD, PAD, PAD], [6, 7, 5, PAD, PAD, PAD, PAD]])
    # one source: itself, padding moved to the end, a repeat within it kept once
    np.testing.assert_array_equal(merge_candidates(np.array([[PAD, 9, 8, 9]])), [[9, 8, PAD, PAD]])
    # the three-way merge is the pairwise merge's
    third = np.array([[8, 2], [7, 9]])
    np.testing.assert_array_equal(merge_candidates(lexical, learned, third)[:, :5],
                                  [[1, 2, 3, 4, 8], [5, 6, 7, 9, PAD]])


def test_merge_candidates_rejects_bad_input():
    with pytest.raises(ValueError, match="no candidate sources"):
        merge_candidates()
    with pytest.raises(ValueError, match="different numbers of requests"):
        merge_candidates(np.zeros((2, 3), int), np.zeros((3, 3), int))


# --- RankerConfig ------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [
    {"n_trees": 0}, {"n_trees": -5}, {"n_trees": 2.5}, {"n_trees": True}, {"num_leaves": 0},
    {"min_child_samples": 0}, {"patience": 0}, {"max_sessions": 0}, {"max_sessions": False},
    {"learning_rate": 0}, {"learning_rate": -0.1}, {"learning_rate": 1.5}, {"seed": -1},
    {"window": "test"}, {"window": "all"}, {"stop_share": 0}, {"stop_share": 1}, {"stop_share": True},
])
def test_ranker_config_rejects_bad_values(bad):
    with pytest.raises(ValueError):
        RankerConfig(**bad)


@pytest.mark.parametrize("bad", [{"seed": True}, {"learning_rate": True}, {"seed": 1.5}, {"learning_rate": "0.1"}])
def test_ranker_config_rejects_bool_seed_and_learning_rate(bad):
    with pytest.raises(ValueError):
        RankerConfig(**bad)


def test_ranker_config_accepts_the_edges():
    RankerConfig(learning_rate=1.0, seed=0, n_trees=1, patience=1, max_sessions=1)


# --- logged_pages ------------------------------------------------------------------------------------


def _gain(impression) -> int:
    return (GAINS["purchase"] if impression.purchase else GAINS["cart"] if impression.cart
            else GAINS["click"] if impression.click else GAINS["shown"])


def test_logged_pages_keep_clicked_requests_with_their_pages_and_gains(tiny_world):
    observed = tiny_world.observed
    sessions, shown, gains = logged_pages(observed, "valid")
    valid = observed.split("valid")
    impressions = observed.impressions[observed.impressions["session_id"].isin(valid["session_id"])]
    clicked = impressions.loc[impressions["click"], "session_id"].unique()
    # exactly the valid requests with at least one click, in session order, with their own columns
    np.testing.assert_array_equal(sessions["session_id"], np.sort(clicked))
    assert 0 < len(sessions) < len(valid)
    pd.testing.assert_frame_equal(sessions, valid.set_index("session_id").loc[np.sort(clicked)].reset_index())
    assert shown.shape == gains.shape == (len(sessions), tiny_world.config.page_size)
    assert (gains[shown == PAD] == 0).all() and ((gains > 0).sum(axis=1) >= 1).all()
    assert set(np.unique(gains)) <= set(GAINS.values())
    # a few rows by hand: one with a purchase, one whose deepest step is a cart, one with clicks only
    by_session = impressions.set_index(["session_id", "position"])
    deepest = gains.max(axis=1)
    rows = [int(np.flatnonzero(deepest == g)[0]) for g in (3, 2, 1)]
    for i in rows:
        sid = sessions["session_id"].iloc[i]
        page = impressions[impressions["session_id"] == sid].sort_values("position")
        expected_shown = np.full(shown.shape[1], PAD)
        expected_shown[page["position"].to_numpy()] = page["listing_id"].to_numpy()
        np.testing.assert_array_equal(shown[i], expected_shown)  # page order, padding where a slot was empty
        for pos in range(shown.shape[1]):
            if shown[i, pos] == PAD:
                continue
            impression = by_session.loc[(sid, pos)]
            assert shown[i, pos] == impression.listing_id and gains[i, pos] == _gain(impression), (sid, pos)
    # and every row against the impressions, vectorised
    row = np.searchsorted(sessions["session_id"].to_numpy(), impressions["session_id"].to_numpy())
    ok = np.isin(impressions["session_id"], sessions["session_id"])
    imp, row = impressions[ok], row[ok]
    pos = imp["position"].to_numpy()
    np.testing.assert_array_equal(shown[row, pos], imp["listing_id"])
    np.testing.assert_array_equal(gains[row, pos], [_gain(r) for r in imp.itertuples()])
    assert (shown >= 0).sum() == len(imp)


def test_logged_pages_sample_deterministically_under_the_cap(tiny_world):
    observed = tiny_world.observed
    full, full_shown, full_gains = logged_pages(observed, "train")
    a, shown, gains = logged_pages(observed, "train", max_sessions=100, seed=3)
    b, _, _ = logged_pages(observed, "train", max_sessions=100, seed=3)
    c, _, _ = logged_pages(observed, "train", max_sessions=100, seed=4)
    assert len(a) == 100 and shown.shape[0] == gains.shape[0] == 100
    pd.testing.assert_frame_equal(a, b)
    assert not a["session_id"].equals(c["session_id"])
    assert a["session_id"].is_monotonic_increasing and set(a["session_id"]) <= set(full["session_id"])
    at = np.searchsorted(full["session_id"].to_numpy(), a["session_id"].to_numpy())
    np.testing.assert_array_equal(shown, full_shown[at])
    np.testing.assert_array_equal(gains, full_gains[at])
    # a cap above the count keeps everything
    pd.testing.assert_frame_equal(logged_pages(observed, "train", max_sessions=len(full) + 1)[0], full)


# --- RankingFeatures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bm25(tiny_world):
    return BM25Retriever().fit(tiny_world.observed.listings)


@pytest.fixture(scope="module")
def unified(tiny_unified_features):
    """A (seeded, untrained) unified model: the features need its vectors, not its quality."""
    torch.manual_seed(0)
    config = UnifiedConfig(n_buckets=BUCKETS, term_dim=32, hidden=64, out_dim=32)
    return UnifiedRetriever(UnifiedModel(config, tiny_unified_features.dims), tiny_unified_features)


@pytest.fixture(scope="module")
def features(tiny_world, bm25, unified):
    return RankingFeatures(tiny_world.observed, bm25, unified)


@pytest.fixture(scope="module")
def test_requests(tiny_world):
    return tiny_world.observed.split("test").iloc[:300].reset_index(drop=True)


@pytest.fixture(scope="module")
def candidates(test_requests, bm25, unified):
    """Lexical top 20 and the unified model's top 20, merged: real rows with padding."""
    return merge_candidates(bm25.retrieve(test_requests, 20), unified.retrieve(test_requests, 20))


def test_features_shape_and_padding(features, test_requests, candidates, tiny_world):
    pad = candidates < 0
    assert pad.any() and (~pad).any()
    x = features.transform(test_requests, candidates)
    assert x.shape == (*candidates.shape, len(FEATURES)) and x.dtype == np.float32
    assert np.isnan(x[pad]).all()  # every feature NaN at padding
    real = x[~pad]
    for name, j in COL.items():
        if name == "rating":  # a listing with no reviews has no rating: NaN there and only there
            rated = ~np.isnan(tiny_world.observed.listings["rating"].to_numpy())[candidates[~pad]]
            np.testing.assert_array_equal(~np.isnan(real[:, j]), rated)
        else:
            assert not np.isnan(real[:, j]).any(), name
    assert set(np.unique(real[:, COL["same_country"]])) <= {0.0, 1.0}
    assert (real[:, COL["bm25"]] >= 0).all()
    # age at the request: negative for a retrieved listing created after it (retrieval does not filter those)
    created = tiny_world.observed.listings["created_day"].to_numpy()[np.where(pad, 0, candidates)]
    age = test_requests["day"].to_numpy()[:, None] - created
    np.testing.assert_allclose(x[..., COL["age_days"]][~pad], age[~pad], rtol=1e-5, atol=1e-3)


def test_features_by_hand_for_one_pair(features, test_requests, candidates, tiny_world):
    observed = tiny_world.observed
    x = features.transform(test_requests, candidates)
    i, j = 5, 1
    request, lid = test_requests.iloc[i], candidates[i, j]
    listing = observed.listings.set_index("listing_id").loc[lid]
    shop = observed.shops.set_index("shop_id").loc[listing["shop_id"]]
    user = observed.users.set_index("user_id").loc[request["user_id"]]
    archive = observed.archive[observed.archive["listing_id"] == lid]
    expected = {"log_reviews": np.log1p(listing["review_count"]), "log_price": np.log(listing["price"]),
                "age_days": request["day"] - listing["created_day"], "log_shop_sales": np.log1p(shop["sales_count"]),
                "same_country": float(user["country"] == shop["country"]),
                "log_archive_clicks": np.log1p(archive["click"].sum()),
                "log_archive_purchases": np.log1p(archive["purchase"].sum())}
    for name, value in expected.items():
        assert x[i, j, COL[name]] == pytest.approx(value, rel=1e-5, abs=1e-6), name


def test_bm25_feature_is_the_search_score(features, bm25, test_requests):
    """The bm25 column equals what ``BM25Retriever.search`` scores for each listing of the query's top k."""
    found = bm25.search(test_requests["query"].astype(str).tolist(), k=30)
    assert (found.ids >= 0).sum() > 1000
    x = features.transform(test_requests, found.ids)
    real = found.ids >= 0
    np.testing.assert_allclose(x[..., COL["bm25"]][real], found.scores[real], rtol=1e-5)
    # a query with no indexed word scores 0 everywhere
    no_words = test_requests.iloc[:2].assign(query=["zzzqqq", ""])
    scores = features.bm25_scores(no_words["query"].tolist(), np.array([[0, 1, PAD], [2, 3, 4]]))
    np.testing.assert_array_equal(scores, np.zeros((2, 3)))


def test_cosine_feature_is_the_served_dot_product(features, unified, test_requests, candidates):
    q = unified.encode_sessions(test_requests).numpy()
    rows = pd.Index(unified.listing_ids).get_indexer(np.where(candidates >= 0, candidates, 0).ravel())
    p = unified.listing_vectors.numpy()[rows].reshape(*candidates.shape, -1)
    expected = np.where(candidates >= 0, np.einsum("nkd,nd->nk", p, q), np.nan)
    x = features.transform(test_requests, candidates)
    np.testing.assert_allclose(x[..., COL["cosine"]], expected, rtol=1e-4, atol=1e-5)
    # chunking the requests changes nothing
    np.testing.assert_allclose(features.cosine(test_requests, candidates, chunk=7),
                               features.cosine(test_requests, candidates), rtol=1e-5, atol=1e-6)


def test_features_reject_bad_candidates(features, test_requests, candidates, tiny_world):
    with pytest.raises(ValueError, match="one row per session"):
        features.transform(test_requests, candidates[:-1])
    with pytest.raises(ValueError, match="one row per session"):
        features.transform(test_requests, candidates[:, 0])
    unknown = candidates.copy()
    unknown[3, 0] = len(tiny_world.observed.listings) + 10
    with pytest.raises(ValueError, match="not in the catalogue"):
        features.transform(test_requests, unknown)
    with pytest.raises(ValueError, match="not fitted"):
        RankingFeatures(tiny_world.observed, BM25Retriever(), features.retriever)


# --- Ranker ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ranker(features, tiny_world):
    return Ranker(features, QUICK).fit(tiny_world.observed)


def test_ranker_fits_deterministically(ranker, features, tiny_world, test_requests, candidates):
    again = Ranker(features, QUICK).fit(tiny_world.observed)
    np.testing.assert_array_equal(ranker.score(test_requests, candidates), again.score(test_requests, candidates))
    assert again.n_trees == ranker.n_trees and again.valid_ndcg == ranker.valid_ndcg
    assert 1 <= ranker.n_trees <= QUICK.n_trees
    assert 0 <= ranker.valid_ndcg <= 1 and 0 <= ranker.logged_order_ndcg <= 1
    assert set(ranker.importance.index) == set(FEATURES) and (ranker.importance >= 0).all()
    assert ranker.importance.is_monotonic_decreasing


def test_ranker_scores_and_ranks_candidates(ranker, test_requests, candidates):
    scores = ranker.score(test_requests, candidates)
    pad = candidates < 0
    assert scores.shape == candidates.shape
    assert np.isneginf(scores[pad]).all() and np.isfinite(scores[~pad]).all()
    width = candidates.shape[1]
    full = ranker.rank(test_requests, candidates, width)
    for row, cand in zip(full, candidates, strict=True):  # a permutation of the row's real candidates
        real = cand[cand >= 0]
        assert sorted(row[: real.size]) == sorted(real) and (row[real.size:] == PAD).all()
    # best first, and the top k is the head of the full order
    ordered = np.take_along_axis(scores, np.argsort(-scores, axis=1, kind="stable"), axis=1)
    for i in range(0, len(candidates), 37):
        lookup = dict(zip(candidates[i], scores[i], strict=True))
        got = [lookup[lid] for lid in full[i] if lid >= 0]
        np.testing.assert_array_equal(got, ordered[i][: len(got)])
    np.testing.assert_array_equal(ranker.rank(test_requests, candidates, 5), full[:, :5])
    # all padding: all -inf, ranks to padding
    empty = np.full((len(test_requests), 4), PAD)
    assert np.isneginf(ranker.score(test_requests, empty)).all()
    assert (ranker.rank(test_requests, empty, 3) == PAD).all()


def test_ranker_needs_fit_and_a_config(features, test_requests, candidates):
    with pytest.raises(RuntimeError, match="fit"):
        Ranker(features, QUICK).score(test_requests, candidates)
    with pytest.raises(RuntimeError, match="fit"):
        Ranker(features, QUICK).rank(test_requests, candidates, 5)
    with pytest.raises(TypeError, match="RankerConfig"):
        Ranker(features, {"n_trees": 3})


def test_top_by_score_refuses_nan_and_positive_infinity():
    ids = np.array([[3, 4, 5]])
    for bad in (np.nan, np.inf):
        with pytest.raises(ValueError, match="finite"):
            top_by_score(ids, np.array([[bad, 0.0, 1.0]]), 2)


def test_available_drops_listings_created_after_the_request(tiny_world):
    observed = tiny_world.observed
    sessions = observed.split("test").head(50)
    created = observed.listings.set_index("listing_id")["created_day"]
    newest = created.sort_values().index.to_numpy()[-10:]
    candidates = np.tile(np.r_[newest, PAD], (len(sessions), 1))
    kept = available(observed, sessions, candidates)
    exists = created.loc[newest].to_numpy()[None, :] <= sessions["day"].to_numpy()[:, None]
    np.testing.assert_array_equal(kept[:, :-1], np.where(exists, newest[None, :], PAD))
    assert (kept[:, -1] == PAD).all()
    assert (kept == PAD).any()  # the newest listings did not exist for some requests
    with pytest.raises(ValueError, match="one row per session"):
        available(observed, sessions, candidates[:3])


def test_the_ranker_learns_from_the_validation_window_and_stops_on_held_out_buyers(ranker, tiny_world):
    # the unified model fitted the training window, so its score there is in-sample: the ranker, a second
    # stage, learns from the validation window's pages, its buyers split between fitting and stopping
    sessions, _, _ = logged_pages(tiny_world.observed, "valid", QUICK.max_sessions, QUICK.seed)
    assert ranker.n_pages["fit"] + ranker.n_pages["stop"] == len(sessions)
    share = ranker.n_pages["stop"] / len(sessions)
    assert 0.1 < share < 0.6  # about stop_share of the buyers, and so of their pages
    other = Ranker(ranker.features, RankerConfig(**{**vars(QUICK), "window": "train"})).fit(tiny_world.observed)
    train_pages, _, _ = logged_pages(tiny_world.observed, "train", QUICK.max_sessions, QUICK.seed)
    assert other.n_pages["fit"] + other.n_pages["stop"] == len(train_pages)


def test_scores_do_not_depend_on_the_prediction_threads(ranker, features, test_requests, candidates):
    x = features.transform(test_requests, candidates)
    real = candidates >= 0
    one = ranker.booster.predict(x[real], num_iteration=ranker.n_trees, num_threads=1)
    np.testing.assert_array_equal(ranker.predict(x, candidates)[real], one)


def test_predict_reuses_one_feature_pass(ranker, features, test_requests, candidates):
    x = features.transform(test_requests, candidates)
    np.testing.assert_array_equal(ranker.predict(x, candidates), ranker.score(test_requests, candidates))
    with pytest.raises(ValueError, match="do not match"):
        ranker.predict(x[:, :-1], candidates)
