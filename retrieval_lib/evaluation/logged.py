"""Recall on the logs: the observable signal that steers training (early stopping) and choices.

The latent labels are kept for evaluation; training and every choice read only logged engagement.
"""

from __future__ import annotations

import pandas as pd

from retrieval_lib.serving.base import SessionRetriever


def logged_recall(retriever: SessionRetriever, pairs: pd.DataFrame, k: int = 100) -> float:
    """Share of engaged pairs whose listing the retriever ranks in the top ``k`` for the pair's request.

    ``pairs`` are logged (request, listing) pairs, e.g. :func:`~retrieval_lib.training.pairs.validation_pairs`:
    each carries its session context, so query-only and personalised retrievers are scored alike.
    Computed from observable logs only, so it can steer training without touching the latent labels.
    """
    if len(pairs) == 0:
        return float("nan")
    ids = retriever.retrieve(pairs, k)
    return float((ids == pairs["listing_id"].to_numpy()[:, None]).any(axis=1).mean())
