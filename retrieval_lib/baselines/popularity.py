"""The popularity baseline: the same best-sellers for every request.

It ignores the query and the user, so it shows how much of recall comes from mere popularity.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from retrieval_lib.serving.base import PAD

#: How much each logged interaction counts towards popularity (integers, so that ties are exact).
INTERACTION_WEIGHTS = {"purchase": 10, "cart": 3, "click": 1}


class PopularityRetriever:
    """Rank listings by weighted engagement in the training logs."""

    def __init__(self) -> None:
        self.ranking: np.ndarray = np.empty(0, dtype=np.int64)

    def fit(self, impressions: pd.DataFrame) -> PopularityRetriever:
        """Count weighted engagement per listing in ``impressions`` (pass the training window only)."""
        score = sum(w * impressions[col].to_numpy(dtype=np.int64) for col, w in INTERACTION_WEIGHTS.items())
        totals = pd.Series(score).groupby(impressions["listing_id"].to_numpy()).sum()
        totals = totals[totals > 0]
        order = np.lexsort((totals.index.to_numpy(), -totals.to_numpy()))  # ties by id: deterministic
        self.ranking = totals.index.to_numpy(dtype=np.int64)[order]
        return self

    def retrieve(self, sessions: pd.DataFrame, k: int) -> np.ndarray:
        """The same top-``k`` listings for every session (padded if fewer were ever engaged with)."""
        top = np.full(k, PAD, dtype=np.int64)
        top[: min(k, self.ranking.size)] = self.ranking[:k]
        return np.tile(top, (len(sessions), 1))
