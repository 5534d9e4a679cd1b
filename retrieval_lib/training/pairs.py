"""Training pairs from the logs: each engaged (request, listing) with its interaction type.

A pair is one impression the buyer engaged with: clicked, added to cart or bought. It keeps its
request context (session, user, query, time) for personalised models and its strongest interaction
type for losses that treat a purchase differently from a click (chapter 8).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd

from retrieval_lib.marketplace import ObservedMarketplace

#: Interaction types from the weakest to the strongest; a pair's type is the strongest stage it reached.
INTERACTIONS: tuple[str, ...] = ("click", "cart", "purchase")


def engaged_pairs(observed: ObservedMarketplace, split: str = "train") -> pd.DataFrame:
    """``session_id, user_id, query, day, listing_id, interaction`` of every engaged impression of a window.

    ``interaction`` is the strongest stage the impression reached (``click``, ``cart`` or ``purchase``).
    Query-only models read ``query`` and ``listing_id``; personalised ones also need the session's context.
    """
    logs = observed.logs(split)
    engaged = logs[logs["click"] | logs["cart"] | logs["purchase"]]
    strongest = np.select([engaged["purchase"], engaged["cart"]], ["purchase", "cart"], default="click")
    out = engaged[["session_id", "user_id", "query", "day", "listing_id"]].reset_index(drop=True)
    out["interaction"] = pd.Categorical(strongest, categories=list(INTERACTIONS), ordered=True)
    return out


def validation_pairs(observed: ObservedMarketplace, max_pairs: int = 3_000, seed: int = 0) -> pd.DataFrame:
    """A fixed sample of the validation window's engaged pairs: the observable early-stopping signal.

    The sample depends on ``seed`` only, never on a training seed, so runs with different training seeds
    stop on the same yardstick.
    """
    valid = engaged_pairs(observed, "valid")
    if len(valid) > max_pairs:
        valid = valid.sample(n=max_pairs, random_state=seed).sort_index()
    return valid.reset_index(drop=True)


def request_keys(query_rows: np.ndarray, user_ids: np.ndarray) -> np.ndarray:
    """One integer per distinct (query, user) request, a key of the accidental-hit mask.

    A listing another buyer engaged with under the same query is a positive for *that* buyer, not for
    this one: masking it as an accidental hit (as the query-only models of chapters 4 and 5 must) would
    remove exactly the negatives that teach the model to tell two buyers of ``necklace`` apart.
    """
    pairs = np.stack([np.asarray(query_rows, dtype=np.int64), np.asarray(user_ids, dtype=np.int64)], axis=1)
    return np.unique(pairs, axis=0, return_inverse=True)[1].reshape(-1)


@dataclass(frozen=True)
class TrainingPairs:
    """Engaged pairs as the arrays a two-tower trainer reads, one row per pair.

    ``query_text[query_row[i]]`` is pair ``i``'s query (each distinct text once, so encoders can cache
    it); ``request`` keys the (query, user) request; ``interaction`` indexes :data:`INTERACTIONS`.
    """

    frame: pd.DataFrame
    query_text: list[str]
    query_row: np.ndarray
    user: np.ndarray
    request: np.ndarray
    listing: np.ndarray
    interaction: np.ndarray
    day: np.ndarray

    @classmethod
    def of(cls, pairs: pd.DataFrame) -> TrainingPairs:
        """Index a frame of :func:`engaged_pairs`."""
        text, query_row = np.unique(pairs["query"].to_numpy(dtype=object).astype(str), return_inverse=True)
        users = pairs["user_id"].to_numpy(dtype=np.int64)
        known = pairs["interaction"].isin(INTERACTIONS)
        if not known.all():
            bad = pairs.loc[~known, "interaction"].iloc[0]
            raise ValueError(f"unknown interaction type {bad!r}; expected one of {INTERACTIONS}")
        interaction = pd.Categorical(pairs["interaction"], categories=list(INTERACTIONS)).codes
        return cls(pairs.reset_index(drop=True), list(text), query_row.reshape(-1), users,
                   request_keys(query_row.reshape(-1), users), pairs["listing_id"].to_numpy(dtype=np.int64),
                   interaction.astype(np.int64), pairs["day"].to_numpy(dtype=np.float64))

    def __len__(self) -> int:
        return len(self.listing)

    @cached_property
    def _engaged_keys(self) -> tuple[int, np.ndarray]:
        width = int(self.listing.max()) + 1 if len(self) else 1
        return width, np.unique(self.query_row.astype(np.int64) * width + self.listing)

    def engaged_for_query(self, rows: np.ndarray, ids: np.ndarray) -> np.ndarray:
        """``(B, n)``: whether listing ``ids[i, j]`` was engaged for the query of pair ``rows[i]``.

        The observable false-negative guard of chapter 7: a listing another buyer engaged with after
        typing the same words is likely relevant to this request too, so it is never used as a negative;
        the request's own positives are among these. Padding ids (``-1``) give ``False``.
        """
        width, keys = self._engaged_keys
        ids = np.asarray(ids, dtype=np.int64)
        if keys.size == 0:
            return np.zeros(ids.shape, dtype=bool)
        inside = (ids >= 0) & (ids < width)
        query = self.query_row[np.asarray(rows, dtype=np.int64)].astype(np.int64)[:, None]
        wanted = query * width + np.where(inside, ids, 0)
        found = np.searchsorted(keys, wanted).clip(max=keys.size - 1)
        return inside & (keys[found] == wanted)
