"""The buyer's taste in words: which words the listings they engaged with *before* a request carry.

A listing's title, tags and taxonomy name its look often enough ("boho", "navy", "minimalist") that
the share of a buyer's earlier engaged listings carrying a word is an observable reading of their
taste. Everything here reads logs and the catalogue only (never latent truth), and a profile counts
only engagements strictly earlier than the request: earlier days, or earlier sessions of the same day.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.feature_extraction.text import CountVectorizer

from retrieval_lib.marketplace import ObservedMarketplace
from retrieval_lib.text.words import listing_documents, tokenize

#: A word must occur in at least this many listings to enter the taste vocabulary.
TASTE_MIN_DF = 5


@dataclass(frozen=True)
class ListingWords:
    """Which vocabulary word each listing's text carries: ``matrix[listing_id, v]`` is 1.0 or 0.0."""

    vocabulary: np.ndarray
    matrix: sp.csr_matrix

    def dense(self) -> np.ndarray:
        """The same matrix as a dense float32 array (listings x words)."""
        return np.asarray(self.matrix.todense(), dtype=np.float32)


def listing_words(listings: pd.DataFrame, min_df: int = TASTE_MIN_DF) -> ListingWords:
    """Binary bag of words over title, tags and taxonomy; rows in catalogue order (listing ids 0, 1, ...)."""
    if min_df < 1:
        raise ValueError(f"min_df must be at least 1, got {min_df}")
    if not np.array_equal(listings["listing_id"].to_numpy(), np.arange(len(listings))):
        raise ValueError("listing_words needs listing ids numbered 0, 1, ... in catalogue order")
    vectorizer = CountVectorizer(tokenizer=tokenize, lowercase=False, binary=True, min_df=min_df, token_pattern=None)
    try:
        matrix = vectorizer.fit_transform(listing_documents(listings))
    except ValueError as err:  # no word reaches min_df
        raise ValueError(f"no word occurs in {min_df} or more listings") from err
    return ListingWords(vectorizer.get_feature_names_out(), matrix.astype(np.float32).tocsr())


def engagements(observed: ObservedMarketplace) -> pd.DataFrame:
    """Every observable engagement: ``user_id, day, session_id, listing_id``, sorted by user and time.

    The archive (clicks before day 0, ``session_id = -1``) and the logged clicks, carts and purchases.
    """
    imp = observed.impressions
    logged = imp[imp["click"] | imp["cart"] | imp["purchase"]].merge(
        observed.sessions[["session_id", "user_id", "day"]], on="session_id", validate="many_to_one")
    archive = observed.archive
    out = pd.DataFrame({
        "user_id": np.concatenate([archive["user_id"].to_numpy(np.int64), logged["user_id"].to_numpy(np.int64)]),
        "day": np.concatenate([archive["day"].to_numpy(float), logged["day"].to_numpy(float)]),
        "session_id": np.concatenate([np.full(len(archive), -1, np.int64), logged["session_id"].to_numpy(np.int64)]),
        "listing_id": np.concatenate([archive["listing_id"].to_numpy(np.int64),
                                      logged["listing_id"].to_numpy(np.int64)]),
    })
    return out.sort_values(["user_id", "day", "session_id"], kind="stable").reset_index(drop=True)


def earlier_engagements(events: pd.DataFrame, user_ids: np.ndarray, days: np.ndarray,
                        session_ids: np.ndarray) -> sp.csr_matrix:
    """Requests x events selector: row ``i`` has a 1 at each engagement of its user strictly before it.

    "Before" is by ``(day, session_id)``: an engagement of the request's own session, or of a later
    one on the same day, is never counted. ``events`` comes from :func:`engagements` (sorted by user
    and time), so a request's earlier engagements are a prefix of its user's block.
    """
    user_ids = np.asarray(user_ids, dtype=np.int64)
    days = np.asarray(days, dtype=float)
    session_ids = np.asarray(session_ids, dtype=np.int64)
    if not (len(user_ids) == len(days) == len(session_ids)):
        raise ValueError("user_ids, days and session_ids must have one entry per request")
    n_req, n_ev = len(user_ids), len(events)
    ev_users, ev_days, ev_sids = (events[c].to_numpy() for c in ("user_id", "day", "session_id"))
    same_user = ev_users[1:] == ev_users[:-1]
    later = (ev_days[1:] > ev_days[:-1]) | ((ev_days[1:] == ev_days[:-1]) & (ev_sids[1:] >= ev_sids[:-1]))
    if np.any(ev_users[1:] < ev_users[:-1]) or np.any(same_user & ~later):
        raise ValueError("events must be sorted by user, day and session (use engagements())")
    # Sort requests and events together by (user, day, session, kind), requests first at a tie.
    users = np.concatenate([events["user_id"].to_numpy(np.int64), user_ids])
    day = np.concatenate([events["day"].to_numpy(float), days])
    sid = np.concatenate([events["session_id"].to_numpy(np.int64), session_ids])
    is_event = np.concatenate([np.ones(n_ev, np.int64), np.zeros(n_req, np.int64)])
    order = np.lexsort((is_event, sid, day, users))
    counted = np.cumsum(is_event[order])  # events up to and including each position
    before_all = np.empty(n_ev + n_req, np.int64)
    before_all[order] = counted - is_event[order]  # events strictly before each position
    before = before_all[n_ev:]
    start = np.searchsorted(ev_users, user_ids, side="left")  # first event of the user (events are sorted)
    n = np.maximum(before - start, 0)
    rows = np.repeat(np.arange(n_req), n)
    offsets = np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n)
    cols = np.repeat(start, n) + offsets
    return sp.csr_matrix((np.ones(cols.size, np.float32), (rows, cols)), shape=(n_req, n_ev))


def taste_profiles(events: pd.DataFrame, words: ListingWords, user_ids: np.ndarray, days: np.ndarray,
                   session_ids: np.ndarray) -> np.ndarray:
    """``(requests, words)``: the share of the user's earlier engaged listings that carry each word.

    A request with no earlier engagement (a new buyer, or an anonymous one with user id ``-1``) gets
    a row of zeros: no taste is known.
    """
    select = earlier_engagements(events, user_ids, days, session_ids)
    engaged_words = words.matrix[events["listing_id"].to_numpy()]
    counts = np.asarray(select.sum(1), dtype=np.float32)
    shares = np.asarray((select @ engaged_words).todense(), dtype=np.float32)
    return shares / np.maximum(counts, 1.0)
