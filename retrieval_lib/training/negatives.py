"""Negative sources for two-tower training: which listings each request is contrasted with.

A source looks at a training batch and returns, for every row, the scores of its query against some
negative listings plus a mask of "negatives" that must be ignored because they are really positives
(accidental hits). The trainer adds one loss per source, so chapter 7 can mix uniform, in-batch and
mined hard negatives without touching any model. This module holds the sources that need no index:
in-batch negatives (chapters 4 to 6), the hardest of them, and uniform negatives from the catalogue;
:mod:`retrieval_lib.training.mining` adds negatives mined from an ANN index of the model being trained.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import pandas as pd
import torch

from retrieval_lib.serving.base import PAD
from retrieval_lib.training.pairs import TrainingPairs


@dataclass(frozen=True)
class Catalogue:
    """The listings a request can be contrasted with: ids and creation days (both logged).

    A listing created after a request did not exist when the buyer searched, so it can be no negative
    for that request (and no candidate either: evaluation holds retrievers to the same rule).
    """

    listing_id: np.ndarray
    created_day: np.ndarray

    def __post_init__(self) -> None:
        if self.listing_id.shape != self.created_day.shape or self.listing_id.ndim != 1:
            raise ValueError(f"need one creation day per listing, got {self.listing_id.shape} ids and "
                             f"{self.created_day.shape} days")
        if self.listing_id.size == 0:
            raise ValueError("the catalogue is empty")

    @classmethod
    def of(cls, listings: pd.DataFrame) -> Catalogue:
        """The catalogue of an observed listings frame (``listing_id``, ``created_day``)."""
        return cls(listings["listing_id"].to_numpy(dtype=np.int64), listings["created_day"].to_numpy(dtype=float))

    def __len__(self) -> int:
        return self.listing_id.size

    def existing(self, ids: np.ndarray, days: np.ndarray) -> np.ndarray:
        """Whether each listing of ``ids`` ``(B, n)`` exists at its row's day ``days`` ``(B,)`` (``PAD``: no)."""
        ids = np.asarray(ids)
        created = self._created_by_id()
        known = (ids >= 0) & (ids < created.size)
        when = created[np.where(known, ids, 0)]
        return known & (when <= np.asarray(days, dtype=float)[:, None])

    def _created_by_id(self) -> np.ndarray:
        by_id = np.full(int(self.listing_id.max()) + 1, np.inf)
        by_id[self.listing_id] = self.created_day
        return by_id


@dataclass
class Batch:
    """One training batch: its pair rows, both towers' vectors, and a way to encode other listings.

    ``query_vectors[i]`` and ``listing_vectors[i]`` are row ``rows[i]``'s request and engaged listing;
    ``encode_listings(ids)`` runs the product tower (with gradients) for sources that bring their own
    listings; ``step`` counts optimiser steps from 0. Sources that sample from the whole catalogue read
    ``catalogue``, and a source that indexes the catalogue reads ``encode_frozen(ids)``: the product
    vectors as the model would serve them now (evaluation mode, no gradients).
    """

    rows: np.ndarray
    pairs: TrainingPairs
    query_vectors: torch.Tensor
    listing_vectors: torch.Tensor
    encode_listings: Callable[[np.ndarray], torch.Tensor]
    step: int = 0
    catalogue: Catalogue | None = None
    encode_frozen: Callable[[np.ndarray], torch.Tensor] | None = None

    def need_catalogue(self, source: str) -> Catalogue:
        """The batch's catalogue, or a clear error naming the source that needs it."""
        if self.catalogue is None:
            raise ValueError(f"{source} samples from the catalogue: pass catalogue= to the trainer")
        return self.catalogue


@dataclass
class Negatives:
    """Scores ``(B, N)`` of each row's query against ``N`` negatives, and ``mask`` (``True``: ignore)."""

    scores: torch.Tensor
    mask: torch.Tensor

    def __post_init__(self) -> None:
        if self.scores.shape != self.mask.shape:
            raise ValueError(f"scores {tuple(self.scores.shape)} and mask {tuple(self.mask.shape)} differ in shape")


