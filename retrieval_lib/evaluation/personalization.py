"""What a buyer's history changes, and what a training signal asks a model to tell apart.

Two observable diagnostics for chapter 6: how much of a request's top ``k`` the history replaces
(the same buyer and request, with and without it), and how often the negatives a model trains
against are the same product type as the listing the buyer engaged with (in-batch negatives against
the other listings of the logged page). Both read logs and the catalogue only.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from retrieval_lib.marketplace import ObservedMarketplace
from retrieval_lib.serving.base import PAD, SessionRetriever
from retrieval_lib.training.pairs import engaged_pairs


def history_overlap(personal: SessionRetriever, unpersonal: SessionRetriever, sessions: pd.DataFrame,
                    k: int = 100) -> np.ndarray:
    """Per session, the share of the ``k`` listings that both retrievers return (1.0: history changed nothing).

    ``personal`` and ``unpersonal`` should differ only in whether they read the buyer's history.
    """
    if k < 1:
        raise ValueError(f"k must be positive, got {k}")
    a, b = personal.retrieve(sessions, k), unpersonal.retrieve(sessions, k)
    if a.shape != b.shape:
        raise ValueError(f"the retrievers returned shapes {a.shape} and {b.shape}")
    shared = [np.intersect1d(x[x != PAD], y[y != PAD]).size for x, y in zip(a, b, strict=True)]
    return np.asarray(shared, dtype=float) / k


def same_type_share(observed: ObservedMarketplace, split: str = "train", batch_size: int = 512,
                    n_batches: int = 200, seed: int = 0) -> dict[str, float]:
    """How often a negative has the engaged listing's product type (its taxonomy path).

    ``in_batch``: over random batches of ``batch_size`` engaged pairs, the share of (positive, other
    row's listing) pairs of the same type, what in-batch negatives contrast. ``page``: over clicked
    impressions, the share of the other listings shown on the same page that have the clicked
    listing's type, what the buyer actually chose among.
    """
    if batch_size < 2:
        raise ValueError(f"batch_size must be at least 2, got {batch_size}")
    types = pd.factorize(observed.listings.set_index("listing_id")["taxonomy"].sort_index())[0]
    pair_types = types[engaged_pairs(observed, split)["listing_id"].to_numpy()]
    if pair_types.size < batch_size:
        raise ValueError(f"the {split!r} window has {pair_types.size} engaged pairs, fewer than a batch")
    rng = np.random.default_rng(seed)
    same = []
    for _ in range(n_batches):
        counts = np.bincount(rng.choice(pair_types, batch_size, replace=False))
        same.append((counts * (counts - 1)).sum() / (batch_size * (batch_size - 1)))
    logs = observed.logs(split)
    logs = logs.assign(type=types[logs["listing_id"].to_numpy()])
    per_type = logs.groupby(["session_id", "type"])["listing_id"].transform("size")
    shown = logs.groupby("session_id")["listing_id"].transform("size")
    clicked = logs["click"].to_numpy() & (shown.to_numpy() > 1)
    page = (per_type.to_numpy() - 1)[clicked] / (shown.to_numpy() - 1)[clicked]
    return {"in_batch": float(np.mean(same)), "page": float(page.mean()) if page.size else float("nan")}
