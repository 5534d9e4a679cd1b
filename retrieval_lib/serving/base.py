"""What every retriever shares: the padding id, the search result, the retriever protocol.

A *retriever* is anything with ``retrieve(sessions, k)`` returning an ``(n, k)`` array of listing
ids for logged sessions (:class:`SessionRetriever`); that is what evaluation and training read. A
*search* over a batch of query texts or vectors returns a :class:`SearchResult` of ids and scores.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple, Protocol, runtime_checkable

import numpy as np
import pandas as pd

#: Id that pads result lists shorter than ``k`` (never a listing id).
PAD = -1


class SearchResult(NamedTuple):
    """Top-``k`` listing ids and their scores for a batch of queries, best first (``PAD`` / ``-inf`` pad)."""

    ids: np.ndarray
    scores: np.ndarray


@runtime_checkable
class SessionRetriever(Protocol):
    """Anything with ``retrieve(sessions, k)`` returning an ``(n, k)`` array of listing ids (``PAD`` pads).

    ``sessions`` has the columns ``session_id, user_id, query, day``; a query-only retriever reads
    ``query``, a personalised one also the user and the session's history.
    """

    def retrieve(self, sessions: pd.DataFrame, k: int) -> np.ndarray:  # pragma: no cover - protocol
        """Return the top-``k`` listing ids for each session."""
        ...


def per_unique_query(sessions: pd.DataFrame, search: Callable[[list[str]], np.ndarray]) -> np.ndarray:
    """Call ``search`` once on the distinct queries of ``sessions`` and give every session its query's row.

    Head queries repeat thousands of times; a query-only retriever needs to answer each of them once.
    """
    unique, inverse = np.unique(sessions["query"].to_numpy(dtype=object).astype(str), return_inverse=True)
    return search(list(unique))[inverse.reshape(-1)]