class NegativeSource(Protocol):
    """Anything that gives a batch its negatives.

    A source that keeps state between batches (an index) may also define ``reset()``, which the trainer
    calls at the start of every run, and ``stats()``, a dict of figures the trainer stores in the
    run's history (e.g. seconds spent refreshing an index).
    """

    def __call__(self, batch: Batch) -> Negatives:  # pragma: no cover - protocol
        """Negatives for every row of ``batch``."""
        ...


def accidental_hits(keys: np.ndarray, listing_ids: np.ndarray) -> torch.Tensor:
    """``(B, B)`` mask of in-batch "negatives" that are really positives, diagonal excluded.

    Off-diagonal pair ``(i, j)`` is masked when row ``j`` has the same listing as row ``i`` or the same
    key (its listing was engaged with under row ``i``'s request too). The key is the query text for
    query-only models and the (query, user) request for personalised ones.
    """
    q = np.asarray(keys)
    lid = np.asarray(listing_ids)
    same = (lid[:, None] == lid[None, :]) | (q[:, None] == q[None, :])
    np.fill_diagonal(same, False)
    return torch.from_numpy(same)


#: What counts as the same request for the accidental-hit mask.
SAME_REQUEST = ("query", "request")


@dataclass(frozen=True)
class InBatchNegatives:
    """The other rows' listings as negatives (the in-batch softmax of chapters 4 to 6).

    ``same="query"`` masks rows with the same query text (query-only models, for which such a listing is
    as much a positive as the row's own); ``same="request"`` masks only rows of the same (query, user)
    request, so personalised models learn to tell two buyers of one head query apart.
    """

    same: str = "query"

    def __post_init__(self) -> None:
        if self.same not in SAME_REQUEST:
            raise ValueError(f"InBatchNegatives.same must be one of {SAME_REQUEST}, got {self.same!r}")

    def __call__(self, batch: Batch) -> Negatives:
        """Scores against every listing of the batch; the row's own listing and accidental hits masked."""
        keys = (batch.pairs.query_row if self.same == "query" else batch.pairs.request)[batch.rows]
        mask = accidental_hits(keys, batch.pairs.listing[batch.rows])
        mask.fill_diagonal_(True)  # the row's own listing is its positive, not a negative
        return Negatives(batch.query_vectors @ batch.listing_vectors.T, mask)


@dataclass(frozen=True)
class HardInBatchNegatives:
    """The ``k`` highest-scoring in-batch negatives of each row (accidental hits excluded).

    The same candidates as :class:`InBatchNegatives`, but only the ones the model currently finds hardest,
    so the loss concentrates on the listings it confuses with the positive. A row with fewer than ``k``
    valid negatives has the rest masked.
    """

    k: int = 8
    same: str = "request"

    def __post_init__(self) -> None:
        if not (isinstance(self.k, int) and self.k > 0):
            raise ValueError(f"HardInBatchNegatives.k must be a positive integer, got {self.k!r}")
        InBatchNegatives(self.same)  # validates ``same``

    def __call__(self, batch: Batch) -> Negatives:
        """Top-``k`` unmasked in-batch scores per row."""
        every = InBatchNegatives(self.same)(batch)
        k = min(self.k, every.scores.shape[1])
        masked = every.scores.masked_fill(every.mask, float("-inf"))
        top, where = masked.topk(k, dim=1)
        return Negatives(every.scores.gather(1, where), torch.isinf(top))


