"""Exact search by inner product, and serving a two-tower model with it.

The product tower can be as heavy as we like because it runs once per listing, offline; the query
tower runs on every request. Exact search is the reference every ANN index is compared with.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from retrieval_lib.serving.base import PAD, SearchResult, per_unique_query

#: Queries scored per matrix product in :func:`exact_top_k` (and in any code that must get its scores bit
#: for bit: the product's blocking may depend on the number of rows).
SCORE_CHUNK = 2048


def top_k_of_scores(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` highest entries of each row of ``scores``, best first, ties broken by the lower column.

    ``torch.topk`` alone leaves the order of equal scores to its algorithm (and equal float32 cosines
    do occur: about one pair per ten rows in a top 1,100 of the book's catalogue). Rows where a tie
    sits inside the top ``k`` or is cut by it are selected again: every score above the row's ``k``-th,
    then the equal ones from the lowest column, ordered by score with a stable sort of the columns in
    ascending order. Returns ``(values, columns)``, each ``(n_rows, k)``; ``k`` must not exceed the width.
    """
    if k == 0 or len(scores) == 0:
        return torch.topk(scores, k, dim=1)
    values, cols = torch.topk(scores, min(k + 1, scores.shape[1]), dim=1)
    cut = values[:, k] == values[:, k - 1] if k < scores.shape[1] else torch.zeros(len(scores), dtype=torch.bool)
    values, cols = values[:, :k].contiguous(), cols[:, :k].contiguous()
    inside = (values[:, 1:] == values[:, :-1]).any(dim=1) & ~cut
    rows = torch.nonzero(inside).flatten()
    if len(rows):  # the right listings, equal ones in arbitrary order: sort by column, then stably by score
        by_col = torch.sort(cols[rows], dim=1, stable=True)
        by_score = torch.sort(torch.gather(values[rows], 1, by_col.indices), dim=1, descending=True, stable=True)
        cols[rows] = torch.gather(by_col.values, 1, by_score.indices)
        values[rows] = by_score.values
    rows = torch.nonzero(cut).flatten()
    if len(rows):  # the cut splits a tie: choose again from the whole row, equal scores from the lowest column
        part, last = scores[rows], values[rows, -1:]
        above, equal = part > last, part == last
        need = k - above.sum(dim=1, keepdim=True)
        chosen = above | (equal & (torch.cumsum(equal, dim=1) <= need))
        picked = torch.nonzero(chosen)[:, 1].reshape(len(rows), k)  # columns in ascending order per row
        order = torch.sort(torch.gather(part, 1, picked), dim=1, descending=True, stable=True).indices
        cols[rows] = torch.gather(picked, 1, order)
        values[rows] = torch.gather(part, 1, cols[rows])
    return values, cols


def exact_top_k(queries: np.ndarray | torch.Tensor, items: np.ndarray | torch.Tensor, k: int,
                item_ids: np.ndarray | None = None, chunk: int = SCORE_CHUNK) -> SearchResult:
    """The ``k`` items with the highest inner product for every query (cosine if both are L2-normalised).

    Returns a :class:`~retrieval_lib.serving.base.SearchResult` ``(ids, scores)`` of shape
    ``(n_queries, k)``, best first, equal scores in item row order (:func:`top_k_of_scores`); ids are
    row numbers of ``items`` (or ``item_ids[row]``), padded with ``-1`` when there are fewer than
    ``k`` items.
    """
    q = torch.as_tensor(queries, dtype=torch.float32)
    x = torch.as_tensor(items, dtype=torch.float32)
    if q.ndim != 2 or x.ndim != 2:
        raise ValueError(f"queries and items must be 2-D, got {tuple(q.shape)} and {tuple(x.shape)}")
    if q.shape[1] != x.shape[1]:
        raise ValueError(f"dimension mismatch: queries have {q.shape[1]}, items have {x.shape[1]}")
    if k <= 0:
        raise ValueError(f"k must be positive, got {k}")
    ids = np.full((q.shape[0], k), PAD, dtype=np.int64)
    scores = np.full((q.shape[0], k), -np.inf, dtype=np.float32)
    kk = min(k, x.shape[0])
    if kk == 0:
        return SearchResult(ids, scores)
    with torch.no_grad():
        for start in range(0, q.shape[0], chunk):
            s, i = top_k_of_scores(q[start:start + chunk] @ x.T, kk)
            ids[start:start + chunk, :kk] = i.numpy()
            scores[start:start + chunk, :kk] = s.numpy()
    if item_ids is not None:
        item_ids = np.asarray(item_ids)
        ids = np.where(ids >= 0, item_ids[np.maximum(ids, 0)], PAD)
    return SearchResult(ids, scores)


def candidate_scores(queries: np.ndarray | torch.Tensor, items: np.ndarray | torch.Tensor, ids: np.ndarray,
                     chunk: int = 512) -> np.ndarray:
    """Inner products of each query with its own candidates: ``(n, k)`` scores, ``-inf`` where ``ids`` is ``PAD``.

    ``ids`` ``(n, k)`` are row numbers of ``items`` (listing ids, for the book's catalogue), e.g. a
    ranking already cut to the listings that exist at each request. Rows are scored ``chunk`` at a
    time, so the gathered candidate vectors never take more than ``chunk * k * dim`` floats.
    """
    q = torch.as_tensor(queries, dtype=torch.float32)
    x = torch.as_tensor(items, dtype=torch.float32)
    ids = np.asarray(ids)
    if ids.ndim != 2 or ids.shape[0] != q.shape[0]:
        raise ValueError(f"need one row of candidate ids per query ({q.shape[0]}), got shape {ids.shape}")
    if q.ndim != 2 or x.ndim != 2 or q.shape[1] != x.shape[1]:
        raise ValueError(f"dimension mismatch: queries have shape {tuple(q.shape)}, items {tuple(x.shape)}")
    if ((ids < PAD) | (ids >= x.shape[0])).any():
        raise ValueError(f"candidate ids must be item rows 0 to {x.shape[0] - 1} or PAD ({PAD})")
    valid = ids != PAD
    scores = np.full(ids.shape, -np.inf, dtype=np.float32)
    rows = torch.from_numpy(np.where(valid, ids, 0))
    with torch.no_grad():
        for start in range(0, len(ids), chunk):
            part = slice(start, start + chunk)
            scores[part] = torch.bmm(x[rows[part]], q[part, :, None])[:, :, 0].numpy()
    return np.where(valid, scores, -np.inf).astype(np.float32)


class VectorRetriever:
    """Serve a two-tower model: listing vectors encoded once, queries encoded on demand, exact search.

    Subclasses set ``listing_ids`` and ``listing_vectors`` and implement :meth:`encode_queries`.
    """

    listing_ids: np.ndarray
    listing_vectors: torch.Tensor

    def encode_queries(self, queries: list[str]) -> torch.Tensor:
        """Unit-norm vectors of query texts."""
        raise NotImplementedError

    def search(self, queries: list[str], k: int) -> SearchResult:
        """Top-``k`` listing ids and scores per query."""
        return exact_top_k(self.encode_queries(queries), self.listing_vectors, k, item_ids=self.listing_ids)

    def retrieve(self, sessions: pd.DataFrame, k: int) -> np.ndarray:
        """Retriever interface: top-``k`` listing ids for each session's query."""
        return per_unique_query(sessions, lambda queries: self.search(queries, k).ids)
