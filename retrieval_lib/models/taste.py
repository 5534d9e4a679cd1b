"""A taste block learned from what buyers were shown and did not click, added to the unified model's score.

Chapter 6 found that the unified model's history encoder changes little: in-batch negatives are
mostly listings of other product types, so nothing in its training asks it to tell two necklaces of
different looks apart. The search logs do ask that: every page shows many listings of the wanted type,
and the buyer clicks the ones that suit them. This module learns from those pages a weight per word,
how much a buyer whose earlier engaged listings carry the word prefers a listing that carries it too:
a logistic click model ``P(click) = sigmoid(b_position + sum_v w_v * share_v(history) * has_v(listing))``.

At retrieval the taste score ``sum_v w_v * share_v * has_v`` is an inner product between a query-side
vector ``w * share`` and the listing's word vector, so it joins the two towers as one more block:
``score = cosine(query, listing) + weight * taste``, still one inner product per listing, exact or ANN.
The block ``weight`` is chosen on the validation window's logged engagements.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from sklearn.linear_model import LogisticRegression

from retrieval_lib.evaluation.logged import logged_recall
from retrieval_lib.features.taste import ListingWords, engagements, listing_words, taste_profiles
from retrieval_lib.marketplace import ObservedMarketplace
from retrieval_lib.models.unified import UnifiedRetriever
from retrieval_lib.serving.exact import exact_top_k

#: Block weights tried when choosing on the validation window (0 switches the block off).
TASTE_WEIGHTS: tuple[float, ...] = (0.0, 0.05, 0.1, 0.15, 0.2, 0.3)


@dataclass(frozen=True)
class TasteConfig:
    """The click model's settings: L2 strength ``C``, solver iterations, and the vocabulary's ``min_df``."""

    C: float = 1.0
    max_iter: int = 300
    min_df: int = 5

    def __post_init__(self) -> None:
        if not self.C > 0:
            raise ValueError(f"C must be positive, got {self.C}")
        if self.max_iter < 1:
            raise ValueError(f"max_iter must be at least 1, got {self.max_iter}")
        if self.min_df < 1:
            raise ValueError(f"min_df must be at least 1, got {self.min_df}")


@dataclass(frozen=True, eq=False)
class TasteModel:
    """Per-word taste weights learned from clicks, with what is needed to profile a request's buyer."""

    words: ListingWords
    weights: np.ndarray
    position_bias: np.ndarray
    events: pd.DataFrame
    session_days: pd.Series

    @classmethod
    def fit(cls, observed: ObservedMarketplace, config: TasteConfig | None = None, split: str = "train"
            ) -> TasteModel:
        """Fit the click model on the ``split`` window's pages that got at least one click.

        Pages without a click say nothing about which listing suits the buyer, so they are left out.
        Features are ``share_v(history) * has_v(listing)`` for every vocabulary word plus one indicator
        per page position (position bias must not be credited to taste).
        """
        config = config or TasteConfig()
        words = listing_words(observed.listings, config.min_df)
        events = engagements(observed)
        logs = observed.logs(split)
        logs = logs[logs.groupby("session_id")["click"].transform("any")].reset_index(drop=True)
        if logs.empty or logs["click"].all():
            raise ValueError(f"the {split!r} window has no page with both clicked and unclicked listings")
        pages = logs.drop_duplicates("session_id")
        profiles = taste_profiles(events, words, pages["user_id"].to_numpy(), pages["day"].to_numpy(),
                                  pages["session_id"].to_numpy())
        page_row = pd.Series(np.arange(len(pages)), index=pages["session_id"].to_numpy())
        row = page_row.loc[logs["session_id"].to_numpy()].to_numpy()
        shown = words.matrix[logs["listing_id"].to_numpy()].tocsr()
        owner = np.repeat(np.arange(shown.shape[0]), np.diff(shown.indptr))
        shown.data = shown.data * profiles[row[owner], shown.indices]
        positions = logs["position"].to_numpy()
        n_positions = int(positions.max()) + 1
        position = sp.csr_matrix((np.ones(len(logs), np.float32), (np.arange(len(logs)), positions)),
                                 shape=(len(logs), n_positions))
        x = sp.hstack([shown, position]).tocsr()
        model = LogisticRegression(C=config.C, max_iter=config.max_iter).fit(x, logs["click"].to_numpy())
        coef = model.coef_[0]
        n_words = len(words.vocabulary)
        days = observed.sessions.set_index("session_id")["day"]
        return cls(words, coef[:n_words].astype(np.float32), coef[n_words:] + model.intercept_[0], events, days)

    def top_words(self, n: int = 10) -> pd.Series:
        """The ``n`` words with the largest taste weight (word -> weight)."""
        best = np.argsort(-self.weights, kind="stable")[:n]
        return pd.Series(self.weights[best], index=self.words.vocabulary[best], name="taste weight")

    def profiles(self, sessions: pd.DataFrame) -> np.ndarray:
        """Each logged request's taste vector ``w * share`` (zeros for a buyer without earlier engagement).

        ``sessions`` are logged requests (``session_id``, ``user_id``); only engagements strictly
        before each one count.
        """
        sids = sessions["session_id"].to_numpy()
        known = np.isin(sids, self.session_days.index.to_numpy())
        if not known.all():
            raise KeyError(f"unknown session {sids[~known][0]}; use current_profiles() for a new request")
        days = self.session_days.loc[sids].to_numpy()
        shares = taste_profiles(self.events, self.words, sessions["user_id"].to_numpy(), days, sids)
        return shares * self.weights

    def current_profiles(self, user_ids: np.ndarray) -> np.ndarray:
        """Taste vectors of new requests by ``user_ids`` (``-1`` for anonymous), reading every logged engagement."""
        user_ids = np.asarray(user_ids, dtype=np.int64)
        n = len(user_ids)
        shares = taste_profiles(self.events, self.words, user_ids, np.full(n, np.inf), np.zeros(n, np.int64))
        return shares * self.weights


