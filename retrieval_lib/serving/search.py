"""The :class:`Retriever`: the unified model served through an ANN index, one request at a time.

Offline, every listing goes through the product tower and into an HNSW index. At request time the
query tower encodes the text together with the user's location and history as of the end of the
logs, and the index returns the nearest listings. An anonymous request (no user) is the cold-start
case: no history, no location, text only.

With boosting weights ``w`` (chapter 9) the index holds the hydrated listing vectors ``[p; f(p)]`` and
every query vector gets ``w`` appended, so the index ranks by ``q.p + w.f(p)``. The two calls mirror
the service this book started from: :meth:`Retriever.search` (text and an optional user) and
:meth:`Retriever.query` (a query-tower vector), each with ``top_n``, an optional search effort
``level`` (:data:`EF_BY_LEVEL`) and ``rerank``, which re-scores ``RERANK_DEPTH x top_n`` ANN candidates
exactly with the full vectors.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pandas as pd
import torch

from retrieval_lib.features.unified import UnifiedFeatures
from retrieval_lib.models.unified import UnifiedModel, UnifiedRetriever
from retrieval_lib.serving.ann import HNSWIndex, check_queries
from retrieval_lib.serving.base import PAD
from retrieval_lib.serving.boosting import check_weights, hydrate_listings, hydrate_queries
from retrieval_lib.serving.exact import candidate_scores

#: Search effort: ``level`` L searches HNSW with ``ef = EF_BY_LEVEL[L]`` (at least ``top_n``); ``None``
#: uses the index's own ``ef``, the setting chosen on the validation window.
EF_BY_LEVEL: dict[int, int] = {1: 50, 2: 100, 3: 200, 4: 400, 5: 800}
#: ``rerank=True`` fetches this many times ``top_n`` candidates from the index and re-scores them exactly.
RERANK_DEPTH = 4
#: Listing columns a result row carries (besides ``listing_id`` and ``score``).
RESULT_COLUMNS = ("title", "taxonomy")


class UnknownUserError(ValueError):
    """A request names a user the marketplace has never seen."""


class Retriever:
    """``search(text, user_id)``, ``query(vector)`` and ``retrieve(sessions, k)`` over the whole catalogue.

    ``index``: an empty :class:`HNSWIndex` to configure, or one already built over the right vectors
    (``None``: a default one). ``quality`` and ``w``: the boost of chapter 9 (both or neither); the
    default index then uses the MIPS-to-L2 reduction (``space="l2"``), since hydrated vectors have
    unequal norms. Searches are serialised by a lock: hnswlib's ``ef`` is state of the index.
    """

    def __init__(self, model: UnifiedModel, features: UnifiedFeatures, index: HNSWIndex | None = None,
                 quality: np.ndarray | None = None, w: np.ndarray | None = None) -> None:
        if (quality is None) != (w is None):
            raise ValueError("pass both quality features and boosting weights w, or neither")
        self.exact = UnifiedRetriever(model, features)
        self.model = self.exact.model
        self.features = features
        self.listing_vectors = self.exact.listing_vectors
        self.w = None if w is None else check_weights(w, np.asarray(quality).shape[1])
        self.items = self.listing_vectors if w is None else hydrate_listings(self.listing_vectors, quality)
        self.index = index if index is not None else HNSWIndex(space="ip" if w is None else "l2")
        if self.index.dim == 0:  # not built yet: index the catalogue
            self.index.build(self.items, self.exact.listing_ids)
        if self.index.dim != self.items.shape[1]:
            raise ValueError(f"index dimension {self.index.dim} differs from the served vectors' {self.items.shape[1]}")
        self.listings = features.observed.listings.set_index("listing_id")
        self._shown = {c: self.listings[c].to_numpy() for c in RESULT_COLUMNS}  # what a result row shows
        self.known_users = set(features.observed.users["user_id"].tolist())
        self.choice: object | None = None  # how the settings were chosen, when pipeline.build_system built it
        self._lock = threading.Lock()

    @property
    def dim(self) -> int:
        """Length of a query-tower vector, what :meth:`query` takes."""
        return int(self.listing_vectors.shape[1])

    def encode(self, text: str, user_id: int | None = None, history: bool = True) -> torch.Tensor:
        """The query tower's vector ``(1, dim)`` for one request.

        Raises :class:`UnknownUserError` for an unknown user, and ``ValueError`` for an empty query
        without a user (nothing to search for). An empty query *with* a user searches by the user's
        history and location alone. ``history=False`` leaves the user's history out (location kept):
        the unpersonalised request.
        """
        if not isinstance(text, str):
            raise TypeError(f"query text must be a string, got {type(text).__name__}")
        text = text.strip()
        if user_id is not None and int(user_id) not in self.known_users:
            raise UnknownUserError(f"unknown user {user_id!r}; pass user_id=None for an anonymous request")
        if not text and user_id is None:
            raise ValueError("empty query and no user: there is nothing to search for")
        users = np.array([-1 if user_id is None else int(user_id)])
        rows = self.features.current_rows(users) if history else np.full(1, -1)
        with torch.no_grad():
            return self.model.encode_queries(*self.features.queries([text], users, rows, self.model.config))

    def _served(self, vectors: torch.Tensor) -> torch.Tensor:
        return vectors if self.w is None else hydrate_queries(vectors, self.w)

    def _search(self, queries: torch.Tensor, k: int, level: int | None) -> tuple[np.ndarray, np.ndarray]:
        if level is not None and level not in EF_BY_LEVEL:
            raise ValueError(f"level must be one of {sorted(EF_BY_LEVEL)} or None, got {level!r}")
        with self._lock:
            chosen = self.index.ef
            self.index.ef = chosen if level is None else EF_BY_LEVEL[level]
            try:
                return self.index.search(queries, k)
            finally:
                self.index.ef = chosen

    def query(self, vector: np.ndarray | torch.Tensor, top_n: int = 10, level: int | None = None,
              rerank: bool = False, timings: dict[str, float] | None = None) -> pd.DataFrame:
        """The ``top_n`` listings for a query-tower vector: ``listing_id, score, title, taxonomy``, best first.

        ``score`` is what the index ranks by (``q.p``, plus ``w.f(p)`` when boosted). ``level`` sets the
        search effort (:data:`EF_BY_LEVEL`); ``rerank`` re-scores ``RERANK_DEPTH x top_n`` candidates
        exactly. ``timings``, if given, receives the milliseconds of ``ann`` and ``rerank``. Raises
        ``ValueError`` for a vector of the wrong length or with NaN or infinity, or ``top_n < 1``.
        """
        if isinstance(top_n, bool) or not isinstance(top_n, int | np.integer) or top_n < 1:
            raise ValueError(f"top_n must be a positive integer, got {top_n!r}")
        v = np.asarray(vector, dtype=np.float32)
        if v.ndim == 2 and v.shape[0] == 1:
            v = v[0]
        if v.ndim != 1:
            raise ValueError(f"query takes one vector of dimension {self.dim}, got shape {v.shape}")
        v = check_queries(v[None, :], self.dim, top_n)
        queries = self._served(torch.from_numpy(v))
        start = time.perf_counter()
        ids, scores = self._search(queries, top_n * RERANK_DEPTH if rerank else top_n, level)
        found = time.perf_counter()
        if rerank:
            scores = candidate_scores(queries, self.items, ids)
            order = np.lexsort((ids[0], -scores[0]))[:top_n]  # best exact score first, ties by id
            ids, scores = ids[:, order], scores[:, order]
        if timings is not None:
            timings["ann"] = (found - start) * 1e3
            timings["rerank"] = (time.perf_counter() - found) * 1e3
        keep = ids[0] != PAD
        hits = ids[0][keep]
        rows = self.listings.index.get_indexer(hits)
        return pd.DataFrame({"listing_id": hits, "score": scores[0][keep].astype(float),
                             **{c: values[rows] for c, values in self._shown.items()}})

    def search(self, text: str, user_id: int | None = None, top_n: int = 10, rerank: bool = False,
               history: bool = True, level: int | None = None, timings: dict[str, float] | None = None
               ) -> pd.DataFrame:
        """Encode the request (text plus user, if any) and return the ``top_n`` best listings.

        The result is a results page (``listing_id, score, title, taxonomy``), what the service returns;
        batch searches elsewhere return a :class:`~retrieval_lib.serving.base.SearchResult`. ``timings``,
        if given, also receives the milliseconds of the ``query_tower``.
        """
        start = time.perf_counter()
        vector = self.encode(text, user_id, history)
        if timings is not None:
            timings["query_tower"] = (time.perf_counter() - start) * 1e3
        return self.query(vector, top_n, level, rerank, timings)

    def retrieve(self, sessions: pd.DataFrame, k: int) -> np.ndarray:
        """Retriever interface for logged sessions: top-``k`` listing ids, each session in its own context."""
        return self._search(self._served(self.exact.encode_sessions(sessions)), k, None)[0]

    def listing(self, listing_id: int) -> dict[str, object]:
        """One listing as the marketplace shows it; raises ``KeyError`` for an unknown id."""
        if isinstance(listing_id, bool) or not isinstance(listing_id, int | np.integer) \
                or listing_id not in self.listings.index:
            raise KeyError(f"unknown listing {listing_id!r}")
        row = self.listings.loc[int(listing_id)]
        rating = row["rating"]
        return {"listing_id": int(listing_id), "title": str(row["title"]), "taxonomy": str(row["taxonomy"]),
                "tags": [str(t) for t in row["tags"]], "price": float(row["price"]),
                "rating": None if pd.isna(rating) else float(rating), "review_count": int(row["review_count"]),
                "shop_id": int(row["shop_id"]), "created_day": float(row["created_day"])}


def history_effect(retriever: Retriever, text: str, user_ids: np.ndarray, k: int = 100) -> pd.DataFrame:
    """What each user's history changes for one query: the same user, the same location, history on or off.

    Returns one row per user with ``history_items``, ``cosine`` (between the query vectors with and
    without history) and ``overlap`` (share of the top ``k`` listings that both requests return).
    Holding the user (and so the location) fixed isolates the history's effect.
    """
    user_ids = np.asarray(user_ids, dtype=np.int64)
    unknown = sorted(set(user_ids.tolist()) - retriever.known_users)
    if unknown:
        raise UnknownUserError(f"unknown user {unknown[0]!r}")
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
