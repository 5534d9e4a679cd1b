"""Serving a two-tower model: listing vectors computed once offline, each query encoded on demand.

The product tower can be as heavy as we like because it runs once per listing, offline; the query
tower runs on every request. :class:`VectorRetriever` holds the catalogue's vectors and searches them
exactly (the reference any ANN index is compared with).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from retrieval_lib.knn import exact_top_k
from retrieval_lib.retrieval import per_unique_query


class VectorRetriever:
    """Serve a two-tower model: listing vectors encoded once, queries encoded on demand, exact search.

    Subclasses set ``listing_ids`` and ``listing_vectors`` and implement :meth:`encode_queries`.
    """

    listing_ids: np.ndarray
    listing_vectors: torch.Tensor

    def encode_queries(self, queries: list[str]) -> torch.Tensor:
        """Unit-norm vectors of query texts."""
        raise NotImplementedError

    def search(self, queries: list[str], k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` listing ids and scores per query."""
        return exact_top_k(self.encode_queries(queries), self.listing_vectors, k, item_ids=self.listing_ids)

    def retrieve(self, sessions: pd.DataFrame, k: int) -> np.ndarray:
        """Retriever interface: top-``k`` listing ids for each session's query."""
        return per_unique_query(sessions, lambda queries: self.search(queries, k)[0])


def logged_recall(retriever: VectorRetriever, pairs: pd.DataFrame, k: int = 100) -> float:
    """Share of engaged (query, listing) pairs whose listing the retriever ranks in the top ``k`` for the query.

    Computed from observable logs only, so it can steer training (early stopping) without touching the
    latent evaluation labels.
    """
    if len(pairs) == 0:
        return float("nan")
    ids, _ = retriever.search(list(pairs["query"]), k)
    return float((ids == pairs["listing_id"].to_numpy()[:, None]).any(axis=1).mean())
