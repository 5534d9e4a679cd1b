"""Exact nearest-neighbour search by inner product: the reference every ANN index is compared with."""

from __future__ import annotations

import numpy as np
import torch
from scipy import sparse

from retrieval_lib.retrieval import PAD


def exact_top_k(queries: np.ndarray | torch.Tensor, items: np.ndarray | torch.Tensor, k: int,
                item_ids: np.ndarray | None = None, chunk: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` items with the highest inner product for every query (cosine if both are L2-normalised).

    Returns ``(ids, scores)`` of shape ``(n_queries, k)``, best first; ids are row numbers of ``items``
    (or ``item_ids[row]``), padded with ``-1`` when there are fewer than ``k`` items.
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
        return ids, scores
    with torch.no_grad():
        for start in range(0, q.shape[0], chunk):
            s, i = torch.topk(q[start:start + chunk] @ x.T, kk, dim=1)
            ids[start:start + chunk, :kk] = i.numpy()
            scores[start:start + chunk, :kk] = s.numpy()
    if item_ids is not None:
        item_ids = np.asarray(item_ids)
        ids = np.where(ids >= 0, item_ids[np.maximum(ids, 0)], PAD)
    return ids, scores


def neighbor_precision(vectors: np.ndarray | sparse.spmatrix, labels: np.ndarray, k: int = 10,
                       rows: np.ndarray | None = None) -> float:
    """Mean share of each row's ``k`` nearest other rows (by inner product) that carry the same label.

    Works on dense vectors and on sparse ones (e.g. TF-IDF). ``rows`` limits the queries to a sample;
    neighbours are always searched among all rows.
    """
    labels = np.asarray(labels)
    n = vectors.shape[0]
    if labels.shape[0] != n:
        raise ValueError(f"{labels.shape[0]} labels for {n} vectors")
    if not 0 < k < n:
        raise ValueError(f"k must be in [1, {n - 1}], got {k}")
    rows = np.arange(n) if rows is None else np.asarray(rows)
    hits = []
    for start in range(0, rows.size, 1024):
        r = rows[start:start + 1024]
        sims = vectors[r] @ vectors.T
        sims = sims.toarray() if sparse.issparse(sims) else np.asarray(sims, dtype=np.float64)
        sims[np.arange(r.size), r] = -np.inf  # a row is not its own neighbour
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        hits.append((labels[top] == labels[r][:, None]).mean(axis=1))
    return float(np.concatenate(hits).mean())
