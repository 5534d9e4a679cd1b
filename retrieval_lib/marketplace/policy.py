"""The production-like logging policy and the buyers' funnel that produce the interaction logs.

Production search, as the logs will remember it: BM25 candidates, re-ranked by BM25 score times an
observable quality multiplier (as inverted-index retrieval at Etsy does), with some slots given to
exploration from the product type a query classifier predicts, and a fallback to that type when
nothing matches lexically. Buyers then examine results with position bias and click, add to cart and
purchase according to their (latent) utility.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from retrieval_lib.baselines.bm25 import BM25Retriever
from retrieval_lib.marketplace.behaviour import utility
from retrieval_lib.marketplace.config import MarketplaceConfig
from retrieval_lib.serving.base import PAD

if TYPE_CHECKING:
    from retrieval_lib.marketplace.data import LatentTruth


def quality_multiplier(listings: pd.DataFrame) -> np.ndarray:
    """Observable, query-independent quality in [0.75, 1.25] from rating and review count."""
    rating = listings["rating"].fillna(4.0).to_numpy()
    reviews = np.log1p(listings["review_count"].to_numpy())
    z = (rating - 4.3) / 0.4 + (reviews - reviews.mean()) / (reviews.std() + 1e-9)
    return 0.75 + 0.5 / (1.0 + np.exp(-z / 2))


#: The constant of reciprocal-rank fusion: a listing at rank r (from 1) of a source scores 1 / (RRF_K + r).
RRF_K = 60


def fuse_rankings(rankings: list[np.ndarray], depth: int, k: int = RRF_K) -> np.ndarray:
    """Reciprocal-rank fusion of ranked id lists: ``(n, depth)`` ids by the sum of ``1 / (k + rank)``.

    Each ranking is ``(n, d_i)`` listing ids, best first, ``PAD`` padded; a listing in several rankings
    adds up its scores. Ties go to the smaller listing id. One ranking alone comes back unchanged
    (cut to ``depth``). Fusing ranks needs no common score scale, which BM25 and cosines lack.
    """
    if not rankings or depth < 1:
        raise ValueError("need at least one ranking and depth >= 1")
    n = rankings[0].shape[0]
    if any(r.ndim != 2 or r.shape[0] != n for r in rankings):
        raise ValueError(f"every ranking must be 2-D with {n} rows, got {[r.shape for r in rankings]}")
    ids = np.concatenate(rankings, axis=1).astype(np.int64)
    gain = np.concatenate([np.broadcast_to(1.0 / (k + 1 + np.arange(r.shape[1])), r.shape) for r in rankings],
                          axis=1)
    row = np.repeat(np.arange(n), ids.shape[1]).reshape(ids.shape)
    keep = ids != PAD
    row, ids, gain = row[keep], ids[keep], gain[keep]
    order = np.lexsort((ids, row))
    row, ids, gain = row[order], ids[order], gain[order]
    first = np.flatnonzero(np.r_[True, (row[1:] != row[:-1]) | (ids[1:] != ids[:-1])])
    total = np.add.reduceat(gain, first) if first.size else gain
    row, ids = row[first], ids[first]
    best = np.lexsort((ids, -total, row))
    row, ids = row[best], ids[best]
    rank = np.arange(row.size) - np.searchsorted(row, row)
    fused = np.full((n, depth), PAD, dtype=np.int64)
    top = rank < depth
    fused[row[top], rank[top]] = ids[top]
    return fused


def show_pages(cfg: MarketplaceConfig, latent: LatentTruth, listings: pd.DataFrame, queries: list[str],
               rng: np.random.Generator, progress: bool = False, extra: np.ndarray | None = None,
               common: int | None = None, session_ids: np.ndarray | None = None) -> np.ndarray:
    """The result page (``n_sessions x page_size`` listing ids, ``PAD`` for empty slots) of every session.

    ``extra`` (``n_sessions x k`` listing ids, best first, ``PAD`` padded) adds a second candidate
    source, as a new retrieval system is added beside the old one: its listings that exist at the
    request are fused with the lexical ranking (:func:`fuse_rankings`) before the page is cut.
    Exploration slots come from ``rng`` (the world's logs), or, with ``common`` (a seed), from
    :func:`keyed_exploration` of the sessions' ``session_ids`` (default: row numbers): then two pages
    for the same sessions explore the same slots with the same listings whatever else they show
    (common random numbers; ``rng``'s draws would shift after the first page whose empty slots differ).
    """
    n = len(queries)
    if extra is not None and (extra.ndim != 2 or extra.shape[0] != n):
        raise ValueError(f"extra candidates must have one row per session ({n}), got shape {extra.shape}")
    intent, L = latent.intents, latent.listings
    unique, inverse = np.unique(np.asarray(queries, dtype=object).astype(str), return_inverse=True)
    bm25 = BM25Retriever(n_threads=-1).fit(listings)
    cand_u, score_u = bm25.search(list(unique), k=cfg.candidate_depth, progress=progress)
    qmult = quality_multiplier(listings)
    pages = np.full((n, cfg.page_size), PAD, dtype=np.int64)
    chunk = 20_000
    for start in range(0, n, chunk):
        rows = np.arange(start, min(n, start + chunk))
        cand = cand_u[inverse[rows]]
        score = score_u[inverse[rows]] * qmult[np.where(cand >= 0, cand, 0)]
        ok = (cand >= 0) & (L["created_day"][np.where(cand >= 0, cand, 0)] <= intent["day"][rows][:, None])
        score = np.where(ok, score, -np.inf)
        if extra is None:
            top = np.argsort(-score, axis=1, kind="stable")[:, : cfg.page_size]
            page = np.take_along_axis(cand, top, axis=1)
            page = np.where(np.isfinite(np.take_along_axis(score, top, axis=1)), page, PAD)
        else:
            order = np.argsort(-score, axis=1, kind="stable")
            lexical = np.where(np.isfinite(np.take_along_axis(score, order, axis=1)),
                               np.take_along_axis(cand, order, axis=1), PAD)
            more = extra[rows]
            exists = (more >= 0) & (L["created_day"][np.where(more >= 0, more, 0)] <= intent["day"][rows][:, None])
            page = fuse_rankings([lexical, np.where(exists, more, PAD)], cfg.page_size)
        pages[rows] = page
    if common is not None:
        ids = np.arange(n, dtype=np.int64) if session_ids is None else np.asarray(session_ids, dtype=np.int64)
        if ids.shape != (n,):
            raise ValueError(f"session_ids must hold one id per session ({n}), got shape {ids.shape}")
        return keyed_exploration(cfg, latent, pages, ids, common)
    # exploration slots and empty slots: a listing of the product type a query classifier predicts
    explore = (rng.random(pages.shape) < cfg.explore_rate) | (pages == PAD)
    correct = rng.random(n) < cfg.classifier_accuracy
    predicted_type = np.where(correct, intent["type"], rng.integers(L["type"].max() + 1, size=n))
    return _fill_exploration(latent, pages, explore, predicted_type, lambda rows, cols: rng.random(rows.size))


#: Streams of :func:`keyed_uniform` for keyed exploration draws (:func:`simulate_funnel` uses 0 and 1).
_EXPLORE, _CLASSIFIER, _GUESS, _PICK = 2, 3, 4, 5


def keyed_exploration(cfg: MarketplaceConfig, latent: LatentTruth, pages: np.ndarray, session_ids: np.ndarray,
                      seed: int) -> np.ndarray:
    """``pages`` with the logging policy's exploration slots, every draw keyed by (seed, request, slot).

    Each slot is an exploration slot with probability ``explore_rate`` (and every empty slot is one);
    a listing of the product type a query classifier predicts (right with probability
    ``classifier_accuracy``) takes its place. Every draw is :func:`keyed_uniform` of (seed, request,
    slot), so two arms over the same requests with the same seed explore the same slots with the same
    listings whatever their lists hold: their pages differ only where their rankings do.
    """
    n, size = pages.shape
    L = latent.listings
    sid = np.repeat(np.asarray(session_ids, dtype=np.int64), size).reshape(pages.shape)
    slot = np.broadcast_to(np.arange(size), pages.shape)
    explore = (keyed_uniform(seed, _EXPLORE, sid, slot) < cfg.explore_rate) | (pages == PAD)
    n_types = int(L["type"].max()) + 1
    right = keyed_uniform(seed, _CLASSIFIER, session_ids, np.zeros(n)) < cfg.classifier_accuracy
    guess = (keyed_uniform(seed, _GUESS, session_ids, np.zeros(n)) * n_types).astype(np.int64)
    predicted = np.where(right, latent.intents["type"], guess)
    return _fill_exploration(latent, pages, explore, predicted,
                             lambda rows, cols: keyed_uniform(seed, _PICK, sid[rows, cols], cols))


def _fill_exploration(latent: LatentTruth, pages: np.ndarray, explore: np.ndarray, predicted_type: np.ndarray,
                      pick_uniform: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> np.ndarray:
    """Put a listing of the predicted type (existing at the request) in each ``explore`` slot, once per page.

    ``pick_uniform(rows, cols)`` gives one uniform number per exploration slot, which picks the
    listing among those of the type.
    """
    L, day = latent.listings, latent.intents["day"]
    pages = pages.copy()
    by_type = [np.flatnonzero(L["type"] == t) for t in range(L["type"].max() + 1)]
    rows, cols = np.nonzero(explore)
    picks = np.empty(rows.size, dtype=np.int64)
    u = pick_uniform(rows, cols)
    for t in np.unique(predicted_type[rows]):
        sel = predicted_type[rows] == t
        picks[sel] = by_type[t][(u[sel] * by_type[t].size).astype(np.int64)]
    fresh = L["created_day"][picks] <= day[rows]
    pages[rows[fresh], cols[fresh]] = picks[fresh]
    # a listing appears at most once per page
    srt = np.sort(pages, axis=1)
    dup_any = (srt[:, 1:] == srt[:, :-1]) & (srt[:, 1:] >= 0)
    for r in np.flatnonzero(dup_any.any(axis=1)):
        _, first = np.unique(pages[r], return_index=True)
        keep = np.zeros(pages.shape[1], bool)
        keep[first] = True
        pages[r] = np.where(keep, pages[r], PAD)
    return pages


def keyed_uniform(seed: int, stream: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Uniform numbers in (0, 1) that depend only on ``(seed, stream, a, b)``, elementwise.

    A counter-based generator (SplitMix64's mixing function): the number for a (request, listing) pair
    is the same whatever else is drawn, which is what common random numbers across A/B arms need.
    """
    if seed < 0 or stream < 0:
        raise ValueError(f"seed and stream must be non-negative, got {seed} and {stream}")

    def mix(x: np.ndarray) -> np.ndarray:
        x = x ^ (x >> np.uint64(30))
        x = x * np.uint64(0xBF58476D1CE4E5B9)
        x = x ^ (x >> np.uint64(27))
        x = x * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))

    golden = np.uint64(0x9E3779B97F4A7C15)
    with np.errstate(over="ignore"):
        key = mix(np.array([seed], dtype=np.uint64) * golden + np.uint64(stream))
        x = mix(key ^ (np.asarray(a, dtype=np.int64).astype(np.uint64) * golden))
        x = mix(x ^ (np.asarray(b, dtype=np.int64).astype(np.uint64) + golden))
    return ((x >> np.uint64(11)).astype(np.float64) + 0.5) / 2.0**53


