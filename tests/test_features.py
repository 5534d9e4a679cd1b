import numpy as np
import pytest

from retrieval_lib.features import (
    LOCATION_DIM,
    NUMERIC_DIM,
    NumericFeatures,
    listing_locations,
    location_features,
    user_histories,
    user_listing_miles,
    user_locations,
)
from retrieval_lib.geo import haversine_miles


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


def test_history_holds_only_earlier_sessions(tiny_world):
    observed = tiny_world.observed
    history = user_histories(observed, max_items=8)
    sessions = observed.sessions.set_index("session_id")
    rng = np.random.default_rng(0)
    for sid in rng.choice(sessions.index.to_numpy(), 200, replace=False):
        row = history.rows(np.array([sid]))[0]
        user, day = sessions.loc[sid, ["user_id", "day"]]
        earlier = sessions[(sessions["user_id"] == user) & ((sessions["day"] < day) | (
            (sessions["day"] == day) & (sessions.index < sid)))]
        texts = {history.texts[i] for i in history.item[row] if i >= 0}
        pairs = zip(history.item[row], history.kind[row], strict=True)
        queries = {history.texts[i] for i, k in pairs if i >= 0 and k == 0}
        assert queries <= set(earlier["query"])
        if len(earlier) == 0:
            assert not texts
        else:  # the most recent earlier query is always kept
            assert earlier.sort_values("day")["query"].iloc[-1] in queries or history.lengths()[row] == 8


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
