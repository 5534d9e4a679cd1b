"""Containers that keep what a marketplace logs apart from the generator's hidden truth."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from retrieval_lib.marketplace.config import ChoiceWeights, MarketplaceConfig

SPLITS: tuple[str, ...] = ("train", "valid", "test")


@dataclass(frozen=True)
class ObservedMarketplace:
    """Everything a real marketplace would log, and nothing else. Models may use only this.

    Attributes
    ----------
    listings : pd.DataFrame
        ``listing_id, shop_id, title, tags, taxonomy, price, created_day, rating, review_count``.
    shops : pd.DataFrame
        ``shop_id, name, lat, lon, country, sales_count``.
    users : pd.DataFrame
        ``user_id, lat, lon, country, signup_day``.
    sessions : pd.DataFrame
        One search request each: ``session_id, user_id, query, day, split``, sorted by ``day``.
    impressions : pd.DataFrame
        What was shown and what happened: ``session_id, listing_id, position, click, cart, purchase``.
    train_end, valid_end : float
        Day boundaries of the time split (train < ``train_end`` <= valid < ``valid_end`` <= test).
    archive : pd.DataFrame
        Engaged (clicked) impressions of an older window before day 0: ``user_id, query, day,
        listing_id, click, cart, purchase``. A long history, as production keeps: doc2query
        pre-training reads its purchases and the engagement graph its clicks; empty if not generated.
    """

    listings: pd.DataFrame
    shops: pd.DataFrame
    users: pd.DataFrame
    sessions: pd.DataFrame
    impressions: pd.DataFrame
    train_end: float
    valid_end: float
    archive: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(
        {"user_id": pd.Series(dtype="int64"), "query": pd.Series(dtype=object), "day": pd.Series(dtype=float),
         "listing_id": pd.Series(dtype="int64"), "click": pd.Series(dtype=bool), "cart": pd.Series(dtype=bool),
         "purchase": pd.Series(dtype=bool)}))

    def split(self, name: str) -> pd.DataFrame:
        """Sessions of one time window: ``'train'``, ``'valid'`` or ``'test'``."""
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; choose one of {SPLITS}")
        return self.sessions[self.sessions["split"] == name]

    def logs(self, split: str | None = None) -> pd.DataFrame:
        """Impressions joined with their session's user, query, day and split (optionally one window)."""
        cols = ["session_id", "user_id", "query", "day", "split"]
        out = self.impressions.merge(self.sessions[cols], on="session_id", how="left", validate="many_to_one")
        return out if split is None else out[out["split"] == split].reset_index(drop=True)


@dataclass(frozen=True)
class LatentTruth:
    """The generator's hidden state, for *evaluation only* (never for features or training).

    ``listings``, ``users`` and ``intents`` are dicts of numpy arrays indexed by listing, user and
    session id; ``labels[s]`` is the listing the buyer of session ``s`` would buy from the whole
    catalogue (``-1`` for training sessions, whose labels are never needed, and for held-out sessions beyond
    the config's ``max_labelled_sessions``).
    """

    listings: dict[str, np.ndarray]
    users: dict[str, np.ndarray]
    intents: dict[str, np.ndarray]
    labels: np.ndarray
    weights: ChoiceWeights
    n_aesthetics: int


@dataclass(frozen=True)
class Marketplace:
    """A generated world: the config, what is observable, and the latent truth behind it."""

    config: MarketplaceConfig
    observed: ObservedMarketplace
    latent: LatentTruth

    def summary(self) -> dict[str, int]:
        """Headline sizes: listings, users, distinct queries, sessions, and logged interactions."""
        imp = self.observed.impressions
        return {
            "listings": len(self.observed.listings),
            "shops": len(self.observed.shops),
            "users": len(self.observed.users),
            "queries": int(self.observed.sessions["query"].nunique()),
            "sessions": len(self.observed.sessions),
            "impressions": len(imp),
            "clicks": int(imp["click"].sum()),
            "carts": int(imp["cart"].sum()),
            "purchases": int(imp["purchase"].sum()),
        }
