"""The ranking stage: LambdaMART (LightGBM's ``lambdarank``) trained on logged impressions.

Etsy's A/B test added the unified model's candidates *beside* lexical retrieval, and a learned ranking
stage ordered whatever both returned *[paper]*. This module is that stage for our marketplace: a
gradient-boosted tree ensemble over the observable features of
:class:`~retrieval_lib.ranking.features.RankingFeatures`, trained with the LambdaRank objective
(Burges 2010) on logged pages, where each shown listing's gain is what the buyer did with it (0 shown,
1 clicked, 2 added to cart, 3 bought). LightGBM because scikit-learn has no listwise ranking objective
(its gradient boosting fits pointwise losses only); it runs on one thread with ``deterministic=True``,
so the same data and seed give the same trees run after run with the same LightGBM build (the pinned
wheel; LightGBM promises no more across builds or versions).

**Which logs.** One feature is the served unified model's score, and that model was fitted to the
training window's engagements: on those requests its score is in-sample, higher for exactly the
listings the buyers engaged with than it would be on new requests, and a ranker trained there would
learn to trust it too much. So the ranker learns from the *validation* window's pages, which the
unified model never fitted (they chose its stopping epoch and the boost weights, nothing more), as a
second stage of a stacked model must: a random share of that window's buyers is held out to stop the
training. The test window stays for the A/B test.

The labels are logged clicks and purchases, so they carry the logging policy's position bias: a
listing shown first is examined more often. The exploration slots temper it; the ranker is still
trained on what the old pages showed, then scores candidates that no old page showed, as a real ranker
does after a retrieval change.
"""

from __future__ import annotations

from dataclasses import dataclass

import lightgbm as lgb
import numpy as np
import pandas as pd

from retrieval_lib.evaluation.metrics import ndcg_at_k
from retrieval_lib.infra.validation import positive_ints
from retrieval_lib.marketplace import ObservedMarketplace
from retrieval_lib.ranking.features import FEATURES, RankingFeatures
from retrieval_lib.serving.base import PAD

#: Threads LightGBM scores with. Each row's score is its trees' sum in a fixed order, whichever thread
#: computes it, so the scores do not depend on this (a test checks); training keeps one thread, which
#: its determinism needs.
PREDICT_THREADS = 2
#: Gain of a shown listing by what the buyer did with it (the deepest stage reached).
GAINS = {"shown": 0, "click": 1, "cart": 2, "purchase": 3}


@dataclass(frozen=True)
class RankerConfig:
    """The ranker's settings: trees, learning rate, leaves, and how many logged requests it learns from.

    The ranker learns from the logged pages of ``window`` (the validation window: see the module's
    note), its buyers split at random into a part to fit on and a ``stop_share`` to stop on.
    ``n_trees`` is an upper bound: training stops once the held-out buyers' logged NDCG@10 has not
    improved for ``patience`` trees (logs too, so the choice reads no latent truth).
    """

    n_trees: int = 300
    learning_rate: float = 0.05
    num_leaves: int = 31
    min_child_samples: int = 50
    patience: int = 30
    max_sessions: int = 20_000
    window: str = "valid"
    stop_share: float = 0.3
    seed: int = 0

    def __post_init__(self) -> None:
        positive_ints(self, ("n_trees", "num_leaves", "min_child_samples", "patience", "max_sessions"))
        rate = self.learning_rate
        if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 < rate <= 1:
            raise ValueError(f"learning_rate must be a number in (0, 1], got {rate!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}")
        if self.window not in ("train", "valid"):
            raise ValueError(f"window must be 'train' or 'valid' (the test window is for the A/B test), "
                             f"got {self.window!r}")
        share = self.stop_share
        if isinstance(share, bool) or not isinstance(share, int | float) or not 0 < share < 1:
            raise ValueError(f"stop_share must be a number in (0, 1), got {share!r}")


