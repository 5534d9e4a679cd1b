"""Numeric listing features, quantile-transformed (the paper's numeric features [reported]).

Heavy-tailed prices and review counts become uniform on [0, 1]; the transform is fitted on the
listings that existed during the training window.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.preprocessing import QuantileTransformer

from retrieval_lib.marketplace import ObservedMarketplace

#: Numeric listing columns (``age_days`` is derived from ``created_day``; ``shop_sales`` from the shop).
NUMERIC_COLUMNS: tuple[str, ...] = ("price", "rating", "review_count", "age_days", "shop_sales")


#: Width of :meth:`NumericFeatures.transform`: the numeric columns plus a ``rated`` indicator.
NUMERIC_DIM = len(NUMERIC_COLUMNS) + 1


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
