"""ANN-based product boosting: hydrated vectors, the boosted and multiplicative retrievers, the tuner."""

import dataclasses
import typing

import numpy as np
import pandas as pd
import pytest
import torch

from retrieval_lib.marketplace import ObservedMarketplace
from retrieval_lib.models.unified import UnifiedRetriever
from retrieval_lib.serving.ann import HNSWIndex, overlap_at_k
from retrieval_lib.serving.base import PAD
from retrieval_lib.serving.boosting import (
    QUALITY_FEATURES,
    BoostedRetriever,
    MultiplicativeRetriever,
    PurchaseRecall,
    hydrate_listings,
    hydrate_queries,
    logged_purchases,
    quality_features,
    tune_boost,
)
from retrieval_lib.serving.exact import exact_top_k

K = 50


@pytest.fixture(scope="module")
def retriever(tiny_system):
    """The tiny world's served unified model, unboosted. Boosting's algebra would need no training, but an
    untrained query tower that reads the query's frozen blocks points nearly every query at the same few
    listings, a geometry no trained model has, in which neither a boost nor an index behaves as served."""
    return UnifiedRetriever(tiny_system.model, tiny_system.features)


@pytest.fixture(scope="module")
def quality(tiny_world):
    return quality_features(tiny_world.observed)


@pytest.fixture(scope="module")
def sessions(tiny_world):
    return tiny_world.observed.split("valid").iloc[:300]


@pytest.fixture(scope="module")
def objective(retriever, quality, tiny_world):
    return PurchaseRecall(retriever, quality, tiny_world.observed, k=K)


