"""Approximate nearest-neighbour search with HNSW (``hnswlib``), checked against exact search.

HNSW builds a layered proximity graph over the listing vectors and answers a query by greedy descent
through it: ``M`` links per node, ``ef_construction`` candidates while linking, and ``ef`` candidates
kept while searching trade build time, memory and query time for recall. With unit-norm vectors,
inner product is cosine and the graph works well in hnswlib's ``ip`` space.

Inner product is not a metric, though: with vectors of unequal norms (the hydrated vectors of
chapter 9) a graph built for it can lose much of its recall. The *MIPS-to-L2 reduction* (Bachrach et
al. 2014) turns the search into a metric one: every item gets one more coordinate
``sqrt(R^2 - |x|^2)`` (``R`` the largest item norm), every query a ``0``, and then
``|q - x|^2 = |q|^2 + R^2 - 2 q.x``: the nearest item in Euclidean distance is the one with the
largest inner product. ``HNSWIndex(space="l2")`` applies it and still returns inner products. The
transformation is exact; the graph's recall is not guaranteed. When norms differ a little (hydrated
vectors) it restores recall; when they spread over orders of magnitude, the extra coordinate dominates
the distances between items and the graph can do worse than the ``ip`` space. Measure both against
exact search on the vectors you index.

Exact search (:func:`retrieval_lib.serving.exact.exact_top_k`) is the reference every index is measured
against (:func:`ann_recall`, :func:`ann_sweep`).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Protocol

import hnswlib
import numpy as np
import pandas as pd
import torch

from retrieval_lib.serving.base import PAD, SearchResult
from retrieval_lib.serving.exact import exact_top_k

#: The two ways to index for maximum inner product: hnswlib's ``ip`` space, or the reduction to ``l2``.
SPACES: tuple[str, ...] = ("ip", "l2")


def as_float32(x: np.ndarray | torch.Tensor) -> np.ndarray:
    """A C-contiguous float32 numpy copy (or view) of an array or tensor."""
    return np.ascontiguousarray(x.detach().numpy() if isinstance(x, torch.Tensor) else x, dtype=np.float32)


def mips_to_l2_items(items: np.ndarray, radius: float | None = None) -> tuple[np.ndarray, float]:
    """Append ``sqrt(R^2 - |x|^2)`` to every item so that all have norm ``R``; returns ``(items', R)``.

    ``R`` defaults to the largest item norm; a given ``radius`` smaller than that is an error.
    """
    x = as_float32(items)
    norms = np.linalg.norm(x, axis=1)
    biggest = float(norms.max()) if len(x) else 0.0
    r = biggest if radius is None else float(radius)
    if r < biggest * (1 - 1e-6):
        raise ValueError(f"radius {r} is below the largest item norm {biggest}")
    extra = np.sqrt(np.clip(r * r - norms * norms, 0.0, None))
    return np.hstack([x, extra[:, None]]).astype(np.float32), r


def mips_to_l2_queries(queries: np.ndarray) -> np.ndarray:
    """Append a ``0`` to every query (the query side of the MIPS-to-L2 reduction)."""
    q = as_float32(queries)
    return np.hstack([q, np.zeros((len(q), 1), dtype=np.float32)])


def check_queries(queries: np.ndarray | torch.Tensor, dim: int, k: int) -> np.ndarray:
    """Query vectors as float32 after checking them against an index of dimension ``dim``, and ``k > 0``."""
    q = as_float32(queries)
    if q.ndim != 2 or q.shape[1] != dim:
        raise ValueError(f"query vectors have dimension {q.shape[-1] if q.ndim else 0} (shape {q.shape}), "
                         f"the index holds dimension {dim}")
    if not np.isfinite(q).all():
        raise ValueError("query vectors contain NaN or infinity")
    if k <= 0:
        raise ValueError(f"k must be positive, got {k}")
    return q


class HNSWIndex:
    """An HNSW index for maximum inner product over item vectors, built reproducibly (fixed seed, one thread).

    Parameters
    ----------
    m : int
        Links per node (hnswlib's ``M``); layer 0 keeps ``2 * m``.
    ef_construction : int
        Candidate list size while inserting: a better graph for a slower build.
    ef : int
        Candidate list size while searching. A search for ``k`` results uses ``max(ef, k)``, since
        hnswlib cannot return more than ``ef`` neighbours.
    seed, num_threads : int
        The level generator's seed; threads for building and searching (one for a deterministic build).
    space : str
        ``"ip"`` (hnswlib's inner-product space) or ``"l2"`` (the MIPS-to-L2 reduction, an exact
        transformation for vectors of any norm). Either way :meth:`search` returns inner products.
    """

    def __init__(self, m: int = 16, ef_construction: int = 200, ef: int = 200, seed: int = 0,
                 num_threads: int = 1, space: str = "ip") -> None:
        for name, value in (("m", m), ("ef_construction", ef_construction), ("ef", ef), ("num_threads", num_threads)):
            if not isinstance(value, int | np.integer) or isinstance(value, bool) or value < 1:
                raise ValueError(f"HNSWIndex {name} must be a positive integer, got {value!r}")
        if space not in SPACES:
            raise ValueError(f"unknown space {space!r}; choose one of {SPACES}")
        self.m, self.ef_construction, self.ef = int(m), int(ef_construction), int(ef)
        self.seed, self.num_threads, self.space = seed, int(num_threads), space
        self.index: hnswlib.Index | None = None
        self.item_ids = np.empty(0, dtype=np.int64)
        self.radius = 0.0
        self.build_seconds = 0.0

    @property
    def dim(self) -> int:
        """Dimension of the vectors it indexes (0 before :meth:`build`); the reduction's extra one not counted."""
        if self.index is None:
            return 0
        return self.index.dim - (1 if self.space == "l2" else 0)

    def build(self, vectors: np.ndarray | torch.Tensor, item_ids: np.ndarray | None = None) -> HNSWIndex:
        """Index ``vectors`` (one row per item); ``item_ids`` default to row numbers."""
        data = as_float32(vectors)
        if data.ndim != 2 or len(data) == 0:
            raise ValueError(f"need a non-empty 2-D array of vectors, got shape {data.shape}")
        if not np.isfinite(data).all():
            raise ValueError("item vectors contain NaN or infinity")
        ids = np.arange(len(data)) if item_ids is None else np.asarray(item_ids, dtype=np.int64)
        if len(ids) != len(data):
            raise ValueError(f"{len(ids)} ids for {len(data)} vectors")
        start = time.perf_counter()
        if self.space == "l2":
            data, self.radius = mips_to_l2_items(data)
        index = hnswlib.Index(space=self.space, dim=data.shape[1])
        index.init_index(max_elements=len(data), ef_construction=self.ef_construction, M=self.m,
                         random_seed=self.seed)
        index.set_num_threads(self.num_threads)
        index.add_items(data, np.arange(len(data)), num_threads=self.num_threads)
        index.set_ef(self.ef)
        self.build_seconds = time.perf_counter() - start
        self.index, self.item_ids = index, ids
        return self

    def search(self, queries: np.ndarray | torch.Tensor, k: int) -> SearchResult:
        """Top-``k`` item ids and inner products per query (padded with ``PAD`` if ``k`` exceeds the items)."""
        if self.index is None:
            raise RuntimeError("call build() before search()")
        q = check_queries(queries, self.dim, k)
        k_found = min(k, len(self.item_ids))
        self.index.set_ef(max(self.ef, k_found))
        searched = mips_to_l2_queries(q) if self.space == "l2" else q
        labels, distances = self.index.knn_query(searched, k=k_found, num_threads=self.num_threads)
        ids = np.full((len(q), k), PAD, dtype=np.int64)
        scores = np.full((len(q), k), -np.inf, dtype=np.float32)
        ids[:, :k_found] = self.item_ids[labels.astype(np.int64)]
        if self.space == "l2":  # |q' - x'|^2 = |q|^2 + R^2 - 2 q.x
            scores[:, :k_found] = ((q * q).sum(1, keepdims=True) + self.radius**2 - distances) / 2
        else:  # hnswlib's "ip" distance is 1 - inner product
            scores[:, :k_found] = 1.0 - distances
        return SearchResult(ids, scores)

    def bytes_per_vector(self) -> float:
        """Memory of the saved index per item: the vector, its links and hnswlib's bookkeeping."""
        if self.index is None:
            raise RuntimeError("call build() before bytes_per_vector()")
        return self.index.index_file_size() / len(self.item_ids)

    def save(self, folder: str | Path) -> Path:
        """Write the index to ``folder`` (created; replaced whole, never half-written)."""
        if self.index is None:
            raise RuntimeError("call build() before save()")
        folder = Path(folder)
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}-"))
        tmp.chmod(0o755)
        try:
            self.index.save_index(str(tmp / "index.bin"))
            np.save(tmp / "item_ids.npy", self.item_ids)
            meta = {"m": self.m, "ef_construction": self.ef_construction, "ef": self.ef, "seed": self.seed,
                    "num_threads": self.num_threads, "space": self.space, "radius": self.radius,
                    "dim": self.index.dim, "count": len(self.item_ids)}
            (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
            old = folder.with_name(f".{folder.name}-old") if folder.exists() else None
            if old is not None:  # keep the previous index until the new one is in place
                shutil.rmtree(old, ignore_errors=True)
                os.replace(folder, old)
            os.replace(tmp, folder)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> HNSWIndex:
        """Read an index written by :meth:`save`, with its ``ef`` restored (hnswlib does not save it)."""
        folder = Path(folder)
        meta = json.loads((folder / "meta.json").read_text())
        out = cls(m=meta["m"], ef_construction=meta["ef_construction"], ef=meta["ef"], seed=meta["seed"],
                  num_threads=meta["num_threads"], space=meta["space"])
        ids = np.load(folder / "item_ids.npy")
        if len(ids) != meta["count"]:
            raise ValueError(f"{folder} holds {len(ids)} ids for an index of {meta['count']} items")
        index = hnswlib.Index(space=meta["space"], dim=meta["dim"])
        index.load_index(str(folder / "index.bin"), max_elements=meta["count"])
        index.set_num_threads(out.num_threads)
        index.set_ef(out.ef)
        out.index, out.item_ids, out.radius = index, ids, float(meta["radius"])
        return out


def overlap_at_k(approx: np.ndarray, exact: np.ndarray) -> float:
    """Share of the exact top-``k`` ids (``PAD`` excluded) that the approximate lists also hold, over all rows."""
    approx, exact = np.asarray(approx), np.asarray(exact)
    if approx.shape != exact.shape:
        raise ValueError(f"result lists differ in shape: {approx.shape} and {exact.shape}")
    wanted = exact != PAD
    if not wanted.any():
        return float("nan")
    found = (exact[:, :, None] == approx[:, None, :]).any(axis=2) & wanted
    return float(found.sum() / wanted.sum())


def ann_recall(index: HNSWIndex, queries: np.ndarray | torch.Tensor, vectors: np.ndarray | torch.Tensor,
               k: int) -> float:
    """Share of the exact top-``k`` neighbours (by inner product) that the index also returns."""
    exact = exact_top_k(queries, vectors, k, item_ids=index.item_ids).ids
    return overlap_at_k(index.search(queries, k).ids, exact)


def ms_per_query(search: Callable[[np.ndarray, int], object], queries: np.ndarray | torch.Tensor, k: int,
                 repeats: int = 1) -> float:
    """Median milliseconds of ``search(one_query, k)`` over ``queries`` sent one at a time, as a service sends them."""
    q = as_float32(queries)
    if len(q) == 0:
        raise ValueError("need at least one query to time")
    times = []
    for _ in range(repeats):
        for row in q:
            start = time.perf_counter()
            search(row[None], k)
            times.append(time.perf_counter() - start)
    return float(np.median(times) * 1000)


class Index(Protocol):
    """What :func:`measure` reads from an index: a search, its build time and its memory per vector."""

    build_seconds: float

    def search(self, queries: np.ndarray, k: int) -> SearchResult:  # pragma: no cover - protocol
        """Top-``k`` ids and scores per query."""
        ...

    def bytes_per_vector(self) -> float:  # pragma: no cover - protocol
        """Memory per indexed item."""
        ...


def measure(index: Index, queries: np.ndarray | torch.Tensor, exact_ids: np.ndarray, k: int = 100,
            timed_queries: int = 300) -> dict[str, float]:
    """Recall@``k`` against the exact top ``k`` (``exact_ids``), build seconds, bytes per vector, ms per query.

    Latency is the median over the first ``timed_queries`` queries sent one at a time.
    """
    q = as_float32(queries)
    return {"recall_vs_exact": overlap_at_k(index.search(q, k).ids, np.asarray(exact_ids)[:, :k]),
            "build_seconds": index.build_seconds, "bytes_per_vector": index.bytes_per_vector(),
            "ms_per_query": ms_per_query(index.search, q[:timed_queries], k)}


def ann_sweep(vectors: np.ndarray | torch.Tensor, queries: np.ndarray | torch.Tensor, ms: Iterable[int],
              efs: Iterable[int], ef_construction: int = 200, k: int = 100, space: str = "ip", seed: int = 0,
              timed_queries: int = 300) -> pd.DataFrame:
    """:func:`measure` for every HNSW setting: one row per (``M``, ``ef``).

    One index per ``M`` (``ef`` is a search-time setting, so every ``ef`` reuses it); an ``ef`` below
    ``k`` is searched, and reported, as ``k``.
    """
    q = as_float32(queries)
    exact = exact_top_k(q, vectors, k).ids
    rows = []
    for m in ms:
        index = HNSWIndex(m=m, ef_construction=ef_construction, seed=seed, space=space).build(vectors)
        for ef in efs:
            index.ef = ef
            rows.append({"M": m, "ef_construction": ef_construction, "ef": max(ef, k),
                         **measure(index, q, exact, k, timed_queries)})
    return pd.DataFrame(rows)


def cheapest_setting(sweep: pd.DataFrame, min_recall: float,
                     by: tuple[str, ...] = ("bytes_per_vector", "ef")) -> pd.Series:
    """The sweep's cheapest row whose recall reaches ``min_recall``: smallest ``by`` columns, in order.

    The default ranks by memory, then by search effort (``ef``): both are fixed by the setting, so the
    choice repeats exactly, which a choice by measured milliseconds on a shared machine would not.
    When no row reaches the target (recall is measured, and moves a little from one machine to
    another), the row with the highest recall is returned instead, the cheapest among equals: a
    chapter never fails on a measured number. The returned row's ``reached`` says which happened.
    """
    if sweep.empty:
        raise ValueError("the sweep has no settings to choose from")
    good = sweep[sweep["recall_vs_exact"] >= min_recall]
    reached = not good.empty
    if not reached:
        good = sweep[sweep["recall_vs_exact"] == sweep["recall_vs_exact"].max()]
    chosen = good.sort_values(list(by), kind="stable").iloc[0].copy()
    chosen["reached"] = reached
    return chosen


def sweep_to_target(vectors: np.ndarray | torch.Tensor, queries: np.ndarray | torch.Tensor, min_recall: float,
                    ms: Iterable[int], efs: Iterable[int], max_ef: int = 1600, **kwargs: Any) -> pd.DataFrame:
    """:func:`ann_sweep`, its ``ef`` grid extended until a setting reaches ``min_recall``.

    When no (``M``, ``ef``) of the grid reaches the target, the largest ``M`` is searched again with
    twice the largest ``ef``, and so on up to ``max_ef``: a bounded extension, since recall grows with
    ``ef`` but need not reach every target. :func:`cheapest_setting` then picks from the whole sweep.
    ``kwargs`` go to :func:`ann_sweep`.
    """
    ms, efs = list(ms), sorted(efs)
    sweep = ann_sweep(vectors, queries, ms, efs, **kwargs)
    ef = efs[-1]
    while (sweep["recall_vs_exact"] < min_recall).all() and ef * 2 <= max_ef:
        ef *= 2
        sweep = pd.concat([sweep, ann_sweep(vectors, queries, [max(ms)], [ef], **kwargs)], ignore_index=True)
    return sweep