class TasteRetriever:
    """Exact search by ``cosine(query, listing) + weight * taste``: the unified model plus the taste block.

    ``history=False`` serves the unpersonalised request (no history in the query tower, no taste), the
    same buyer and location otherwise: comparing the two isolates what the history changes.
    """

    def __init__(self, base: UnifiedRetriever, taste: TasteModel, weight: float, history: bool = True) -> None:
        if not np.isfinite(weight) or weight < 0:
            raise ValueError(f"weight must be a finite non-negative number, got {weight}")
        if taste.words.matrix.shape[0] != len(base.listing_ids):
            raise ValueError(f"the taste model knows {taste.words.matrix.shape[0]} listings, "
                             f"the retriever {len(base.listing_ids)}")
        self.base, self.taste, self.weight, self.history = base, taste, float(weight), history
        self._items = torch.cat([base.listing_vectors, torch.from_numpy(taste.words.dense())], dim=1)

    def encode_sessions(self, sessions: pd.DataFrame) -> torch.Tensor:
        """The augmented query vectors ``[query tower, weight * taste profile]`` of logged requests."""
        query = self.base.encode_sessions(sessions, history=self.history)
        if self.history and self.weight > 0:
            profile = torch.from_numpy(self.taste.profiles(sessions).astype(np.float32)) * self.weight
        else:
            profile = torch.zeros((len(sessions), self._items.shape[1] - query.shape[1]))
        return torch.cat([query, profile], dim=1)

    @property
    def search_space(self) -> tuple[torch.Tensor, np.ndarray]:
        """What :meth:`retrieve` searches: the augmented listing vectors and their ids."""
        return self._items, self.base.listing_ids

    def retrieve(self, sessions: pd.DataFrame, k: int) -> np.ndarray:
        """Retriever interface: top-``k`` listing ids per session."""
        vectors, ids = self.search_space
        return exact_top_k(self.encode_sessions(sessions), vectors, k, item_ids=ids)[0]


def choose_taste_weight(base: UnifiedRetriever, taste: TasteModel, pairs: pd.DataFrame,
                        weights: tuple[float, ...] = TASTE_WEIGHTS, k: int = 100) -> tuple[float, pd.Series]:
    """The block weight with the best logged recall@``k`` on ``pairs`` (validation-window engagements).

    Returns the chosen weight (the smallest among ties) and the logged recall of every weight tried.
    """
    if not weights:
        raise ValueError("choose_taste_weight needs at least one weight to try")
    scores = pd.Series({w: logged_recall(TasteRetriever(base, taste, w), pairs, k) for w in weights},
                       name=f"logged recall@{k}")
    best = scores[scores == scores.max()].index.min()
    return float(best), scores


