"""The ranking stage: LambdaMART (LightGBM's ``lambdarank``) trained on logged impressions.

Etsy's A/B test added the unified model's candidates *beside* lexical retrieval, and a learned ranking
stage ordered whatever both returned *[paper]*. This module is that stage for our marketplace: a
gradient-boosted tree ensemble over the observable features of
:class:`~retrieval_lib.ranking.features.RankingFeatures`, trained with the LambdaRank objective
(Burges 2010) on the training window's logged pages, where each shown listing's gain is what the buyer
did with it (0 shown, 1 clicked, 2 added to cart, 3 bought). LightGBM because scikit-learn has no
listwise ranking objective (its gradient boosting fits pointwise losses only) and LambdaMART is the
standard learned ranker of web and product search; it runs on one thread with ``deterministic=True``,
so the same data and seed give the same trees on any CPU.

The labels are logged clicks and purchases, so they carry the logging policy's position bias: a
listing shown first is examined more often. The exploration slots (random listings in random slots)
temper it; the ranker is still trained on what the old pages showed, then scores candidates that no
old page showed, as a real ranker does after a retrieval change.
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

#: Gain of a shown listing by what the buyer did with it (the deepest stage reached).
GAINS = {"shown": 0, "click": 1, "cart": 2, "purchase": 3}


@dataclass(frozen=True)
class RankerConfig:
    """The ranker's settings: trees, learning rate, leaves, and how many logged requests it learns from.

    ``n_trees`` is an upper bound: training stops once the validation window's logged NDCG@10 has not
    improved for ``patience`` trees (the validation pages are logs too, so the choice reads no latent
    truth).
    """

    n_trees: int = 300
    learning_rate: float = 0.05
    num_leaves: int = 31
    min_child_samples: int = 50
    patience: int = 30
    max_sessions: int = 20_000
    seed: int = 0

    def __post_init__(self) -> None:
        positive_ints(self, ("n_trees", "num_leaves", "min_child_samples", "patience", "max_sessions"))
        rate = self.learning_rate
        if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 < rate <= 1:
            raise ValueError(f"learning_rate must be a number in (0, 1], got {rate!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}")


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


def _flatten(x: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows of the real (non-padding) candidates and each request's count of them (LightGBM's groups)."""
    real = ids >= 0
    return x[real], real.sum(axis=1)


class Ranker:
    """LambdaMART over :class:`RankingFeatures`: ``fit`` on logged pages, ``score`` and ``rank`` candidates.

    After ``fit``: ``valid_ndcg`` (the validation window's logged NDCG@10 of the ranker's order of each
    logged page), ``logged_order_ndcg`` (the same pages in the order the logging policy showed them),
    ``n_trees`` (kept by early stopping) and ``importance`` (total gain per feature).
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
        """Train on the training window's logged pages; stop early on the validation window's."""
        c = self.config
        sets = {}
        for split in ("train", "valid"):
            sessions, shown, gains = logged_pages(observed, split, c.max_sessions, c.seed)
            x, groups = _flatten(self.features.transform(sessions, shown), shown)
            sets[split] = (sessions, shown, gains, x, groups)
        _, _, gains, x, groups = sets["train"]
        train = lgb.Dataset(x, gains[sets["train"][1] >= 0], group=groups, feature_name=list(FEATURES),
                            free_raw_data=False)
        v_sessions, v_shown, v_gains, v_x, v_groups = sets["valid"]
        valid = lgb.Dataset(v_x, v_gains[v_shown >= 0], group=v_groups, reference=train)
        self.booster = lgb.train(self._params(), train, num_boost_round=c.n_trees, valid_sets=[valid],
                                 callbacks=[lgb.early_stopping(c.patience, verbose=False)])
        self.n_trees = int(self.booster.best_iteration or c.n_trees)
        order = np.argsort(-self.score(v_sessions, v_shown), axis=1, kind="stable")
        self.valid_ndcg = float(ndcg_at_k(np.take_along_axis(v_gains, order, axis=1), v_gains, 10).mean())
        self.logged_order_ndcg = float(ndcg_at_k(v_gains, v_gains, 10).mean())
        self.importance = pd.Series(self.booster.feature_importance("gain", iteration=self.n_trees),
                                    index=list(FEATURES)).sort_values(ascending=False)
        return self

    def score(self, sessions: pd.DataFrame, candidates: np.ndarray) -> np.ndarray:
        """The ranker's score of every candidate, ``-inf`` at padding."""
        if self.booster is None:
            raise RuntimeError("call fit() before score()")
        candidates = np.asarray(candidates, dtype=np.int64)
        x = self.features.transform(sessions, candidates)
        out = np.full(candidates.shape, -np.inf)
        real = candidates >= 0
        if real.any():
            out[real] = self.booster.predict(x[real], num_iteration=self.n_trees)
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