def row_negatives(batch: Batch, ids: np.ndarray) -> Negatives:
    """Score each row's query against its own negatives ``ids`` ``(B, n)`` (``PAD``: none, masked).

    Each distinct listing goes through the product tower once, with gradients, so the loss trains
    both towers on these negatives as it does on in-batch ones. The result is bit-for-bit reproducible.
    """
    ids = np.asarray(ids, dtype=np.int64)
    if ids.ndim != 2 or ids.shape[0] != len(batch.rows):
        raise ValueError(f"need one row of negative ids per batch row, got shape {ids.shape} for "
                         f"{len(batch.rows)} rows")
    valid = ids >= 0
    mask = torch.from_numpy(~valid)
    if not valid.any():
        return Negatives(torch.zeros(ids.shape), mask)
    unique, inverse = np.unique(ids[valid], return_inverse=True)
    vectors = batch.encode_listings(unique)
    index = np.zeros(ids.shape, dtype=np.int64)
    index[valid] = inverse
    # score every row against every distinct listing, then pick each row's own: the backward pass of
    # a gather is a per-row scatter, whose sums do not depend on thread timing, whereas indexing the
    # vectors by ``index`` sums duplicate listings' gradients in a nondeterministic order
    scores = (batch.query_vectors @ vectors.T).gather(1, torch.from_numpy(index))
    return Negatives(scores.masked_fill(mask, 0.0), mask)


def sample_existing(catalogue: Catalogue, days: np.ndarray, n: int, generator: torch.Generator | None = None
                    ) -> np.ndarray:
    """``(B, n)`` listing ids drawn uniformly, with replacement, from the listings existing at each day.

    Listings are sorted by creation day once, so the listings of day ``d`` are a prefix and a draw is
    one uniform index into it. A day before the first listing gets ``PAD``.
    """
    order = np.argsort(catalogue.created_day, kind="stable")
    created = catalogue.created_day[order]
    count = np.searchsorted(created, np.asarray(days, dtype=float), side="right")
    u = torch.rand((len(count), n), generator=generator, dtype=torch.float64).numpy()
    pick = np.minimum((u * count[:, None]).astype(np.int64), np.maximum(count[:, None] - 1, 0))
    return np.where(count[:, None] > 0, catalogue.listing_id[order][pick], PAD)


@dataclass(frozen=True)
class UniformNegatives:
    """``n`` listings drawn uniformly from the catalogue once per batch, shared by its rows.

    Most are far from the query (a necklace for a query about mugs), which makes them easy: they teach
    the model the coarse layout of the catalogue. One shared pool per batch (as in mixed negative
    sampling, Yang et al. 2020) costs one product-tower pass over ``n`` listings rather than ``n`` per
    row. The pool is drawn from the listings that exist at the batch's latest request; each row masks
    the pooled listings created after its own request (so what it keeps is a uniform sample of the
    catalogue of its time) and those engaged for its query in the training pairs (the observable
    false-negative guard, :meth:`~retrieval_lib.training.pairs.TrainingPairs.engaged_for_query`; the
    row's positive is one of them). Draws use torch's generator, which the trainer seeds.
    """

    n: int = 256

    def __post_init__(self) -> None:
        if not (isinstance(self.n, int) and self.n >= 1):
            raise ValueError(f"UniformNegatives.n must be a positive integer, got {self.n!r}")

    def draw(self, batch: Batch) -> tuple[np.ndarray, np.ndarray]:
        """The pool ``(n,)`` of listing ids and the ``(B, n)`` mask of pooled listings each row must skip."""
        catalogue = batch.need_catalogue("UniformNegatives")
        days = batch.pairs.day[batch.rows]
        pool = sample_existing(catalogue, days.max(keepdims=True), self.n)[0]
        ids = np.broadcast_to(pool, (len(batch.rows), self.n))
        skip = ~catalogue.existing(ids, days) | batch.pairs.engaged_for_query(batch.rows, ids)
        return pool, skip

    def sample(self, batch: Batch) -> np.ndarray:
        """``(B, n)`` listing ids per row: existing at its request, never engaged for its query (``PAD``: skipped)."""
        pool, skip = self.draw(batch)
        return np.where(skip, PAD, pool[None, :])

    def __call__(self, batch: Batch) -> Negatives:
        """Scores of every row against the pool (encoded once, with gradients), skipped listings masked."""
        pool, skip = self.draw(batch)
        if (pool < 0).all():
            return Negatives(torch.zeros(skip.shape), torch.ones(skip.shape, dtype=torch.bool))
        vectors = batch.encode_listings(pool)  # one day for the whole pool: all real ids or all padding
        return Negatives(batch.query_vectors @ vectors.T, torch.from_numpy(skip))
