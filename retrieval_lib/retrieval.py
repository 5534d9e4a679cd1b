"""Conventions every retriever shares: the padding id, and answering each distinct query once."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

#: Id that pads result lists shorter than ``k`` (never a listing id).
PAD = -1


def per_unique_query(sessions: pd.DataFrame, search: Callable[[list[str]], np.ndarray]) -> np.ndarray:
    """Call ``search`` once on the distinct queries of ``sessions`` and give every session its query's row.

    Head queries repeat thousands of times; a query-only retriever needs to answer each of them once.
    """
    unique, inverse = np.unique(sessions["query"].to_numpy(dtype=object).astype(str), return_inverse=True)
    return search(list(unique))[inverse]

