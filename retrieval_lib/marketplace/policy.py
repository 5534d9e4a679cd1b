"""The production-like logging policy and the buyers' funnel that produce the interaction logs.

Production search, as the logs will remember it: BM25 candidates, re-ranked by BM25 score times an
observable quality multiplier (as inverted-index retrieval at Etsy does), with some slots given to
exploration from the product type a query classifier predicts, and a fallback to that type when
nothing matches lexically. Buyers then examine results with position bias and click, add to cart and
purchase according to their (latent) utility.
"""

from __future__ import annotations

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


def show_pages(cfg: MarketplaceConfig, latent: LatentTruth, listings: pd.DataFrame, queries: list[str],
               rng: np.random.Generator, progress: bool = False) -> np.ndarray:
    """The result page (``n_sessions x page_size`` listing ids, ``PAD`` for empty slots) of every session."""
    n = len(queries)
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
        top = np.argsort(-score, axis=1, kind="stable")[:, : cfg.page_size]
        page = np.take_along_axis(cand, top, axis=1)
        page = np.where(np.isfinite(np.take_along_axis(score, top, axis=1)), page, PAD)
        pages[rows] = page
    # exploration slots and empty slots: a listing of the product type a query classifier predicts
    explore = (rng.random(pages.shape) < cfg.explore_rate) | (pages == PAD)
    correct = rng.random(n) < cfg.classifier_accuracy
    predicted_type = np.where(correct, intent["type"], rng.integers(L["type"].max() + 1, size=n))
    by_type = [np.flatnonzero(L["type"] == t) for t in range(L["type"].max() + 1)]
    rows, cols = np.nonzero(explore)
    picks = np.empty(rows.size, dtype=np.int64)
    u = rng.random(rows.size)
    for t in np.unique(predicted_type[rows]):
        sel = predicted_type[rows] == t
        picks[sel] = by_type[t][(u[sel] * by_type[t].size).astype(np.int64)]
    fresh = L["created_day"][picks] <= intent["day"][rows]
    pages[rows[fresh], cols[fresh]] = picks[fresh]
    # a listing appears at most once per page
    srt = np.sort(pages, axis=1)
    dup_any = (srt[:, 1:] == srt[:, :-1]) & (srt[:, 1:] >= 0)
    for r in np.flatnonzero(dup_any.any(axis=1)):
        _, first = np.unique(pages[r], return_index=True)
        keep = np.zeros(cfg.page_size, bool)
        keep[first] = True
        pages[r] = np.where(keep, pages[r], PAD)
    return pages


def simulate_funnel(cfg: MarketplaceConfig, latent: LatentTruth, pages: np.ndarray, rng: np.random.Generator
                    ) -> pd.DataFrame:
    """Impressions with graded outcomes: examine (position bias) -> click -> add to cart -> purchase.

    One noisy utility draw per impression decides all stages: a click needs it above the click
    threshold, a cart above the cart threshold, and at most one purchase per session goes to the best
    carted listing if it clears the purchase threshold.
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
    value += rng.gumbel(size=lid.size)
    examined = rng.random(lid.size) < (1.0 / (1.0 + pos)) ** cfg.position_bias
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