# --- hydration ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("n_q", "n_p", "dim", "n_f"), [(1, 1, 1, 1), (7, 13, 5, 4), (30, 200, 32, 6)])
def test_hydrated_inner_product_is_score_plus_boost(n_q, n_p, dim, n_f):
    rng = np.random.default_rng(n_q + n_p)
    q, p = rng.normal(size=(n_q, dim)), rng.normal(size=(n_p, dim))
    w, f = rng.uniform(-1, 1, size=n_f), rng.uniform(size=(n_p, n_f))
    hq, hp = hydrate_queries(q, w), hydrate_listings(p, f)
    assert hq.shape == (n_q, dim + n_f) and hp.shape == (n_p, dim + n_f)
    assert hq.dtype == hp.dtype == torch.float32
    np.testing.assert_allclose((hq @ hp.T).numpy(), q @ p.T + w @ f.T, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(hq[:, dim:].numpy(), np.tile(w, (n_q, 1)), rtol=1e-6)  # one w for every query


def test_hydration_checks_its_inputs():
    with pytest.raises(ValueError, match=r"\b5\b.*\b4\b"):
        hydrate_listings(np.ones((5, 3)), np.ones((4, 2)))
    with pytest.raises(ValueError, match="2-D"):
        hydrate_listings(np.ones(3), np.ones((3, 2)))
    with pytest.raises(ValueError, match="1-D"):
        hydrate_queries(np.ones((2, 3)), np.ones((2, 4)))
    for bad in (np.nan, np.inf):
        with pytest.raises(ValueError, match="NaN"):
            hydrate_queries(np.ones((2, 3)), np.array([0.1, bad]))


def test_wrong_weight_length_is_a_clear_error(retriever, quality, tiny_world):
    message = "boosting weights have 3 entries, the quality features 4"
    with pytest.raises(ValueError, match=message):
        BoostedRetriever(retriever, quality, np.zeros(3))
    recall = PurchaseRecall(retriever, quality, tiny_world.observed, k=K)
    with pytest.raises(ValueError, match=message):
        recall(np.zeros(3))
    with pytest.raises(ValueError, match=r"2000 listing vectors.*1999"):
        BoostedRetriever(retriever, quality[:-1], np.zeros(4))


def test_nan_weights_are_refused(retriever, quality, sessions, objective):
    bad = np.array([0.1, np.nan, 0.0, 0.0])
    with pytest.raises(ValueError, match="NaN"):
        objective(bad)
    with pytest.raises(ValueError, match="NaN"):
        BoostedRetriever(retriever, quality, bad).retrieve(sessions.iloc[:3], 5)


# --- the quality features -------------------------------------------------------------------------


def _monotone(x: np.ndarray, y: np.ndarray) -> bool:
    """Whether ``y`` never falls as ``x`` rises."""
    order = np.argsort(x, kind="stable")
    xs, ys = x[order], y[order]
    rises = np.diff(xs) > 0
    return bool((np.diff(ys)[rises] >= -1e-6).all())


def test_quality_features_are_scaled_observable_signals(tiny_world, quality):
    listings, shops = tiny_world.observed.listings, tiny_world.observed.shops
    assert quality.shape == (len(listings), len(QUALITY_FEATURES)) == (2000, 4)
    assert quality.dtype == np.float32 and np.isfinite(quality).all()
    assert (quality >= 0).all() and (quality <= 1).all()
    for column in range(4):
        assert quality[:, column].std() > 0.1  # each spreads over the unit interval
    reviews = listings["review_count"].to_numpy(dtype=float)
    assert _monotone(reviews, quality[:, 1])
    assert not _monotone(reviews, -quality[:, 1])  # and really rises
    age = tiny_world.observed.train_end - listings["created_day"].to_numpy(dtype=float)
    assert _monotone(age, -quality[:, 2])  # older: less fresh
    old, young = np.argmax(age), np.argmin(np.where(age > 0, age, np.inf))
    assert quality[old, 2] < quality[young, 2]
    rated = listings["rating"].notna().to_numpy()
    assert (quality[~rated, 0] == 0).all()
    assert _monotone(listings["rating"].to_numpy()[rated], quality[rated, 0])
    sales = listings["shop_id"].map(shops.set_index("shop_id")["sales_count"]).to_numpy(dtype=float)
    assert _monotone(sales, quality[:, 3])


# --- additive boosting ----------------------------------------------------------------------------


def test_no_boost_is_plain_retrieval(retriever, quality, sessions):
    boosted = BoostedRetriever(retriever, quality, np.zeros(4))
    np.testing.assert_array_equal(boosted.retrieve(sessions, 20), retriever.retrieve(sessions, 20))


@pytest.mark.parametrize("feature", range(4))
def test_a_large_weight_pulls_that_feature_up(retriever, quality, sessions, feature):
    w = np.zeros(4)
    w[feature] = 5.0
    plain = retriever.retrieve(sessions, 10)
    boosted = BoostedRetriever(retriever, quality, w).retrieve(sessions, 10)
    assert quality[boosted, feature].mean() > quality[plain, feature].mean() + 0.2
    assert quality[boosted, feature].mean() > 0.9


def test_boosted_hnsw_agrees_with_exact_boosting(retriever, quality, sessions):
    w = np.array([0.1, 0.05, 0.2, 0.1])
    index = HNSWIndex(m=16, ef_construction=100, ef=100, space="l2")
    ann = BoostedRetriever(retriever, quality, w, index=index)
    assert index.dim == retriever.listing_vectors.shape[1] + 4  # built over the hydrated vectors
    exact = BoostedRetriever(retriever, quality, w)
    assert overlap_at_k(ann.retrieve(sessions, 20), exact.retrieve(sessions, 20)) >= 0.95
    # one index serves every w: it is reused, not rebuilt
    again = BoostedRetriever(retriever, quality, np.zeros(4), index=index)
    assert again.index.index is index.index
    assert overlap_at_k(again.retrieve(sessions, 20), retriever.retrieve(sessions, 20)) >= 0.95
    wrong = HNSWIndex(m=8, ef_construction=50).build(retriever.listing_vectors)
    with pytest.raises(ValueError, match="dimension"):
        BoostedRetriever(retriever, quality, w, index=wrong)


# --- multiplicative boosting ----------------------------------------------------------------------


def test_unit_multiplier_is_plain_retrieval(retriever, sessions):
    ones = MultiplicativeRetriever(retriever, np.ones(2000), depth=100)
    np.testing.assert_array_equal(ones.retrieve(sessions, 20), retriever.retrieve(sessions, 20))


def test_multiplier_only_reorders_what_retrieval_found(retriever, sessions):
    plain = retriever.retrieve(sessions, 20)
    same_depth = MultiplicativeRetriever(retriever, depth=20).retrieve(sessions, 20)
    np.testing.assert_array_equal(np.sort(same_depth, axis=1), np.sort(plain, axis=1))
    assert (same_depth != plain).any()  # the default multiplier does reorder
    deeper = MultiplicativeRetriever(retriever, depth=100).retrieve(sessions, 20)
    pool = retriever.retrieve(sessions, 100)
    assert all(set(row) <= set(cands) for row, cands in zip(deeper.tolist(), pool.tolist(), strict=True))
    assert (np.sort(deeper, axis=1) != np.sort(plain, axis=1)).any()  # a deeper pool changes the set


def test_multiplier_is_checked(retriever):
    with pytest.raises(ValueError, match=r"1999 multipliers for 2000"):
        MultiplicativeRetriever(retriever, np.ones(1999))
    with pytest.raises(ValueError, match="depth"):
        MultiplicativeRetriever(retriever, depth=0)
    default = MultiplicativeRetriever(retriever).multiplier
    assert default.shape == (2000,) and (default >= 0.75).all() and (default <= 1.25).all()


def test_more_results_than_listings_are_padded(retriever, sessions):
    ids = MultiplicativeRetriever(retriever, depth=10).retrieve(sessions.iloc[:3], 2005)
    assert ids.shape == (3, 2005) and (ids[:, 2000:] == PAD).all() and (ids[:, :2000] != PAD).all()


# --- the tuning objective -------------------------------------------------------------------------


def test_logged_purchases_of_a_window(tiny_world):
    observed = tiny_world.observed
    with pytest.raises(ValueError, match="train"):
        logged_purchases(observed, "train")
    purchases = logged_purchases(observed, "valid")
    assert len(purchases) == int(observed.logs("valid")["purchase"].sum()) > 0
    assert (purchases["interaction"] == "purchase").all()
    valid = set(observed.split("valid")["session_id"])
    assert set(purchases["session_id"]) <= valid
    assert list(purchases.columns[:5]) == ["session_id", "user_id", "query", "day", "listing_id"]


def test_purchase_recall_without_boost_by_hand(retriever, quality, tiny_world, objective):
    purchases = logged_purchases(tiny_world.observed, "valid")
    assert len(objective) == len(purchases)
    top = exact_top_k(retriever.encode_sessions(purchases), retriever.listing_vectors, K,
                      item_ids=retriever.listing_ids).ids
    hits = [target in row for target, row in zip(purchases["listing_id"], top.tolist(), strict=True)]
    assert objective(np.zeros(4)) == pytest.approx(np.mean(hits))
    for w in ([0.3, 0.3, 0.3, 0.3], [0.0, 0.0, 0.0, 0.3], [1.0, 0.0, 0.0, 0.0]):
        assert 0.0 <= objective(np.array(w)) <= 1.0
    # boosting changes the objective (else the tuner would have nothing to tune)
    assert len({objective(np.array(w)) for w in ([0, 0, 0, 0], [0, 0, 0, 0.3], [1, 0, 0, 0])}) > 1
    with pytest.raises(ValueError, match="no logged purchases"):
        PurchaseRecall(retriever, quality, dataclasses.replace(
            tiny_world.observed, impressions=tiny_world.observed.impressions.iloc[:0]), k=K)


class _NoLatent:
    """The observed marketplace, with any reach for the latent truth an error."""

    def __init__(self, observed: ObservedMarketplace) -> None:
        self._observed = observed

    def __getattr__(self, name: str):
        if name in ("latent", "config", "observed"):
            raise AssertionError(f"the objective reached for {name!r}, beyond the observable logs")
        return getattr(self._observed, name)


def test_the_objective_reads_only_the_observable_tuning_window(retriever, quality, tiny_world, objective):
    """Test-window logs can be dropped or falsified, and the latent truth hidden: the objective is unchanged."""
    observed = tiny_world.observed
    assert typing.get_type_hints(PurchaseRecall.__init__)["observed"] is ObservedMarketplace
    test_ids = observed.split("test")["session_id"]
    in_test = observed.impressions["session_id"].isin(test_ids)
    assert observed.impressions.loc[in_test, "purchase"].any()
    dropped = dataclasses.replace(observed, impressions=observed.impressions[~in_test].reset_index(drop=True))
    flipped_impressions = observed.impressions.copy()
    flipped_impressions.loc[in_test, "purchase"] = ~flipped_impressions.loc[in_test, "purchase"]
    flipped = dataclasses.replace(observed, impressions=flipped_impressions)
    # the altered copies really differ where the objective must not look
    with pytest.raises(ValueError, match="no logged purchases"):
        PurchaseRecall(retriever, quality, dropped, split="test", k=K)
    assert len(PurchaseRecall(retriever, quality, flipped, split="test", k=K)) != len(
        PurchaseRecall(retriever, quality, observed, split="test", k=K))
    variants = [PurchaseRecall(retriever, quality, o, k=K) for o in (dropped, flipped, _NoLatent(observed))]
    rng = np.random.default_rng(0)
    for w in [np.zeros(4), np.full(4, 0.3), *rng.uniform(0, 0.5, size=(4, 4))]:
        value = objective(w)
        assert [v(w) for v in variants] == [value] * 3
    np.testing.assert_array_equal(quality_features(dropped), quality)
    np.testing.assert_array_equal(quality_features(flipped), quality)


# --- the tuner ------------------------------------------------------------------------------------


def test_tuning_is_reproducible_and_never_worse_than_no_boost(objective):
    a = tune_boost(objective, n_trials=8, seed=3, high=0.2)
    b = tune_boost(objective, n_trials=8, seed=3, high=0.2)
    pd.testing.assert_frame_equal(a.trials, b.trials)
    np.testing.assert_array_equal(a.w, b.w)
    assert a.best_value == b.best_value
    trials = a.trials
    assert list(trials.columns) == ["trial", *QUALITY_FEATURES, "value"]
    assert trials["trial"].tolist() == list(range(8))
    assert (trials.loc[0, list(QUALITY_FEATURES)] == 0).all()  # the first trial is no boost
    assert trials.loc[0, "value"] == pytest.approx(objective(np.zeros(4)))
    weights = trials[list(QUALITY_FEATURES)].to_numpy()
    assert (weights >= 0).all() and (weights <= 0.2).all()
    assert (weights[1:] > 0).any()
    assert trials["value"].between(0, 1).all()
    assert a.best_value == trials["value"].max() >= trials.loc[0, "value"]
    assert a.best_value == pytest.approx(objective(a.w))
    assert a.w.shape == (4,) and a.w.dtype == np.float32 and a.seconds > 0
    other = tune_boost(objective, n_trials=8, seed=4, high=0.2)
    assert not np.allclose(other.trials[list(QUALITY_FEATURES)].to_numpy()[1:], weights[1:])


def test_tuner_arguments_are_checked(objective):
    assert len(tune_boost(objective, n_trials=1).trials) == 1
    with pytest.raises(ValueError, match="n_trials"):
        tune_boost(objective, n_trials=0)
    with pytest.raises(ValueError, match="feature names"):
        tune_boost(objective, n_trials=2, names=("rating", "reviews"))
