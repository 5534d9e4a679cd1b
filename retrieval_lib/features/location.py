"""Location features of buyers and shops, and the buyer-to-shop distance.

A location is a point on the unit sphere (so nearby means close) plus a one-hot country.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from retrieval_lib.marketplace import ObservedMarketplace
from retrieval_lib.marketplace.geo import COUNTRY_NAMES, haversine_miles

#: Width of :func:`location_features`: a point on the unit sphere plus a one-hot country.
LOCATION_DIM = 3 + len(COUNTRY_NAMES)


def location_features(lat: np.ndarray, lon: np.ndarray, country: np.ndarray) -> np.ndarray:
    """``(n, LOCATION_DIM)``: the point on the unit sphere (so nearby means close) and a one-hot country.

    ``country`` holds names from :data:`~retrieval_lib.marketplace.geo.COUNTRY_NAMES`; missing locations (NaN) and
    unknown countries give zeros.
    """
    lat, lon = np.radians(np.asarray(lat, dtype=float)), np.radians(np.asarray(lon, dtype=float))
    xyz = np.stack([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)], axis=1)
    xyz = np.nan_to_num(xyz, nan=0.0)
    onehot = (np.asarray(country, dtype=object)[:, None] == np.array(COUNTRY_NAMES, dtype=object)[None, :])
    return np.concatenate([xyz, onehot.astype(float)], axis=1).astype(np.float32)


def listing_locations(observed: ObservedMarketplace) -> np.ndarray:
    """Location features of every listing (its shop's location), in ``listing_id`` order."""
    shops = observed.shops.set_index("shop_id").loc[observed.listings["shop_id"].to_numpy()]
    return location_features(shops["lat"].to_numpy(), shops["lon"].to_numpy(), shops["country"].to_numpy())


def user_locations(observed: ObservedMarketplace) -> np.ndarray:
    """Location features of every user, in ``user_id`` order."""
    users = observed.users
    return location_features(users["lat"].to_numpy(), users["lon"].to_numpy(), users["country"].to_numpy())


def user_listing_miles(observed: ObservedMarketplace, user_ids: np.ndarray, listing_ids: np.ndarray) -> np.ndarray:
    """Great-circle miles from each user to the shop of each listing; ``listing_ids`` may be ``(n, k)``.

    Padding ids (negative) give NaN.
    """
    user_ids = np.asarray(user_ids, dtype=np.int64)
    listing_ids = np.asarray(listing_ids, dtype=np.int64)
    users = observed.users.set_index("user_id").loc[user_ids]
    shops = observed.shops.set_index("shop_id")
    shop_of = observed.listings["shop_id"].to_numpy()[listing_ids.clip(0)]
    lat, lon = shops.loc[shop_of.ravel(), "lat"].to_numpy(), shops.loc[shop_of.ravel(), "lon"].to_numpy()
    shape = listing_ids.shape
    ulat = np.broadcast_to(users["lat"].to_numpy().reshape(-1, *([1] * (len(shape) - 1))), shape).ravel()
    ulon = np.broadcast_to(users["lon"].to_numpy().reshape(-1, *([1] * (len(shape) - 1))), shape).ravel()
    miles = haversine_miles(ulat, ulon, lat, lon).reshape(shape)
    return np.where(listing_ids >= 0, miles, np.nan)


def retrieved_distance(observed: ObservedMarketplace, sessions: pd.DataFrame, ranked: np.ndarray,
                       percentile: float = 98.0) -> float:
    """A percentile of the buyer-to-shop miles over every listing retrieved for every session.

    The paper reports the 98th percentile user-to-candidate distance [reported]; padding is ignored.
    """
    miles = user_listing_miles(observed, sessions["user_id"].to_numpy(), np.asarray(ranked))
    return float(np.nanpercentile(miles, percentile))
