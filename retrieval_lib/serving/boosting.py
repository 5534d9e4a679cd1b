"""ANN-based product boosting: query-independent quality added to the score inside the index.

Etsy's lexical retrieval multiplies relevance by a listing's quality score. An ANN index can only rank
by an inner product, so the paper boosts *additively* with hydrated vectors: each listing vector ``p``
gets its quality features appended, ``p' = [p; f(p)]``, each query vector one constant weight vector,
``q' = [q; w]``, and then ``q'.p' = q.p + w.f(p)``, computed by the index itself *[paper]*. ``w`` is
tuned after training, by black-box Bayesian optimisation, to maximise the recall of purchases made
after the training window (:func:`tune_boost` with :class:`PurchaseRecall`).

The quality features come from what a marketplace logs (rating, review count, age, shop sales),
quantile-scaled to [0, 1] like the model's numeric features; the multiplicative baseline re-ranks the
exact top candidates by ``score x quality`` with the lexical system's own quality multiplier.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import optuna
import pandas as pd
import torch

from retrieval_lib.features.numeric import NUMERIC_COLUMNS, NumericFeatures
from retrieval_lib.marketplace import ObservedMarketplace
from retrieval_lib.marketplace.policy import quality_multiplier
from retrieval_lib.models.unified import UnifiedRetriever
from retrieval_lib.serving.ann import HNSWIndex
from retrieval_lib.serving.base import PAD, SearchResult
from retrieval_lib.serving.exact import exact_top_k
from retrieval_lib.training.pairs import engaged_pairs

#: The quality features f(p), in column order: star rating, review count, freshness, shop sales.
QUALITY_FEATURES: tuple[str, ...] = ("rating", "reviews", "freshness", "shop_sales")

#: The tuner's search box: each weight of ``w`` in ``[0, W_MAX]`` (the cosine part spans [-1, 1]).
W_MAX = 0.3


def quality_features(observed: ObservedMarketplace) -> np.ndarray:
    """f(p): ``(n_listings, 4)`` quantile-scaled observable quality signals in [0, 1], ``listing_id`` order.

    Rating (0 for a listing without reviews), review count, freshness (1 minus the quantile of the
    listing's age at the end of the training window) and its shop's lifetime sales; the quantiles are
    those of the listings known at the end of the training window (:class:`NumericFeatures`).
    """
    numeric = NumericFeatures().fit(observed).transform(observed)
    col = {name: i for i, name in enumerate(NUMERIC_COLUMNS)}
    return np.stack([numeric[:, col["rating"]], numeric[:, col["review_count"]], 1.0 - numeric[:, col["age_days"]],
                     numeric[:, col["shop_sales"]]], axis=1).astype(np.float32)


def hydrate_listings(vectors: np.ndarray | torch.Tensor, quality: np.ndarray | torch.Tensor) -> torch.Tensor:
    """``p' = [p; f(p)]``: each listing vector with its quality features appended."""
    p = torch.as_tensor(vectors, dtype=torch.float32)
    f = torch.as_tensor(quality, dtype=torch.float32)
    if p.ndim != 2 or f.ndim != 2:
        raise ValueError(f"listing vectors and quality features must be 2-D, got {tuple(p.shape)} and {tuple(f.shape)}")
    if len(p) != len(f):
        raise ValueError(f"{len(p)} listing vectors but quality features for {len(f)} listings")
    return torch.cat([p, f], dim=1)


def hydrate_queries(vectors: np.ndarray | torch.Tensor, w: np.ndarray | torch.Tensor) -> torch.Tensor:
    """``q' = [q; w]``: each query vector with the one boosting weight vector appended."""
    q = torch.as_tensor(vectors, dtype=torch.float32)
    w = torch.as_tensor(np.asarray(w, dtype=np.float32))
    if q.ndim != 2 or w.ndim != 1:
        raise ValueError(f"need 2-D query vectors and a 1-D weight vector, got {tuple(q.shape)} and {tuple(w.shape)}")
    if not torch.isfinite(w).all():
        raise ValueError("boosting weights contain NaN or infinity")
    return torch.cat([q, w.expand(len(q), -1)], dim=1)


def check_weights(w: np.ndarray, n_features: int) -> np.ndarray:
    """``w`` as float32 after checking it has one weight per quality feature."""
    w = np.asarray(w, dtype=np.float32)
    if w.shape != (n_features,):
        raise ValueError(f"boosting weights have {w.size} entries, the quality features {n_features}")
    return w


class BoostedRetriever:
    """Additive boosting: search hydrated listing vectors with hydrated query vectors.

    With ``index=None`` the search is exact; an :class:`~retrieval_lib.serving.ann.HNSWIndex` that is not
    built yet is built over the hydrated vectors (once: ``w`` lives in the queries only, so one index
    serves every ``w``). Use the index's ``space="l2"``: hydrated vectors have unequal norms.
    """

    def __init__(self, retriever: UnifiedRetriever, quality: np.ndarray, w: np.ndarray,
                 index: HNSWIndex | None = None) -> None:
        self.retriever = retriever
        self.items = hydrate_listings(retriever.listing_vectors, quality)
        self.w = check_weights(w, self.items.shape[1] - retriever.listing_vectors.shape[1])
        self.index = index
        if index is not None and index.dim == 0:
            index.build(self.items, retriever.listing_ids)
        if index is not None and index.dim != self.items.shape[1]:
            raise ValueError(f"index dimension {index.dim} differs from the hydrated vectors' {self.items.shape[1]}")

    def encode_sessions(self, sessions: pd.DataFrame) -> torch.Tensor:
        """Hydrated query vectors ``[q; w]`` of logged sessions."""
        return hydrate_queries(self.retriever.encode_sessions(sessions), self.w)

    def search(self, queries: torch.Tensor, k: int) -> SearchResult:
        """Top-``k`` listing ids by ``q.p + w.f(p)`` for hydrated query vectors."""
        if self.index is not None:
            return self.index.search(queries, k)
        return exact_top_k(queries, self.items, k, item_ids=self.retriever.listing_ids)

    def retrieve(self, sessions: pd.DataFrame, k: int) -> np.ndarray:
        """Retriever interface: top-``k`` listing ids per session."""
        return self.search(self.encode_sessions(sessions), k).ids


class MultiplicativeRetriever:
    """The lexical system's boosting on embedding retrieval: re-rank the exact top ``depth`` by score x quality.

    ``multiplier`` defaults to the logging policy's observable quality multiplier (in [0.75, 1.25]). It
    can only reorder candidates retrieval already found, and it cannot run inside an ANN index. BM25
    scores are never negative; cosine scores can be, and there a larger multiplier pushes a candidate
    *down* (it matters only far down a list, where scores turn negative).
    """

    def __init__(self, retriever: UnifiedRetriever, multiplier: np.ndarray | None = None, depth: int = 1_000) -> None:
        if depth <= 0:
            raise ValueError(f"depth must be positive, got {depth}")
        if multiplier is None:
            multiplier = quality_multiplier(retriever.features.observed.listings)
        self.multiplier = np.asarray(multiplier, dtype=np.float32)
        if self.multiplier.shape != (len(retriever.listing_ids),):
            raise ValueError(f"{self.multiplier.size} multipliers for {len(retriever.listing_ids)} listings")
        self.retriever, self.depth = retriever, depth

    def retrieve(self, sessions: pd.DataFrame, k: int) -> np.ndarray:
        """Top-``k`` listing ids per session after re-ranking ``max(depth, k)`` candidates."""
        ids, scores = exact_top_k(self.retriever.encode_sessions(sessions), self.retriever.listing_vectors,
                                  max(self.depth, k))
        boosted = np.where(ids >= 0, scores * self.multiplier[ids.clip(0)], -np.inf)
        top = np.take_along_axis(ids, np.argsort(-boosted, axis=1, kind="stable")[:, :k], axis=1)
        return np.where(top >= 0, self.retriever.listing_ids[top.clip(0)], PAD)


def logged_purchases(observed: ObservedMarketplace, split: str = "valid") -> pd.DataFrame:
    """One window's logged purchases with their session context (``session_id, user_id, query, day, listing_id``)."""
    if split == "train":
        raise ValueError("tune on 'valid' purchases: the model was trained on the training window")
    pairs = engaged_pairs(observed, split)
    return pairs[pairs["interaction"] == "purchase"].reset_index(drop=True)


class PurchaseRecall:
    """The tuning objective: recall@``k`` of one window's *logged* purchases as a function of ``w``.

    It reads only the observed marketplace (logs of ``split``, listing vectors, quality features), never
    the latent truth or another window; query vectors are encoded once, so one call is one exact search.
    """

    def __init__(self, retriever: UnifiedRetriever, quality: np.ndarray, observed: ObservedMarketplace,
                 split: str = "valid", k: int = 100) -> None:
        purchases = logged_purchases(observed, split)
        if purchases.empty:
            raise ValueError(f"the {split!r} window has no logged purchases to tune on")
        self.k, self.split = k, split
        self.queries = retriever.encode_sessions(purchases)
        self.items = hydrate_listings(retriever.listing_vectors, quality)
        self.listing_ids = retriever.listing_ids
        self.targets = purchases["listing_id"].to_numpy()
        self.n_features = self.items.shape[1] - self.queries.shape[1]

    def __len__(self) -> int:
        return len(self.targets)

    def __call__(self, w: np.ndarray) -> float:
        """Share of the purchases whose listing is in the top ``k`` of ``q.p + w.f(p)``."""
        q = hydrate_queries(self.queries, check_weights(w, self.n_features))
        ids = exact_top_k(q, self.items, self.k, item_ids=self.listing_ids).ids
        return float((ids == self.targets[:, None]).any(axis=1).mean())


@dataclass(frozen=True)
class BoostTuning:
    """The tuner's result: the best ``w``, its objective, every trial and the wall-clock seconds."""

    w: np.ndarray
    best_value: float
    trials: pd.DataFrame
    seconds: float


def tune_boost(objective: PurchaseRecall, n_trials: int = 40, seed: int = 0, high: float = W_MAX,
               names: tuple[str, ...] = QUALITY_FEATURES) -> BoostTuning:
    """Tune ``w`` with optuna's TPE sampler (seeded) over ``[0, high]`` per feature, ``n_trials`` trials.

    The first trial is ``w = 0`` (no boost), so the result is never worse than no boosting on the
    objective. ``trials`` has one row per trial: ``trial``, the weights by name, and ``value``.
    """
    if n_trials < 1:
        raise ValueError(f"n_trials must be positive, got {n_trials}")
    if len(names) != objective.n_features:
        raise ValueError(f"{len(names)} feature names for {objective.n_features} quality features")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
    study.enqueue_trial({name: 0.0 for name in names})
    start = time.perf_counter()
    study.optimize(lambda trial: objective(np.array([trial.suggest_float(n, 0.0, high) for n in names])),
                   n_trials=n_trials)
    seconds = time.perf_counter() - start
    trials = pd.DataFrame([{"trial": t.number, **t.params, "value": t.value} for t in study.trials])
    best = study.best_trial
    return BoostTuning(np.array([best.params[n] for n in names], dtype=np.float32), float(best.value), trials,
                       seconds)
