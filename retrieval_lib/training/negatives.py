"""Negative sources for two-tower training: which listings each request is contrasted with.

A source looks at a training batch and returns, for every row, the scores of its query against some
negative listings plus a mask of "negatives" that must be ignored because they are really positives
(accidental hits). The trainer adds one loss per source, so chapter 7 can mix uniform, in-batch and
mined hard negatives by adding sources here, without touching any model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from retrieval_lib.training.pairs import TrainingPairs


@dataclass
class Batch:
    """One training batch: its pair rows, both towers' vectors, and a way to encode other listings.

    ``query_vectors[i]`` and ``listing_vectors[i]`` are row ``rows[i]``'s request and engaged listing;
    ``encode_listings(ids)`` runs the product tower (with gradients) for sources that bring their own
    listings; ``step`` counts optimiser steps from 0.
    """

    rows: np.ndarray
    pairs: TrainingPairs
    query_vectors: torch.Tensor
    listing_vectors: torch.Tensor
    encode_listings: Callable[[np.ndarray], torch.Tensor]
    step: int = 0


@dataclass
class Negatives:
    """Scores ``(B, N)`` of each row's query against ``N`` negatives, and ``mask`` (``True``: ignore)."""

    scores: torch.Tensor
    mask: torch.Tensor

    def __post_init__(self) -> None:
        if self.scores.shape != self.mask.shape:
            raise ValueError(f"scores {tuple(self.scores.shape)} and mask {tuple(self.mask.shape)} differ in shape")


class NegativeSource(Protocol):
    """Anything that gives a batch its negatives."""

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
