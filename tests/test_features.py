import dataclasses

import numpy as np
import pandas as pd
import pytest

from retrieval_lib.features.history import user_histories
from retrieval_lib.features.location import (
    LOCATION_DIM,
    listing_locations,
    location_features,
    retrieved_distance,
    user_listing_miles,
    user_locations,
)
from retrieval_lib.features.numeric import NUMERIC_DIM, NumericFeatures
from retrieval_lib.marketplace.geo import haversine_miles


def test_numeric_features_are_quantiles_fitted_on_the_training_window(tiny_world):
    observed = tiny_world.observed
    x = NumericFeatures().fit(observed).transform(observed)
    assert x.shape == (len(observed.listings), NUMERIC_DIM) and x.dtype == np.float32
    assert np.isfinite(x).all() and x.min() >= 0 and x.max() <= 1
    known = observed.listings["created_day"].to_numpy() < observed.train_end
    # the price column is (close to) uniform over the listings it was fitted on
    assert abs(np.median(x[known, 0]) - 0.5) < 0.05
    rated = observed.listings["rating"].notna().to_numpy()
    np.testing.assert_array_equal(x[:, -1], rated.astype(np.float32))
    assert (x[~rated, 1] == 0).all()
    with pytest.raises(RuntimeError, match="fit"):
        NumericFeatures().transform(observed)


def test_location_features_by_hand():
    out = location_features(np.array([0.0, 90.0, np.nan]), np.array([0.0, 0.0, np.nan]),
                            np.array(["US", "GB", "XX"], dtype=object))
    assert out.shape == (3, LOCATION_DIM)
    np.testing.assert_allclose(out[0, :3], [1, 0, 0], atol=1e-6)
    np.testing.assert_allclose(out[1, :3], [0, 0, 1], atol=1e-6)
    assert out[0, 3] == 1 and out[1, 4] == 1 and not out[2].any()


def test_listing_and_user_locations_line_up(tiny_world):
    observed = tiny_world.observed
    listing = listing_locations(observed)
    shop = observed.shops.set_index("shop_id").loc[observed.listings.loc[0, "shop_id"]]
    np.testing.assert_allclose(listing[0], location_features(np.array([shop.lat]), np.array([shop.lon]),
                                                             np.array([shop.country], dtype=object))[0])
    assert user_locations(observed).shape == (len(observed.users), LOCATION_DIM)


def _check_history(observed, history, max_items):
    """Assert every real item of every history row against the logs; padding must be ``source == -1``."""
    sessions = observed.sessions
    n_sessions = len(sessions)
    assert (sessions["session_id"].to_numpy() == np.arange(n_sessions)).all()
    user_of = sessions["user_id"].to_numpy()
    # position of each session in time (sessions are ordered by day, then session id)
    order = sessions.sort_values(["day", "session_id"], kind="stable")["session_id"].to_numpy()
    rank = np.empty(n_sessions, dtype=np.int64)
    rank[order] = np.arange(n_sessions)
    ids = history.session_ids
    current = ids < 0
    # each row's user and time: a logged session's own, or for a current row the end of the logs
    row_user = np.where(current, -1 - ids, user_of[ids.clip(0)])
    row_rank = np.where(current, n_sessions, rank[ids.clip(0)])
    assert (np.sort(ids[~current]) == np.arange(n_sessions)).all()
    if current.any():  # one current row per user
        assert (np.sort(row_user[current]) == observed.users["user_id"].sort_values().to_numpy()).all()

    real = history.item >= 0
    src = history.source
    assert (src[~real] == -1).all() and (history.listing[~real] == -1).all()
    assert (src[real] >= 0).all() and (src[real] < n_sessions).all()
    s = src.clip(0)
    # every item comes from an earlier session of the same user
    assert (user_of[s][real] == np.broadcast_to(row_user[:, None], s.shape)[real]).all(), "another user's item"
    assert (rank[s][real] < np.broadcast_to(row_rank[:, None], s.shape)[real]).all(), "item not from an earlier session"
    # oldest first: source sessions never go back in time along a row
    later = np.where(real, rank[s], -1)
    assert (np.diff(later, axis=1) >= 0).all()

    texts = np.array(history.texts, dtype=object)[history.item.clip(0)]
    listing = history.listing
    kind = history.kind
    imp = observed.impressions
    n_listings = len(observed.listings)
    key = s * n_listings + listing.clip(0)
    query = real & (kind == 0)
    click = real & (kind == 1)
    buy = real & (kind == 2)
    assert (query | click | buy)[real].all()
    assert (texts[query] == sessions["query"].astype(str).to_numpy()[s[query]]).all()
    assert (listing[query] == -1).all()
    clicked = (imp.loc[imp["click"], "session_id"] * n_listings + imp.loc[imp["click"], "listing_id"]).to_numpy()
    bought = (imp.loc[imp["purchase"], "session_id"] * n_listings
              + imp.loc[imp["purchase"], "listing_id"]).to_numpy()
    assert (listing[click | buy] >= 0).all()
    assert np.isin(key[click], clicked).all()
    assert np.isin(key[buy], bought).all()
    shown = np.array([f"{title} | {' '.join(tags)}" for title, tags in zip(observed.listings["title"],
                                                                             observed.listings["tags"], strict=True)],
                     dtype=object)
    assert (texts[click] == shown[listing[click]]).all()  # the listing as the buyer saw it
    assert (texts[buy] == shown[listing[buy]]).all()

    # nothing is missing: a row holds the last max_items items of all the user's earlier sessions
    contributed = np.ones(n_sessions, dtype=np.int64)  # each session's query
    np.add.at(contributed, imp.loc[imp["click"], "session_id"].to_numpy(), 1)
    np.add.at(contributed, imp.loc[imp["purchase"], "session_id"].to_numpy(), 1)
    per_user = np.zeros((user_of.max() + 1, n_sessions + 1), dtype=np.int64)  # items before each time
    np.add.at(per_user, (user_of[order], rank[order] + 1), contributed[order])
    before = per_user.cumsum(axis=1)[row_user, row_rank]
    np.testing.assert_array_equal(history.lengths(), np.minimum(before, max_items))
    # and its most recent item comes from the user's latest earlier session
    latest = np.full((user_of.max() + 1, n_sessions + 1), -1, dtype=np.int64)
    latest[user_of[order], rank[order] + 1] = order
    latest = np.maximum.accumulate(np.where(latest >= 0, rank[latest.clip(0)], -1), axis=1)
    expected = latest[row_user, row_rank]
    has = history.lengths() > 0
    assert (has == (expected >= 0)).all()
    np.testing.assert_array_equal(rank[src[has, -1]], expected[has])


