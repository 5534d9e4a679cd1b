"""Each request's user history: what the user searched, clicked and bought in *earlier* sessions.

A history never holds the request's own outcome or anything later, and every item remembers the
session it came from, so a test can check that.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from retrieval_lib.marketplace import ObservedMarketplace

#: History item types, in the order of the type embedding.
HISTORY_TYPES: tuple[str, ...] = ("query", "click", "purchase")


@dataclass(frozen=True)
class UserHistory:
    """The most recent history items before each session.

    ``texts`` are the distinct item texts (queries typed; the title and tags of clicked and of
    purchased listings, as the buyer saw them). For session row ``i``: ``item[i, j]`` indexes ``texts``
    (``-1`` pads), ``kind[i, j]`` indexes :data:`HISTORY_TYPES`, ``listing[i, j]`` is the engaged
    listing (``-1`` for queries and padding) and ``source[i, j]`` the session the item comes from
    (``-1`` for padding), so that a test can check every item against the time of the request. Items
    are oldest first; the last column is the most recent.
    """

    session_ids: np.ndarray
    texts: list[str]
    item: np.ndarray
    kind: np.ndarray
    listing: np.ndarray
    source: np.ndarray

    @cached_property
    def _sorted(self) -> tuple[np.ndarray, np.ndarray]:
        """The session ids in ascending order and the row each one sits in (built once, then reused)."""
        order = np.argsort(self.session_ids, kind="stable")
        return self.session_ids[order], order

    def rows(self, session_ids: np.ndarray) -> np.ndarray:
        """Row of each session id (a ``KeyError`` names the first unknown one).

        A binary search over the sorted ids: a serving request looks up one row in microseconds
        instead of indexing every session again.
        """
        wanted = np.asarray(session_ids)
        ids, order = self._sorted
        if len(ids) == 0:
            if wanted.size:
                raise KeyError(f"no history for session {wanted.flat[0]}")
            return np.empty(wanted.shape, dtype=np.int64)
        at = np.searchsorted(ids, wanted).clip(max=len(ids) - 1)
        missing = ids[at] != wanted
        if missing.any():
            raise KeyError(f"no history for session {wanted[missing].flat[0]}")
        return order[at]

    def lengths(self) -> np.ndarray:
        """Number of real (non-padding) items per session."""
        return (self.item >= 0).sum(1)


def user_histories(observed: ObservedMarketplace, max_items: int = 16, current: bool = False) -> UserHistory:
    """Build every session's history from the user's earlier sessions, oldest item first.

    A session contributes, once it is over, its query and the listings clicked and purchased in it.
    With ``current``, one extra row per user (session id ``-1 - user_id``) holds the history as of the
    end of the logs, which is what serving a new request needs.
    """
    if max_items < 1:
        raise ValueError(f"max_items must be positive, got {max_items}")
    sessions = observed.sessions.sort_values(["day", "session_id"], kind="stable")
    imp = observed.impressions
    engaged = imp[imp["click"] | imp["purchase"]]
    clicks = engaged[engaged["click"]].groupby("session_id")["listing_id"].agg(list)
    buys = engaged[engaged["purchase"]].groupby("session_id")["listing_id"].agg(list)
    texts_of = [f"{title} | {' '.join(tags)}" for title, tags in zip(observed.listings["title"].astype(str),
                                                                       observed.listings["tags"], strict=True)]

    text_index: dict[str, int] = {}

    def text_id(text: str) -> int:
        return text_index.setdefault(text, len(text_index))

    recent: dict[int, deque] = {}
    out_ids, out_items = [], []

    def snapshot(user: int) -> list[tuple[int, int, int, int]]:
        return list(recent.get(user, ()))

    for sid, user, query in zip(sessions["session_id"].to_numpy(), sessions["user_id"].to_numpy(),
                                sessions["query"].astype(str).to_numpy(), strict=True):
        out_ids.append(sid)
        out_items.append(snapshot(user))
        items = recent.setdefault(user, deque(maxlen=max_items))
        items.append((text_id(query), 0, -1, sid))
        for lid in clicks.get(sid, ()):
            items.append((text_id(texts_of[lid]), 1, lid, sid))
        for lid in buys.get(sid, ()):
            items.append((text_id(texts_of[lid]), 2, lid, sid))
    if current:
        for user in observed.users["user_id"].to_numpy():
            out_ids.append(-1 - int(user))
            out_items.append(snapshot(user))
    n = len(out_ids)
    item = np.full((n, max_items), -1, dtype=np.int64)
    kind = np.zeros((n, max_items), dtype=np.int64)
    listing = np.full((n, max_items), -1, dtype=np.int64)
    source = np.full((n, max_items), -1, dtype=np.int64)
    for i, items in enumerate(out_items):
        if items:
            arr = np.array(items, dtype=np.int64)
            cols = slice(max_items - len(arr), max_items)
            item[i, cols], kind[i, cols], listing[i, cols], source[i, cols] = arr.T
    texts = [""] * len(text_index)
    for text, i in text_index.items():
        texts[i] = text
    return UserHistory(np.array(out_ids, dtype=np.int64), texts, item, kind, listing, source)
