"""Features of the unified model: numeric listing features, locations, and each request's user history.

Everything here is built from what the marketplace logs. Numeric features go through a quantile
transform (heavy-tailed prices and review counts become uniform on [0, 1]) fitted on the listings
that existed during the training window. A user's history for a request contains only what the user
did in *earlier* sessions, so no feature ever peeks at the request's own outcome or at the future.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.preprocessing import QuantileTransformer

from retrieval_lib.geo import COUNTRY_NAMES, haversine_miles
from retrieval_lib.marketplace import ObservedMarketplace

#: Numeric listing columns (``age_days`` is derived from ``created_day``; ``shop_sales`` from the shop).
NUMERIC_COLUMNS: tuple[str, ...] = ("price", "rating", "review_count", "age_days", "shop_sales")
#: Width of :meth:`NumericFeatures.transform`: the numeric columns plus a ``rated`` indicator.
NUMERIC_DIM = len(NUMERIC_COLUMNS) + 1
#: History item types, in the order of the type embedding.
HISTORY_TYPES: tuple[str, ...] = ("query", "click", "purchase")
#: Width of :func:`location_features`: a point on the unit sphere plus a one-hot country.
LOCATION_DIM = 3 + len(COUNTRY_NAMES)


def _numeric_table(observed: ObservedMarketplace, as_of: float) -> pd.DataFrame:
    listings = observed.listings
    sales = observed.shops.set_index("shop_id")["sales_count"]
    return pd.DataFrame({
        "price": listings["price"].to_numpy(dtype=float),
        "rating": listings["rating"].to_numpy(dtype=float),
        "review_count": listings["review_count"].to_numpy(dtype=float),
        "age_days": np.clip(as_of - listings["created_day"].to_numpy(dtype=float), 0.0, None),
        "shop_sales": listings["shop_id"].map(sales).to_numpy(dtype=float),
    })


class NumericFeatures:
    """Quantile-transformed numeric listing features (scikit-learn ``QuantileTransformer``).

    ``fit`` uses only listings created before the training window ends; ``transform`` maps every
    listing (cold ones included) into [0, 1] per column. Ages are measured at ``train_end``.
    """

    def __init__(self, n_quantiles: int = 200) -> None:
        self.n_quantiles = n_quantiles
        self.transformer: QuantileTransformer | None = None
        self.as_of = 0.0

    def fit(self, observed: ObservedMarketplace) -> NumericFeatures:
        """Learn the quantiles of the listings known at ``train_end``."""
        self.as_of = observed.train_end
        table = _numeric_table(observed, self.as_of)
        known = observed.listings["created_day"].to_numpy() < observed.train_end
        if not known.any():
            raise ValueError("no listing was created before the training window ended")
        n = int(min(self.n_quantiles, known.sum()))
        self.transformer = QuantileTransformer(n_quantiles=n, output_distribution="uniform", random_state=0)
        self.transformer.fit(table[known].to_numpy())
        return self

    def transform(self, observed: ObservedMarketplace) -> np.ndarray:
        """``(n_listings, NUMERIC_DIM)`` float32 features in ``listing_id`` order.

        A listing without reviews has no rating: its rating feature is 0 and a last ``rated`` column
        says whether there was one.
        """
        if self.transformer is None:
            raise RuntimeError("call fit() before transform()")
        table = _numeric_table(observed, self.as_of).to_numpy()
        rated = ~np.isnan(table[:, NUMERIC_COLUMNS.index("rating")])
        out = np.nan_to_num(self.transformer.transform(table), nan=0.0)
        return np.concatenate([out, rated[:, None]], axis=1).astype(np.float32)


def location_features(lat: np.ndarray, lon: np.ndarray, country: np.ndarray) -> np.ndarray:
    """``(n, LOCATION_DIM)``: the point on the unit sphere (so nearby means close) and a one-hot country.

    ``country`` holds names from :data:`~retrieval_lib.geo.COUNTRY_NAMES`; missing locations (NaN) and
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