def logged_pages(observed: ObservedMarketplace, split: str, max_sessions: int | None = None, seed: int = 0
                 ) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """The logged pages of ``split``'s requests with at least one click: requests, shown ids and gains.

    Returns ``(sessions, shown, gains)``: ``shown`` is ``(n, page_size)`` listing ids in page order
    (``PAD`` where a slot was empty) and ``gains`` the matching :data:`GAINS`. Requests without a click
    say nothing about order and are left out; ``max_sessions`` keeps a random sample of the rest.
    """
    sessions = observed.split(split)
    impressions = observed.impressions[observed.impressions["session_id"].isin(sessions["session_id"])]
    clicked = np.unique(impressions.loc[impressions["click"], "session_id"].to_numpy())
    if max_sessions is not None and clicked.size > max_sessions:
        clicked = np.sort(np.random.default_rng(seed).choice(clicked, size=max_sessions, replace=False))
    if not clicked.size:
        raise ValueError(f"no clicked requests in split {split!r}")
    sessions = sessions.set_index("session_id").loc[clicked].reset_index()
    shown_rows = impressions[impressions["session_id"].isin(clicked)]
    row = np.searchsorted(clicked, shown_rows["session_id"].to_numpy())
    width = int(shown_rows["position"].max()) + 1
    shown = np.full((clicked.size, width), PAD, dtype=np.int64)
    gains = np.zeros((clicked.size, width), dtype=np.int64)
    position = shown_rows["position"].to_numpy()
    shown[row, position] = shown_rows["listing_id"].to_numpy()
    gains[row, position] = (shown_rows["click"].to_numpy().astype(int) + shown_rows["cart"].to_numpy()
                            + shown_rows["purchase"].to_numpy())
    return sessions, shown, gains


