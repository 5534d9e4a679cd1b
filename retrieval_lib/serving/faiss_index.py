"""Faiss indexes for comparison with hnswlib: the paper's production choice, compressed codes re-ranked exactly.

Etsy served from Faiss, with HNSW over 4-bit product-quantisation (PQ) codes and exact re-ranking of
the top candidates *[reported]*. Product quantisation splits a vector into sub-vectors and stores
each as the id of its nearest centroid (4 bits: one of 16), so a 64-dimensional float vector of 256
bytes becomes 32 half-bytes; scores from codes are approximate, so the index returns ``rerank`` times
more candidates than asked and they are re-scored with the full-precision vectors
(:func:`~retrieval_lib.serving.exact.candidate_scores`).

An index is described by a Faiss *factory string* (``"HNSW32"``, ``"IVF64,PQ32x4fs"``, ...) and its
search-time parameters (``efSearch``, ``nprobe``), set through Faiss's ``ParameterSpace``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import faiss
import numpy as np
import torch

from retrieval_lib.serving.ann import as_float32, check_queries
from retrieval_lib.serving.base import PAD, SearchResult
from retrieval_lib.serving.exact import candidate_scores


def ivf_lists(n_items: int) -> int:
    """Inverted lists for an IVF index over ``n_items``: the power of two nearest ``sqrt(n_items)`` (at least 1)."""
    if n_items < 1:
        raise ValueError(f"need at least one item, got {n_items}")
    return int(2 ** round(np.log2(np.sqrt(n_items))))


@contextmanager
def omp_threads(n: int) -> Iterator[None]:
    """Run Faiss on ``n`` OpenMP threads for one call, then restore the count.

    Faiss and torch share one OpenMP runtime in a process, so a count left behind would change torch's
    too: the threads of every later training (its rounding) and the artifact cache's key.
    """
    previous = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(n)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(previous)


class FaissIndex:
    """A Faiss inner-product index from a factory string, optionally re-ranked with exact scores.

    Parameters
    ----------
    factory : str
        Faiss factory string, e.g. ``"HNSW32"`` or ``"IVF64,PQ32x4fs"`` (4-bit fast-scan PQ).
    params : dict
        Search-time parameters by Faiss name, e.g. ``{"efSearch": 128}`` or ``{"nprobe": 8}``.
    rerank : int
        ``0``: return the index's own top ``k``. ``r >= 1``: fetch ``r * k`` candidates and keep the
        ``k`` with the highest exact inner product.
    threads : int
        OpenMP threads Faiss may use (one keeps training and search deterministic).
    """

    def __init__(self, factory: str, params: dict[str, int] | None = None, rerank: int = 0,
                 threads: int = 1) -> None:
        if not isinstance(rerank, int) or isinstance(rerank, bool) or rerank < 0:
            raise ValueError(f"rerank must be a non-negative integer, got {rerank!r}")
        if threads < 1:
            raise ValueError(f"threads must be positive, got {threads}")
        self.factory, self.params, self.rerank, self.threads = factory, dict(params or {}), rerank, threads
        self.index: faiss.Index | None = None
        self.vectors = np.empty((0, 0), dtype=np.float32)
        self.item_ids = np.empty(0, dtype=np.int64)
        self.build_seconds = 0.0

    @property
    def dim(self) -> int:
        """Vector dimension (0 before :meth:`build`)."""
        return 0 if self.index is None else self.index.d

    def build(self, vectors: np.ndarray | torch.Tensor, item_ids: np.ndarray | None = None) -> FaissIndex:
        """Train the index (codebooks, coarse centroids) on ``vectors`` and add them."""
        data = as_float32(vectors)
        if data.ndim != 2 or len(data) == 0:
            raise ValueError(f"need a non-empty 2-D array of vectors, got shape {data.shape}")
        ids = np.arange(len(data)) if item_ids is None else np.asarray(item_ids, dtype=np.int64)
        if len(ids) != len(data):
            raise ValueError(f"{len(ids)} ids for {len(data)} vectors")
        start = time.perf_counter()
        index = faiss.index_factory(data.shape[1], self.factory, faiss.METRIC_INNER_PRODUCT)
        with omp_threads(self.threads):
            if not index.is_trained:
                index.train(data)
            index.add(data)
        self.build_seconds = time.perf_counter() - start
        self.index, self.vectors, self.item_ids = index, data, ids
        self.set_params(self.params)
        return self

    def set_params(self, params: dict[str, int]) -> None:
        """Set search-time parameters (e.g. ``efSearch``, ``nprobe``) on the built index."""
        self.params = dict(params)
        if self.index is not None:
            space = faiss.ParameterSpace()
            for name, value in self.params.items():
                space.set_index_parameter(self.index, name, value)

    def search(self, queries: np.ndarray | torch.Tensor, k: int) -> SearchResult:
        """Top-``k`` ids and inner products (exact ones after re-ranking, the codes' estimates without)."""
        if self.index is None:
            raise RuntimeError("call build() before search()")
        q = check_queries(queries, self.dim, k)
        fetch = min(k * max(self.rerank, 1), len(self.item_ids))
        with omp_threads(self.threads):
            scores, rows = self.index.search(q, fetch)
        rows = np.where(rows >= 0, rows, PAD).astype(np.int64)
        if self.rerank:
            scores = candidate_scores(q, self.vectors, rows)
            order = np.argsort(-scores, axis=1, kind="stable")
            rows, scores = np.take_along_axis(rows, order, 1), np.take_along_axis(scores, order, 1)
        ids = np.full((len(q), k), PAD, dtype=np.int64)
        out = np.full((len(q), k), -np.inf, dtype=np.float32)
        kept = min(k, fetch)
        found = rows[:, :kept] != PAD
        ids[:, :kept] = np.where(found, self.item_ids[rows[:, :kept].clip(0)], PAD)
        out[:, :kept] = np.where(found, scores[:, :kept], -np.inf)
        return SearchResult(ids, out)

    def bytes_per_vector(self) -> float:
        """Size of the serialised index per item (codes, links, centroids); re-ranking also needs the vectors."""
        if self.index is None:
            raise RuntimeError("call build() before bytes_per_vector()")
        return len(faiss.serialize_index(self.index)) / len(self.item_ids)