@dataclass(frozen=True)
class UserHistory:
    """The most recent history items before each session.

    ``texts`` are the distinct item texts (queries typed; titles of clicked listings; tags of purchased
    listings). For session row ``i``: ``item[i, j]`` indexes ``texts`` (``-1`` pads), ``kind[i, j]``
    indexes :data:`HISTORY_TYPES`, ``listing[i, j]`` is the engaged listing (``-1`` for queries and
    padding). Items are oldest first; the last column is the most recent.
    """

    session_ids: np.ndarray
    texts: list[str]
    item: np.ndarray
    kind: np.ndarray
    listing: np.ndarray

    def rows(self, session_ids: np.ndarray) -> np.ndarray:
        """Row of each session id (a ``KeyError`` names the first unknown one)."""
        index = pd.Series(np.arange(len(self.session_ids)), index=self.session_ids)
        missing = ~np.isin(session_ids, self.session_ids)
        if missing.any():
            raise KeyError(f"no history for session {np.asarray(session_ids)[missing][0]}")
        return index.loc[np.asarray(session_ids)].to_numpy()

    def lengths(self) -> np.ndarray:
        """Number of real (non-padding) items per session."""
        return (self.item >= 0).sum(1)


def user_histories(observed: ObservedMarketplace, max_items: int = 16, current: bool = False) -> UserHistory:
    """Build every session's history from the user's earlier sessions, oldest item first.

    A session contributes, once it is over, its query and the listings clicked and purchased in it.
    With ``current``, one extra row per user (session id ``-1 - user_id``) holds the history as of the
    end of the logs, which is what serving a new request needs.
    """
    if max_items < 1:
        raise ValueError(f"max_items must be positive, got {max_items}")
    sessions = observed.sessions.sort_values(["day", "session_id"], kind="stable")
    imp = observed.impressions
    engaged = imp[imp["click"] | imp["purchase"]]
    clicks = engaged[engaged["click"]].groupby("session_id")["listing_id"].agg(list)
    buys = engaged[engaged["purchase"]].groupby("session_id")["listing_id"].agg(list)
    titles = observed.listings["title"].astype(str).to_numpy()
    tags = [" ".join(t) for t in observed.listings["tags"]]

    text_index: dict[str, int] = {}

    def text_id(text: str) -> int:
        return text_index.setdefault(text, len(text_index))

    recent: dict[int, deque] = {}
    out_ids, out_items = [], []

    def snapshot(user: int) -> list[tuple[int, int, int]]:
        return list(recent.get(user, ()))

    for sid, user, query in zip(sessions["session_id"].to_numpy(), sessions["user_id"].to_numpy(),
                                sessions["query"].astype(str).to_numpy(), strict=True):
        out_ids.append(sid)
        out_items.append(snapshot(user))
        items = recent.setdefault(user, deque(maxlen=max_items))
        items.append((text_id(query), 0, -1))
        for lid in clicks.get(sid, ()):
            items.append((text_id(titles[lid]), 1, lid))
        for lid in buys.get(sid, ()):
            items.append((text_id(tags[lid]), 2, lid))
    if current:
        for user in observed.users["user_id"].to_numpy():
            out_ids.append(-1 - int(user))
            out_items.append(snapshot(user))
    n = len(out_ids)
    item = np.full((n, max_items), -1, dtype=np.int64)
    kind = np.zeros((n, max_items), dtype=np.int64)
    listing = np.full((n, max_items), -1, dtype=np.int64)
    for i, items in enumerate(out_items):
        if items:
            arr = np.array(items, dtype=np.int64)
            item[i, -len(arr):], kind[i, -len(arr):], listing[i, -len(arr):] = arr[:, 0], arr[:, 1], arr[:, 2]
    texts = [""] * len(text_index)
    for text, i in text_index.items():
        texts[i] = text
    return UserHistory(np.array(out_ids, dtype=np.int64), texts, item, kind, listing)



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
