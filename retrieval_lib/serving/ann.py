"""Approximate nearest-neighbour search with HNSW (``hnswlib``), checked against exact search.

HNSW builds a layered proximity graph over the listing vectors and answers a query by greedy descent
through it; ``ef`` trades speed for recall at query time. With unit-norm vectors, inner product is
cosine. Exact search (:func:`retrieval_lib.serving.exact.exact_top_k`) is the reference its recall is measured
against.
"""

from __future__ import annotations

import hnswlib
import numpy as np
import torch

from retrieval_lib.serving.base import PAD, SearchResult
from retrieval_lib.serving.exact import exact_top_k


def _array(x: np.ndarray | torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(x.detach().numpy() if isinstance(x, torch.Tensor) else x, dtype=np.float32)


class HNSWIndex:
    """An inner-product HNSW index over item vectors, built reproducibly (fixed seed, one thread)."""

    def __init__(self, m: int = 16, ef_construction: int = 200, ef: int = 200, seed: int = 0,
                 num_threads: int = 1) -> None:
        if min(m, ef_construction, ef, num_threads) < 1:
            raise ValueError("m, ef_construction, ef and num_threads must be positive")
        self.m, self.ef_construction, self.ef = m, ef_construction, ef
        self.seed, self.num_threads = seed, num_threads
        self.index: hnswlib.Index | None = None
        self.item_ids = np.empty(0, dtype=np.int64)

    @property
    def dim(self) -> int:
        """Vector dimension (0 before :meth:`build`)."""
        return 0 if self.index is None else self.index.dim

    def build(self, vectors: np.ndarray | torch.Tensor, item_ids: np.ndarray | None = None) -> HNSWIndex:
        """Index ``vectors`` (one row per item); ``item_ids`` default to row numbers."""
        data = _array(vectors)
        if data.ndim != 2 or len(data) == 0:
            raise ValueError(f"need a non-empty 2-D array of vectors, got shape {data.shape}")
        ids = np.arange(len(data)) if item_ids is None else np.asarray(item_ids, dtype=np.int64)
        if len(ids) != len(data):
            raise ValueError(f"{len(ids)} ids for {len(data)} vectors")
        self.index = hnswlib.Index(space="ip", dim=data.shape[1])
        self.index.init_index(max_elements=len(data), ef_construction=self.ef_construction, M=self.m,
                              random_seed=self.seed)
        self.index.set_num_threads(self.num_threads)
        self.index.add_items(data, np.arange(len(data)), num_threads=self.num_threads)
        self.index.set_ef(self.ef)
        self.item_ids = ids
        return self

    def search(self, queries: np.ndarray | torch.Tensor, k: int) -> SearchResult:
        """Top-``k`` item ids and inner products per query (padded with ``PAD`` if ``k`` exceeds the items)."""
        if self.index is None:
            raise RuntimeError("call build() before search()")
        q = _array(queries)
        if q.ndim != 2 or q.shape[1] != self.dim:
            raise ValueError(f"query vectors have shape {q.shape}, the index holds dimension {self.dim}")
        k_found = min(k, len(self.item_ids))
        self.index.set_ef(max(self.ef, k_found))
        labels, distances = self.index.knn_query(q, k=k_found, num_threads=self.num_threads)
        ids = np.full((len(q), k), PAD, dtype=np.int64)
        scores = np.full((len(q), k), -np.inf, dtype=np.float32)
        ids[:, :k_found] = self.item_ids[labels.astype(np.int64)]
        scores[:, :k_found] = 1.0 - distances  # hnswlib's "ip" distance is 1 - inner product
        return SearchResult(ids, scores)


def ann_recall(index: HNSWIndex, queries: np.ndarray | torch.Tensor, vectors: np.ndarray | torch.Tensor,
               k: int) -> float:
    """Share of the exact top-``k`` neighbours that the index also returns (averaged over queries)."""
    exact, _ = exact_top_k(queries, vectors, k, item_ids=index.item_ids)
    approx, _ = index.search(queries, k)
    hits = [len(set(a) & set(e)) for a, e in zip(approx, exact, strict=True)]
    return float(np.mean(hits) / k)