def simulate_funnel(cfg: MarketplaceConfig, latent: LatentTruth, pages: np.ndarray, rng: np.random.Generator,
                    common: int | None = None) -> pd.DataFrame:
    """Impressions with graded outcomes: examine (position bias) -> click -> add to cart -> purchase.

    One noisy utility draw per impression decides all stages: a click needs it above the click
    threshold, a cart above the cart threshold, and at most one purchase per session goes to the best
    carted listing if it clears the purchase threshold. With ``common`` (a seed) the noise of each
    (session, listing) pair and the examination draw of each (session, position) come from
    :func:`keyed_uniform` instead of ``rng``: two pages for the same sessions then share their random
    numbers wherever they show the same listing (common random numbers).
    """
    n, page = pages.shape
    sess = np.repeat(np.arange(n), page)
    pos = np.tile(np.arange(page), n)
    lid = pages.ravel()
    keep = lid >= 0
    sess, pos, lid = sess[keep], pos[keep], lid[keep]
    value = np.empty(lid.size)
    chunk = 1_000_000
    for start in range(0, lid.size, chunk):
        sl = slice(start, start + chunk)
        value[sl] = utility(latent, sess[sl], lid[sl][:, None])[:, 0]
    if common is None:
        noise = rng.gumbel(size=lid.size)
        look = rng.random(lid.size)
    else:
        noise = -np.log(-np.log(keyed_uniform(common, 0, sess, lid)))  # Gumbel, as rng.gumbel draws
        look = keyed_uniform(common, 1, sess, pos)
    value += noise
    examined = look < (1.0 / (1.0 + pos)) ** cfg.position_bias
    click = examined & (value > cfg.click_threshold)
    cart = click & (value > cfg.cart_threshold)
    purchase = np.zeros(lid.size, bool)
    cand = np.flatnonzero(cart & (value > cfg.purchase_threshold))
    if cand.size:
        order = cand[np.lexsort((-value[cand], sess[cand]))]
        first = np.r_[True, sess[order][1:] != sess[order][:-1]]
        purchase[order[first]] = True
    return pd.DataFrame({
        "session_id": sess.astype(np.int64), "listing_id": lid, "position": pos.astype(np.int16),
        "click": click, "cart": cart, "purchase": purchase,
    })
