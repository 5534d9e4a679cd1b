"""The :class:`Retriever`: the unified model served through an ANN index, one request at a time.

Offline, every listing goes through the product tower and into an HNSW index. At request time the
query tower encodes the text together with the user's location and history as of the end of the
logs, and the index returns the nearest listings. An anonymous request (no user) is the cold-start
case: no history, no location, text only.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from retrieval_lib.features.unified import UnifiedFeatures
from retrieval_lib.models.unified import UnifiedModel, UnifiedRetriever
from retrieval_lib.serving.ann import HNSWIndex
from retrieval_lib.serving.base import PAD


class Retriever:
    """``search(text, user_id)`` and ``query(vector)`` over the whole catalogue."""

    def __init__(self, model: UnifiedModel, features: UnifiedFeatures, index: HNSWIndex | None = None) -> None:
        """Encode the catalogue and index it (``index``: an empty one to configure, or one already built)."""
        exact = UnifiedRetriever(model, features)
        self.model = exact.model
        self.features = features
        self.listing_vectors = exact.listing_vectors
        self.index = index if index is not None else HNSWIndex()
        if self.index.dim == 0:  # not built yet: index the catalogue
            self.index.build(self.listing_vectors, exact.listing_ids)
        if self.index.dim != model.config.out_dim:
            raise ValueError(f"index dimension {self.index.dim} differs from the model's {model.config.out_dim}")
        self.listings = features.observed.listings.set_index("listing_id")
        self.known_users = set(features.observed.users["user_id"].tolist())

    def encode(self, text: str, user_id: int | None = None, history: bool = True) -> torch.Tensor:
        """The query tower's vector ``(1, out_dim)`` for one request.

        Raises ``ValueError`` for an unknown user, or for an empty query without a user (nothing to
        search for). An empty query *with* a user searches by the user's history and location alone.
        ``history=False`` leaves the user's history out (location kept): the unpersonalised request.
        """
        if not isinstance(text, str):
            raise TypeError(f"query text must be a string, got {type(text).__name__}")
        text = text.strip()
        if user_id is not None and int(user_id) not in self.known_users:
            raise ValueError(f"unknown user {user_id!r}; pass user_id=None for an anonymous request")
        if not text and user_id is None:
            raise ValueError("empty query and no user: there is nothing to search for")
        users = np.array([-1 if user_id is None else int(user_id)])
        rows = self.features.current_rows(users) if history else np.full(1, -1)
        with torch.no_grad():
            return self.model.encode_queries(*self.features.queries([text], users, rows, self.model.config))

    def query(self, vector: np.ndarray | torch.Tensor, top_n: int = 10) -> pd.DataFrame:
        """The ``top_n`` listings nearest to a raw query vector: ``listing_id, score, title, taxonomy``."""
        v = torch.as_tensor(np.asarray(vector, dtype=np.float32)).reshape(1, -1)
        if v.shape[1] != self.index.dim:
            raise ValueError(f"vector has dimension {v.shape[1]}, the index holds {self.index.dim}")
        if top_n < 1:
            raise ValueError(f"top_n must be positive, got {top_n}")
        ids, scores = self.index.search(v, top_n)
        keep = ids[0] != PAD
        found = ids[0][keep]
        return pd.DataFrame({"listing_id": found, "score": scores[0][keep],
                             "title": self.listings.loc[found, "title"].to_numpy(),
                             "taxonomy": self.listings.loc[found, "taxonomy"].to_numpy()})

    def search(self, text: str, user_id: int | None = None, top_n: int = 10, history: bool = True
               ) -> pd.DataFrame:
        """Encode the request (text plus user, if any) and return the ``top_n`` nearest listings.

        The result is a results page (``listing_id, score, title, taxonomy``), what the service returns;
        batch searches elsewhere return a :class:`~retrieval_lib.serving.base.SearchResult`.
        """
        return self.query(self.encode(text, user_id, history), top_n)


def history_effect(retriever: Retriever, text: str, user_ids: np.ndarray, k: int = 100) -> pd.DataFrame:
    """What each user's history changes for one query: the same user, the same location, history on or off.

    Returns one row per user with ``history_items``, ``cosine`` (between the query vectors with and
    without history) and ``overlap`` (share of the top ``k`` listings that both requests return).
    Holding the user (and so the location) fixed isolates the history's effect.
    """
    user_ids = np.asarray(user_ids, dtype=np.int64)
    unknown = sorted(set(user_ids.tolist()) - retriever.known_users)
    if unknown:
        raise ValueError(f"unknown user {unknown[0]!r}")
    features = retriever.features
    items = features.history.lengths()[features.current_rows(user_ids)] if len(user_ids) else []
    rows = []
    for user, n_items in zip(user_ids, items, strict=True):
        with_history = retriever.encode(text, int(user))
        without = retriever.encode(text, int(user), history=False)
        a = set(retriever.query(with_history, k)["listing_id"])
        b = set(retriever.query(without, k)["listing_id"])
        rows.append({"user_id": int(user), "history_items": int(n_items),
                     "cosine": float((with_history * without).sum()), "overlap": len(a & b) / k})
    return pd.DataFrame(rows, columns=["user_id", "history_items", "cosine", "overlap"])
