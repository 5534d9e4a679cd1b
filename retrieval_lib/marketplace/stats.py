"""Descriptive statistics of a generated marketplace, computed from the *observable* logs.

Chapter 1 uses them to show that the world has the properties later chapters rely on: a head and a
long tail of queries, a graded funnel with position bias, quality and distance effects, and new
listings over time.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from retrieval_lib.marketplace import geo
from retrieval_lib.marketplace.data import ObservedMarketplace

FUNNEL: tuple[str, ...] = ("impression", "click", "cart", "purchase")


def funnel(observed: ObservedMarketplace) -> pd.Series:
    """Counts of impressions, clicks, add-to-carts and purchases in the logs."""
    imp = observed.impressions
    return pd.Series([len(imp), int(imp["click"].sum()), int(imp["cart"].sum()), int(imp["purchase"].sum())],
                     index=list(FUNNEL), name="count")


def click_rate_by_position(observed: ObservedMarketplace) -> pd.Series:
    """Share of impressions clicked at each result position (position bias shows as a decay)."""
    return observed.impressions.groupby("position")["click"].mean().rename("click_rate")


def query_frequencies(observed: ObservedMarketplace, split: str = "train") -> pd.DataFrame:
    """Every query of a window with its count and frequency rank (1 = most frequent)."""
    counts = observed.split(split)["query"].value_counts()
    counts = counts.iloc[np.lexsort((counts.index.to_numpy(dtype=str), -counts.to_numpy()))]
    return pd.DataFrame({"query": counts.index, "count": counts.to_numpy(),
                         "rank": np.arange(1, counts.size + 1)})


def purchase_rate_by_rating(observed: ObservedMarketplace, bins: tuple[float, ...] = (0, 4.0, 4.3, 4.6, 5.01)
                            ) -> pd.Series:
    """Purchases per impression by the listing's observable star rating (unrated listings apart)."""
    imp = observed.impressions.merge(observed.listings[["listing_id", "rating"]], on="listing_id")
    bucket = pd.cut(imp["rating"], bins=list(bins), right=False).astype(str).where(imp["rating"].notna(), "unrated")
    return imp.groupby(bucket)["purchase"].mean().rename("purchase_rate")


def buyer_shop_distance(observed: ObservedMarketplace) -> pd.DataFrame:
    """For every impression: miles between buyer and shop, whether domestic, and whether it was bought."""
    imp = observed.logs()[["user_id", "listing_id", "purchase"]]
    imp = imp.merge(observed.listings[["listing_id", "shop_id"]], on="listing_id")
    users = observed.users.set_index("user_id").loc[imp["user_id"]]
    shops = observed.shops.set_index("shop_id").loc[imp["shop_id"]]
    return pd.DataFrame({
        "miles": geo.haversine_miles(users["lat"].to_numpy(), users["lon"].to_numpy(),
                                     shops["lat"].to_numpy(), shops["lon"].to_numpy()),
        "domestic": users["country"].to_numpy() == shops["country"].to_numpy(),
        "purchase": imp["purchase"].to_numpy(),
    })


def engaged_listings(observed: ObservedMarketplace, split: str = "train") -> np.ndarray:
    """Ids of listings with at least one click in a window's logs (the ones logs can teach about)."""
    logs = observed.logs(split)
    return np.unique(logs.loc[logs["click"], "listing_id"].to_numpy())