class Ranker:
    """LambdaMART over :class:`RankingFeatures`: ``fit`` on logged pages, ``score`` and ``rank`` candidates.

    After ``fit``: ``valid_ndcg`` (the held-out buyers' logged NDCG@10 of the ranker's order of each
    logged page: the pages that chose where training stopped, so slightly optimistic),
    ``logged_order_ndcg`` (the same pages in the order the logging policy showed them), ``n_trees``
    (kept by early stopping), ``n_pages`` (pages fitted on and held out) and ``importance`` (total split
    gain per feature).
    """

    def __init__(self, features: RankingFeatures, config: RankerConfig | None = None) -> None:
        self.features = features
        self.config = config or RankerConfig()
        if not isinstance(self.config, RankerConfig):
            raise TypeError(f"config must be a RankerConfig, got {type(self.config).__name__}")
        self.booster: lgb.Booster | None = None

    def _params(self) -> dict:
        c = self.config
        return {"objective": "lambdarank", "metric": "ndcg", "eval_at": [10], "learning_rate": c.learning_rate,
                "num_leaves": c.num_leaves, "min_child_samples": c.min_child_samples, "seed": c.seed,
                "deterministic": True, "force_row_wise": True, "num_threads": 1, "verbose": -1,
                "label_gain": list(range(max(GAINS.values()) + 1))}

    def fit(self, observed: ObservedMarketplace) -> Ranker:
        """Train on ``config.window``'s logged pages; stop early on its held-out buyers' pages."""
        c = self.config
        sessions, shown, gains = logged_pages(observed, c.window, c.max_sessions, c.seed)
        buyers = np.unique(sessions["user_id"].to_numpy())
        if buyers.size < 2:
            raise ValueError(f"the {c.window} window's logged pages come from fewer than two buyers")
        n_stop = min(buyers.size - 1, max(1, round(c.stop_share * buyers.size)))
        held_out = np.random.default_rng(c.seed).choice(buyers, size=n_stop, replace=False)
        stop = np.isin(sessions["user_id"].to_numpy(), held_out)
        x = self.features.transform(sessions, shown)
        sets = []
        for part in (~stop, stop):
            real = shown[part] >= 0
            sets.append((x[part][real], gains[part][real], real.sum(axis=1)))
        train = lgb.Dataset(sets[0][0], sets[0][1], group=sets[0][2], feature_name=list(FEATURES),
                            free_raw_data=False)
        held = lgb.Dataset(sets[1][0], sets[1][1], group=sets[1][2], reference=train)
        self.booster = lgb.train(self._params(), train, num_boost_round=c.n_trees, valid_sets=[held],
                                 callbacks=[lgb.early_stopping(c.patience, verbose=False)])
        self.n_trees = int(self.booster.best_iteration or c.n_trees)
        self.n_pages = {"fit": int((~stop).sum()), "stop": int(stop.sum())}
        order = np.argsort(-self.predict(x[stop], shown[stop]), axis=1, kind="stable")
        held_gains = gains[stop]
        self.valid_ndcg = float(ndcg_at_k(np.take_along_axis(held_gains, order, axis=1), held_gains, 10).mean())
        self.logged_order_ndcg = float(ndcg_at_k(held_gains, held_gains, 10).mean())
        self.importance = pd.Series(self.booster.feature_importance("gain", iteration=self.n_trees),
                                    index=list(FEATURES)).sort_values(ascending=False)
        return self

    def score(self, sessions: pd.DataFrame, candidates: np.ndarray) -> np.ndarray:
        """The ranker's score of every candidate, ``-inf`` at padding."""
        candidates = np.asarray(candidates, dtype=np.int64)
        return self.predict(self.features.transform(sessions, candidates), candidates)

    def predict(self, x: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        """Scores from features already computed (``features.transform(sessions, candidates)``).

        Several rankers over the same candidates can share one feature pass this way.
        """
        if self.booster is None:
            raise RuntimeError("call fit() before scoring")
        candidates = np.asarray(candidates, dtype=np.int64)
        if x.shape != (*candidates.shape, len(FEATURES)):
            raise ValueError(f"features of shape {x.shape} do not match candidates {candidates.shape} "
                             f"with {len(FEATURES)} features")
        out = np.full(candidates.shape, -np.inf)
        real = candidates >= 0
        if real.any():
            out[real] = self.booster.predict(x[real], num_iteration=self.n_trees, num_threads=PREDICT_THREADS)
        return out

    def rank(self, sessions: pd.DataFrame, candidates: np.ndarray, k: int) -> np.ndarray:
        """The top ``k`` candidates of each request by the ranker's score (ties keep candidate order)."""
        return top_by_score(candidates, self.score(sessions, candidates), k)


def top_by_score(candidates: np.ndarray, scores: np.ndarray, k: int) -> np.ndarray:
    """Each request's ``k`` candidates of highest score, best first; ``-inf`` scores and padding drop out.

    Scores are finite or ``-inf`` (a mask). Ties keep candidate order (a stable sort); rows with fewer
    than ``k`` left are padded with ``PAD`` at the end.
    """
    if k < 1:
        raise ValueError(f"k must be positive, got {k}")
    candidates = np.asarray(candidates, dtype=np.int64)
    scores = np.asarray(scores, dtype=float)
    if scores.shape != candidates.shape:
        raise ValueError(f"scores {scores.shape} and candidates {candidates.shape} differ in shape")
    if np.isnan(scores).any() or np.isposinf(scores).any():
        raise ValueError("scores must be finite, or -inf for a candidate to leave out")
    scores = np.where(candidates >= 0, scores, -np.inf)
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    top = np.where(np.isfinite(np.take_along_axis(scores, order, axis=1)),
                   np.take_along_axis(candidates, order, axis=1), PAD)
    if top.shape[1] < k:
        top = np.pad(top, ((0, 0), (0, k - top.shape[1])), constant_values=PAD)
    return top


def available(observed: ObservedMarketplace, sessions: pd.DataFrame, candidates: np.ndarray) -> np.ndarray:
    """``candidates`` with every listing created after its request's day replaced by ``PAD``.

    A retrieval index holds today's catalogue; a logged request from an earlier day could not have
    been shown a listing that did not exist yet, and the ranker never saw one in its logs.
    """
    candidates = np.asarray(candidates, dtype=np.int64)
    if candidates.ndim != 2 or candidates.shape[0] != len(sessions):
        raise ValueError(f"candidates must be (n_sessions, k) with one row per session ({len(sessions)}), "
                         f"got shape {candidates.shape}")
    created = observed.listings.set_index("listing_id")["created_day"]
    day = created.reindex(candidates.ravel()).to_numpy().reshape(candidates.shape)
    return np.where((candidates >= 0) & (day <= sessions["day"].to_numpy()[:, None]), candidates, PAD)


def merge_candidates(*sources: np.ndarray) -> np.ndarray:
    """Each request's candidates from every source, once, in source order (``PAD`` padded to the total)."""
    if not sources:
        raise ValueError("no candidate sources")
    rows = {np.asarray(s).shape[0] for s in sources}
    if len(rows) != 1:
        raise ValueError(f"candidate sources have different numbers of requests: {sorted(rows)}")
    stacked = np.concatenate([np.asarray(s, dtype=np.int64) for s in sources], axis=1)
    merged = np.full_like(stacked, PAD)
    for i, row in enumerate(stacked):
        real = row[row >= 0]
        _, first = np.unique(real, return_index=True)
        keep = real[np.sort(first)]
        merged[i, :keep.size] = keep
    return merged