def test_every_history_item_comes_from_an_earlier_session_of_the_same_user(tiny_world):
    observed = tiny_world.observed
    history = user_histories(observed, max_items=8, current=True)
    assert history.lengths().max() == 8 and (history.lengths() == 0).any()
    assert {0, 1, 2} <= set(np.unique(history.kind[history.item >= 0]))
    _check_history(observed, history, 8)


def test_the_history_check_catches_a_leak(tiny_world):
    """A history taken one session too late (it holds the request's own query and clicks) fails the check."""
    observed = tiny_world.observed
    history = user_histories(observed, max_items=8, current=True)
    s = observed.sessions.sort_values(["day", "session_id"], kind="stable")
    # each session gets the history of the user's next session (the current row after the last one)
    after = s.groupby("user_id")["session_id"].shift(-1).fillna(-1 - s["user_id"]).astype(np.int64)
    ids = history.session_ids
    rows = np.where(ids >= 0, history.rows(after.set_axis(s["session_id"]).reindex(ids.clip(0)).to_numpy()),
                    np.arange(len(ids)))
    leaked = dataclasses.replace(history, **{f: getattr(history, f)[rows]
                                             for f in ("item", "kind", "listing", "source")})
    with pytest.raises(AssertionError, match="earlier session"):
        _check_history(observed, leaked, 8)


def test_history_items_are_padded_on_the_left_and_typed(tiny_world):
    history = user_histories(tiny_world.observed, max_items=4, current=True)
    real = history.item >= 0
    assert (np.diff(real.astype(int), axis=1) >= 0).all()  # padding first, then items
    assert set(np.unique(history.kind[real])) <= {0, 1, 2}
    assert (history.listing[real & (history.kind == 0)] == -1).all()
    assert (history.listing[real & (history.kind > 0)] >= 0).all()
    n_users = len(tiny_world.observed.users)
    assert len(history.session_ids) == len(tiny_world.observed.sessions) + n_users
    assert history.lengths().max() <= 4
    with pytest.raises(KeyError):
        history.rows(np.array([10**9]))
    with pytest.raises(ValueError):
        user_histories(tiny_world.observed, max_items=0)


def test_user_listing_miles_by_hand(tiny_world):
    observed = tiny_world.observed
    user, listing = observed.users.iloc[3], observed.listings.iloc[7]
    shop = observed.shops.set_index("shop_id").loc[listing["shop_id"]]
    expected = haversine_miles(user["lat"], user["lon"], shop["lat"], shop["lon"])
    out = user_listing_miles(observed, np.array([3, 3]), np.array([[7, -1], [7, 7]]))
    assert out.shape == (2, 2) and np.isnan(out[0, 1])
    np.testing.assert_allclose(out[[0, 1, 1], [0, 0, 1]], expected)


def test_retrieved_distance_is_a_percentile_over_every_retrieved_listing(tiny_world):
    observed = tiny_world.observed
    sessions = pd.DataFrame({"user_id": [3, 5]})
    ranked = np.array([[7, 8, -1], [9, 10, 11]])
    miles = user_listing_miles(observed, sessions["user_id"].to_numpy(), ranked)
    assert retrieved_distance(observed, sessions, ranked, percentile=100) == pytest.approx(np.nanmax(miles))
    assert retrieved_distance(observed, sessions, ranked, percentile=50) == pytest.approx(np.nanmedian(miles))


def test_history_rows_match_a_lookup_by_index_and_name_the_unknown_session(tiny_world):
    import pandas as pd

    history = user_histories(tiny_world.observed, max_items=4, current=True)
    reference = pd.Series(np.arange(len(history.session_ids)), index=history.session_ids)
    rng = np.random.default_rng(0)
    wanted = rng.choice(history.session_ids, size=500)  # repeats and current-history rows (negative ids)
    assert (history.session_ids < 0).any() and (wanted < 0).any()
    assert np.array_equal(history.rows(wanted), reference.loc[wanted].to_numpy())
    assert history.rows(np.array([], dtype=np.int64)).shape == (0,)
    with pytest.raises(KeyError, match="no history for session 999999999"):
        history.rows(np.array([int(history.session_ids[0]), 10**9 - 1]))
