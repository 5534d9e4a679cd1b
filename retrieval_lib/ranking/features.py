"""Observable features of (request, listing) pairs: what the ranking stage sees of each candidate.

Retrieval returns candidates; a ranking stage orders them for the page. Etsy's search ranks with a
learned model over many signals *[paper]*; ours uses a handful that a marketplace logs or computes at
request time, and nothing of the world's latent truth:

* ``bm25``: the query's BM25 score for the listing's text (0 when they share no word);
* ``cosine``: the served unified model's score ``q . p`` for the request (query, buyer, location);
* ``rating``, ``log_reviews``, ``log_price``: the listing's page;
* ``age_days``: days since the listing was created, at the request;
* ``log_miles``, ``same_country``: the buyer's distance to the listing's shop;
* ``log_shop_sales``: the shop's sales count;
* ``log_archive_clicks``, ``log_archive_purchases``: the listing's clicks and purchases summed over the
  archive, the logs from before the training window: a popularity from before every window a ranker
  trains or is scored on, so no request's own outcome leaks into it (raw counts, so they carry the old
  pages' exposure and position bias).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from retrieval_lib.baselines.bm25 import BM25Retriever
from retrieval_lib.features.location import user_listing_miles
from retrieval_lib.marketplace import ObservedMarketplace
from retrieval_lib.text.words import tokenize_many

#: The ranking features, in column order.
FEATURES: tuple[str, ...] = ("bm25", "cosine", "rating", "log_reviews", "log_price", "age_days", "log_miles",
                             "same_country", "log_shop_sales", "log_archive_clicks", "log_archive_purchases")


class RankingFeatures:
    """Feature rows for candidate listings of logged requests.

    Parameters
    ----------
    observed : ObservedMarketplace
        The logs: listings, shops, users and the archive.
    bm25 : BM25Retriever
        A fitted lexical index over ``observed.listings`` (the lexical candidate source).
    retriever
        The served embedding model: anything with ``encode_sessions(sessions)`` (query vectors),
        ``listing_vectors`` and ``listing_ids``, e.g. a
        :class:`~retrieval_lib.models.unified.UnifiedRetriever`.
    """

    def __init__(self, observed: ObservedMarketplace, bm25: BM25Retriever, retriever) -> None:
        if not len(bm25.listing_ids):
            raise ValueError("the BM25 index is not fitted")
        self.observed, self.bm25, self.retriever = observed, bm25, retriever
        listings = observed.listings
        self.listing_ids = listings["listing_id"].to_numpy(dtype=np.int64)
        self._row = pd.Index(self.listing_ids)
        # where each catalogue row sits in the BM25 index and among the retriever's vectors
        self._bm25_at = pd.Index(bm25.listing_ids).get_indexer(self.listing_ids)
        self._vector_at = pd.Index(np.asarray(retriever.listing_ids, dtype=np.int64)).get_indexer(self.listing_ids)
        if self._bm25_at.min() < 0 or self._vector_at.min() < 0:
            raise ValueError("the BM25 index and the retriever must cover every listing")
        shops = observed.shops.set_index("shop_id").loc[listings["shop_id"].to_numpy()]
        archive = observed.archive
        clicks = archive.groupby("listing_id")["click"].sum().reindex(self.listing_ids, fill_value=0)
        purchases = archive.groupby("listing_id")["purchase"].sum().reindex(self.listing_ids, fill_value=0)
        self._static = {
            "rating": listings["rating"].to_numpy(float),
            "log_reviews": np.log1p(listings["review_count"].to_numpy(float)),
            "log_price": np.log(listings["price"].to_numpy(float).clip(0.01)),
            "log_shop_sales": np.log1p(shops["sales_count"].to_numpy(float)),
            "log_archive_clicks": np.log1p(clicks.to_numpy(float)),
            "log_archive_purchases": np.log1p(purchases.to_numpy(float)),
        }
        self._created = listings["created_day"].to_numpy(float)
        self._shop_country = shops["country"].to_numpy()
        self._user_country = observed.users.set_index("user_id")["country"]

    def transform(self, sessions: pd.DataFrame, candidates: np.ndarray) -> np.ndarray:
        """Features of every candidate: ``(n_sessions, k, len(FEATURES))`` float32.

        Every feature is NaN at padding; ``rating`` is also NaN for a listing with no rating yet (LightGBM
        treats NaN as missing and learns where to send it).

        ``sessions`` holds ``session_id, user_id, query, day`` (logged requests); ``candidates`` is
        ``(n_sessions, k)`` listing ids (negative, ``PAD``, for none).
        """
        candidates = np.asarray(candidates, dtype=np.int64)
        if candidates.ndim != 2 or candidates.shape[0] != len(sessions):
            raise ValueError(f"candidates must be (n_sessions, k) with one row per session ({len(sessions)}), "
                             f"got shape {candidates.shape}")
        pad = candidates < 0
        row = self._rows(candidates)
        out = np.full((*candidates.shape, len(FEATURES)), np.nan, dtype=np.float32)
        columns = {
            "bm25": self.bm25_scores(sessions["query"].astype(str).tolist(), candidates),
            "cosine": self.cosine(sessions, candidates),
            "age_days": sessions["day"].to_numpy(float)[:, None] - self._created[row],
            "log_miles": np.log1p(user_listing_miles(self.observed, sessions["user_id"].to_numpy(),
                                                     np.where(pad, 0, candidates))),
            "same_country": (self._user_country.loc[sessions["user_id"].to_numpy()].to_numpy()[:, None]
                             == self._shop_country[row]).astype(float),
        } | {name: values[row] for name, values in self._static.items()}
        for j, name in enumerate(FEATURES):
            out[..., j] = np.where(pad, np.nan, columns[name])
        return out

    def _rows(self, candidates: np.ndarray) -> np.ndarray:
        """Catalogue rows of ``candidates`` (row 0 at padding); unknown ids are an error."""
        row = self._row.get_indexer(np.where(candidates >= 0, candidates, self.listing_ids[0]).ravel())
        if (row < 0).any():
            raise ValueError("candidates hold listing ids that are not in the catalogue")
        return row.reshape(candidates.shape)

    def bm25_scores(self, queries: list[str], candidates: np.ndarray) -> np.ndarray:
        """BM25 score of each query for each of its candidates (0 where they share no word)."""
        candidates = np.asarray(candidates, dtype=np.int64)
        at = self._bm25_at[self._rows(candidates)]
        scores = np.zeros(candidates.shape, dtype=np.float32)
        unique, inverse = np.unique(np.asarray(queries, dtype=object).astype(str), return_inverse=True)
        by_query = np.argsort(inverse, kind="stable")  # the requests of each distinct query, together
        bounds = np.searchsorted(inverse[by_query], np.arange(unique.size + 1))
        vocabulary = self.bm25.vocabulary
        for u, tokens in enumerate(tokenize_many(list(unique))):
            known = [t for t in tokens if t in vocabulary]
            if not known:
                continue
            rows = by_query[bounds[u]:bounds[u + 1]]
            # one score per indexed listing; BM25Retriever keeps its bm25s model private and has no such
            # method yet: it belongs there at that module's next change (its source is in the seed
            # studies' code digest, so an edit means re-running them)
            every = self.bm25._model.get_scores(known)
            scores[rows] = every[at[rows]]
        return np.where(candidates >= 0, scores, 0.0).astype(np.float32)

    def cosine(self, sessions: pd.DataFrame, candidates: np.ndarray, chunk: int = 2048) -> np.ndarray:
        """The served model's ``q . p`` for each request and candidate."""
        candidates = np.asarray(candidates, dtype=np.int64)
        at = self._vector_at[self._rows(candidates)]
        out = np.zeros(candidates.shape, dtype=np.float32)
        vectors = torch.as_tensor(self.retriever.listing_vectors, dtype=torch.float32)
        for start in range(0, len(sessions), chunk):
            part = slice(start, start + chunk)
            q = torch.as_tensor(self.retriever.encode_sessions(sessions.iloc[part]), dtype=torch.float32)
            p = vectors[torch.as_tensor(at[part])]
            out[part] = torch.einsum("nkd,nd->nk", p, q).numpy()
        return np.where(candidates >= 0, out, 0.0)
