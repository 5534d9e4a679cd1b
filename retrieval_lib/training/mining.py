"""Dynamic hard negatives: listings the model being trained ranks high, mined from an ANN index.

Uniform and in-batch negatives are mostly easy: the model already scores them far below the positive,
so they contribute almost no gradient late in training. Hard negatives are the listings the model
itself ranks near the top for a request. Here they are mined *dynamically* (ANCE, Xiong et al. 2021;
STAR/ADORE, Zhan et al. 2021): every ``refresh_every`` optimiser steps the whole catalogue is encoded
with the current product tower and indexed with HNSW (``hnswlib``); each batch then searches that index
with its current query vectors. Two guards keep the mined listings honest negatives:

* the very top ranks are skipped (a *window* of ranks ``[a, b)``), because what the model ranks first
  is often what the buyer would have bought (a false negative; RocketQA, Qu et al. 2021, denoises
  for the same reason);
* listings engaged for the same query anywhere in the training pairs, and listings that did not exist
  at the request's time, are removed before ranks are counted.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from retrieval_lib.serving.ann import HNSWIndex
from retrieval_lib.serving.base import PAD
from retrieval_lib.training.negatives import Batch, Catalogue, Negatives, row_negatives
from retrieval_lib.training.pairs import TrainingPairs


def catalogue_index(encode: Callable[[np.ndarray], torch.Tensor], catalogue: Catalogue, m: int = 16,
                    ef_construction: int = 100, ef: int = 100, seed: int = 0, chunk: int = 4096) -> HNSWIndex:
    """An HNSW index over the product vectors ``encode(ids)`` of the whole catalogue (one thread, seeded)."""
    ids = np.array(catalogue.listing_id)  # a writable copy: torch warns when indexing with read-only arrays
    vectors = torch.cat([encode(ids[s:s + chunk]) for s in range(0, ids.size, chunk)])
    return HNSWIndex(m=m, ef_construction=ef_construction, ef=ef, seed=seed).build(vectors, ids)


def ranked_candidates(index: HNSWIndex, catalogue: Catalogue, pairs: TrainingPairs, rows: np.ndarray,
                      query_vectors: np.ndarray | torch.Tensor, depth: int, slack: int = 50) -> np.ndarray:
    """``(B, depth)`` listing ids per pair row, best first, after the false-negative guard (``PAD`` pads).

    The index is searched for ``depth + slack`` listings; those created after the request or engaged
    for its query in ``pairs`` are dropped, and the rest keep their order, so column ``r`` holds the
    listing at rank ``r + 1`` among the allowed ones.
    """
    rows = np.asarray(rows, dtype=np.int64)
    if depth < 1 or slack < 0:
        raise ValueError(f"depth must be positive and slack non-negative, got {depth} and {slack}")
    found = index.search(query_vectors, depth + slack).ids
    allowed = catalogue.existing(found, pairs.day[rows]) & ~pairs.engaged_for_query(rows, found)
    order = np.argsort(~allowed, axis=1, kind="stable")  # allowed first, ranks kept
    kept = np.take_along_axis(np.where(allowed, found, PAD), order, axis=1)[:, :depth]
    return np.pad(kept, ((0, 0), (0, depth - kept.shape[1])), constant_values=PAD)


def sample_window(ranked: np.ndarray, window: tuple[int, int], n: int, generator: torch.Generator | None = None
                  ) -> np.ndarray:
    """``(B, n)`` ids drawn without replacement from ranks ``a`` to ``b - 1`` (counted from 1) of ``ranked``."""
    a, b = window
    part = ranked[:, a - 1:b - 1]
    keys = torch.rand(part.shape, generator=generator, dtype=torch.float64).numpy()
    keys[part < 0] = np.inf  # padding last
    pick = np.argsort(keys, axis=1, kind="stable")[:, :n]
    out = np.take_along_axis(part, pick, axis=1)
    return np.pad(out, ((0, 0), (0, n - out.shape[1])), constant_values=PAD)


def check_window(window: tuple[int, int]) -> tuple[int, int]:
    """Validate a rank window ``(a, b)``: ranks ``a`` to ``b - 1``, counted from 1."""
    if not (len(window) == 2 and all(isinstance(r, int) for r in window) and 1 <= window[0] < window[1]):
        raise ValueError(f"a rank window is (a, b) with 1 <= a < b, got {window!r}")
    return window


@dataclass(frozen=True)
class MinedNegatives:
    """``n`` negatives per row mined from ranks ``window = (a, b)`` of an ANN index of the current model.

    ``refresh_every`` optimiser steps, the catalogue is re-encoded and re-indexed (HNSW with ``m``,
    ``ef_construction`` and ``ef``, seeded and built on one thread, so the index is reproducible; it is
    searched on ``search_threads``, which cannot change results); between refreshes the product vectors in the
    index lag the model a little, as in ANCE's asynchronous refresh. The trainer calls :meth:`reset`
    before each run and stores :meth:`stats` (refreshes, seconds refreshing and searching) in the
    run's history.
    """

    window: tuple[int, int] = (11, 101)
    n: int = 8
    refresh_every: int = 50
    m: int = 16
    ef_construction: int = 100
    ef: int = 100
    seed: int = 0
    search_threads: int = 2

    def __post_init__(self) -> None:
        object.__setattr__(self, "window", check_window(tuple(self.window)))
        for name in ("n", "refresh_every", "m", "ef_construction", "ef", "search_threads"):
            value = getattr(self, name)
            if not (isinstance(value, int) and value > 0):
                raise ValueError(f"MinedNegatives.{name} must be a positive integer, got {value!r}")
        self.reset()

    def reset(self) -> None:
        """Forget the index and the timings: the next batch builds a fresh index."""
        object.__setattr__(self, "_state", {"index": None, "built_at": 0, "refreshes": 0,
                                            "refresh_seconds": 0.0, "search_seconds": 0.0})

    def stats(self) -> dict[str, float]:
        """Refreshes so far, seconds spent building indexes, and seconds spent searching them."""
        return {k: v for k, v in self._state.items() if k not in ("index", "built_at")}

    def index_for(self, batch: Batch) -> HNSWIndex:
        """The current index, rebuilt from the model's product vectors when it is due."""
        state = self._state
        if state["index"] is None or batch.step - state["built_at"] >= self.refresh_every:
            if batch.encode_frozen is None:
                raise ValueError("MinedNegatives needs the trainer's encode_frozen to index the catalogue")
            start = time.perf_counter()
            state["index"] = catalogue_index(batch.encode_frozen, batch.need_catalogue("MinedNegatives"),
                                             self.m, self.ef_construction, self.ef, self.seed)
            state["index"].num_threads = self.search_threads  # built on one thread; queries are independent
            state["built_at"] = batch.step
            state["refreshes"] += 1
            state["refresh_seconds"] += time.perf_counter() - start
        return state["index"]

    def sample(self, batch: Batch) -> np.ndarray:
        """``(B, n)`` mined listing ids per row (``PAD`` where the window holds fewer)."""
        index = self.index_for(batch)
        start = time.perf_counter()
        ranked = ranked_candidates(index, batch.need_catalogue("MinedNegatives"), batch.pairs, batch.rows,
                                   batch.query_vectors.detach(), self.window[1] - 1)
        self._state["search_seconds"] += time.perf_counter() - start
        return sample_window(ranked, self.window, self.n)

    def __call__(self, batch: Batch) -> Negatives:
        """Scores against the mined listings, encoded with gradients."""
        return row_negatives(batch, self.sample(batch))
