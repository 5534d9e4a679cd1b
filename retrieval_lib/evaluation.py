"""Evaluate any retriever on a time window: overall, by query segment and by user-history length.

Labels come from the latent choice model over the *whole* catalogue (what each buyer would buy if
everything were shown), not from the logs, so a retriever is not rewarded for agreeing with the
lexical policy that produced the logs. This module is one of the few allowed to read latent truth.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from retrieval_lib import metrics
from retrieval_lib.marketplace import Marketplace, ObservedMarketplace
from retrieval_lib.marketplace.behaviour import ideal_gains, relevance_grades

SEGMENTS: tuple[str, ...] = ("head", "torso", "tail")
HISTORY: tuple[str, ...] = ("none", "short", "long")
#: Users with at least this many earlier searches have a "long" history; 1 up to this, "short".
LONG_HISTORY = 10
#: Cut-offs and the NDCG depth reported by default.
KS: tuple[int, ...] = (10, 100, 1000)
NDCG_K = 10


class Retriever(Protocol):
    """Anything with ``retrieve(sessions, k)`` returning an ``(n, k)`` array of listing ids (``-1`` pads)."""

    def retrieve(self, sessions: pd.DataFrame, k: int) -> np.ndarray:  # pragma: no cover - protocol
        """Return the top-``k`` listing ids for each session (columns ``user_id, query, day``)."""
        ...


def query_segments(observed: ObservedMarketplace, head_share: float = 1 / 3, torso_share: float = 1 / 3
                   ) -> pd.Series:
    """Segment of every query by its training-window frequency (an observable quantity).

    Queries are sorted by frequency; the most frequent ones that make up the first ``head_share`` of
    training traffic are *head*, the next ``torso_share`` *torso*, the rest *tail*. Queries never seen
    in training (see :func:`segment_of`) are tail.
    """
    if not (0 < head_share and 0 < torso_share and head_share + torso_share < 1):
        raise ValueError("need 0 < head_share, 0 < torso_share and head_share + torso_share < 1")
    counts = observed.split("train")["query"].value_counts()
    counts = counts.iloc[np.lexsort((counts.index.to_numpy(dtype=str), -counts.to_numpy()))]
    before = (counts.cumsum() - counts) / counts.sum()  # traffic share of strictly more frequent queries
    seg = np.where(before < head_share, "head", np.where(before < head_share + torso_share, "torso", "tail"))
    return pd.Series(seg, index=counts.index, name="segment")


def segment_of(queries: pd.Series, segments: pd.Series) -> np.ndarray:
    """Look up each query's segment; unseen queries are tail."""
    return queries.map(segments).fillna("tail").to_numpy(dtype=object)


def history_length(observed: ObservedMarketplace) -> pd.Series:
    """Number of earlier searches of the same user before each session (indexed by ``session_id``)."""
    s = observed.sessions.sort_values(["day", "session_id"], kind="stable")
    return s.groupby("user_id").cumcount().set_axis(s["session_id"].to_numpy()).sort_index()


def history_bin(n_earlier: np.ndarray) -> np.ndarray:
    """``none`` (0 earlier searches), ``short`` (1 to LONG_HISTORY - 1) or ``long``."""
    n_earlier = np.asarray(n_earlier)
    return np.where(n_earlier == 0, "none", np.where(n_earlier < LONG_HISTORY, "short", "long")).astype(object)


@dataclass(frozen=True)
class EvaluationSet:
    """The held-out sessions of one window with their labels, segments and ideal NDCG gains."""

    sessions: pd.DataFrame
    targets: np.ndarray
    segment: np.ndarray
    history: np.ndarray
    ideal: np.ndarray
    world: Marketplace

    @classmethod
    def build(cls, world: Marketplace, split: str = "test", max_sessions: int | None = None,
              seed: int = 0) -> EvaluationSet:
        """Collect a window's labelled sessions (optionally a fixed random sample of ``max_sessions``).

        Sessions without a label (none of the wanted product type existed yet, or the config capped
        ``max_labelled_sessions``) are left out.
        """
        if split == "train":
            raise ValueError("evaluate on 'valid' or 'test'; training sessions have no held-out labels")
        sessions = world.observed.split(split)
        labelled = world.latent.labels[sessions["session_id"].to_numpy()] >= 0
        return cls._collect(world, sessions[labelled], world.latent.labels, max_sessions, seed)

    @classmethod
    def from_logged_purchases(cls, world: Marketplace, split: str = "test", max_sessions: int | None = None,
                              seed: int = 0) -> EvaluationSet:
        """The window's sessions that ended in a *logged* purchase, with that purchase as the label.

        This is how one would evaluate from logs alone. The logged purchase was chosen among what the
        production (lexical) policy showed, so these labels flatter that policy; chapter 2 measures
        by how much.
        """
        if split == "train":
            raise ValueError("evaluate on 'valid' or 'test'")
        logs = world.observed.logs(split)
        bought = logs.loc[logs["purchase"], ["session_id", "listing_id"]]
        labels = np.full(len(world.observed.sessions), -1, dtype=np.int64)
        labels[bought["session_id"].to_numpy()] = bought["listing_id"].to_numpy()
        sessions = world.observed.sessions.iloc[bought["session_id"].to_numpy()]
        return cls._collect(world, sessions, labels, max_sessions, seed)

    @classmethod
    def _collect(cls, world: Marketplace, sessions: pd.DataFrame, labels: np.ndarray, max_sessions: int | None,
                 seed: int) -> EvaluationSet:
        if max_sessions is not None and max_sessions < len(sessions):
            if max_sessions <= 0:
                raise ValueError(f"max_sessions must be positive, got {max_sessions}")
            sessions = sessions.sample(n=max_sessions, random_state=seed).sort_values("session_id")
        sessions = sessions.reset_index(drop=True)
        sid = sessions["session_id"].to_numpy()
        return cls(
            sessions=sessions,
            targets=labels[sid],
            segment=segment_of(sessions["query"], query_segments(world.observed)),
            history=history_bin(history_length(world.observed).to_numpy()[sid]),
            ideal=ideal_gains(world.latent, sid, NDCG_K),
            world=world,
        )


@dataclass(frozen=True)
class EvaluationResult:
    """Per-session metrics plus the grouping columns; :meth:`summary` averages them."""

    per_session: pd.DataFrame

    def summary(self) -> pd.DataFrame:
        """Mean of every metric overall (``all``), per query segment and per history bin."""
        metric_cols = [c for c in self.per_session.columns if c not in ("session_id", "segment", "history")]
        rows = {"all": self.per_session[metric_cols].mean()}
        for col, groups in (("segment", SEGMENTS), ("history", HISTORY)):
            means = self.per_session.groupby(col)[metric_cols].mean()
            for g in groups:
                rows[f"{col}={g}" if col == "history" else g] = (means.loc[g] if g in means.index
                                                                  else pd.Series(np.nan, index=metric_cols))
        out = pd.DataFrame(rows).T
        out["n"] = [len(self.per_session)] + [
            int((self.per_session[col] == g).sum()) for col, groups in (("segment", SEGMENTS), ("history", HISTORY))
            for g in groups]
        return out

    def value(self, metric: str, group: str = "all") -> float:
        """One number, e.g. ``value('recall@100', 'tail')`` or ``value('mrr', 'history=long')``."""
        table = self.summary()
        if metric not in table.columns or group not in table.index:
            raise KeyError(f"no {metric!r} for group {group!r}; have {list(table.columns)} x {list(table.index)}")
        return float(table.loc[group, metric])


def evaluate(retriever: Retriever, data: Marketplace | EvaluationSet, split: str = "test",
             ks: tuple[int, ...] = KS) -> EvaluationResult:
    """Run ``retriever`` on a window's sessions and score it against whole-catalogue labels.

    ``data`` is a generated :class:`Marketplace` (the ``split`` window is collected) or a prepared
    :class:`EvaluationSet` (reuse it when comparing several retrievers: labels and ideal gains are
    computed once).
    """
    es = data if isinstance(data, EvaluationSet) else EvaluationSet.build(data, split)
    depth = max(ks)
    ranked = np.asarray(retriever.retrieve(es.sessions, depth))
    if ranked.shape != (len(es.sessions), depth):
        raise ValueError(f"retriever returned shape {ranked.shape}, expected {(len(es.sessions), depth)}")
    out = {"session_id": es.sessions["session_id"].to_numpy(), "segment": es.segment, "history": es.history}
    for k in ks:
        out[f"recall@{k}"] = metrics.recall_at_k(ranked, es.targets, k)
    gains = relevance_grades(es.world.latent, out["session_id"], ranked[:, :NDCG_K])
    out[f"ndcg@{NDCG_K}"] = metrics.ndcg_at_k(gains, es.ideal, NDCG_K)
    out["mrr"] = metrics.reciprocal_rank(ranked, es.targets)
    return EvaluationResult(pd.DataFrame(out))


def history_reveals_taste(eval_set: EvaluationSet, facet: str = "style", segment: str = "head",
                          min_clicks: int = 5) -> dict[str, float]:
    """Measure whether a buyer's click history predicts the hidden facet of what they want.

    For the ``segment`` sessions of buyers with at least ``min_clicks`` earlier clicks, compare how often
    the wanted listing's ``facet`` equals the most common ``facet`` among those clicks (``match``) with
    how often a random listing of the wanted product type has it (``chance``). It reads latent truth, so
    use it to explain and measure, never as a feature.
    """
    world = eval_set.world
    values = world.latent.listings[facet]
    types = world.latent.listings["type"]
    logs = world.observed.logs()
    clicks = logs.loc[logs["click"], ["user_id", "day", "listing_id"]].sort_values(["user_id", "day"])
    by_user = {u: (g["day"].to_numpy(), values[g["listing_id"].to_numpy()]) for u, g in clicks.groupby("user_id")}
    n_values = int(values.max()) + 1
    type_share = np.zeros((int(types.max()) + 1, n_values))
    np.add.at(type_share, (types, values), 1.0)
    type_share /= type_share.sum(axis=1, keepdims=True)
    match, chance = [], []
    rows = np.flatnonzero((eval_set.segment == segment) & (eval_set.targets >= 0))
    for i in rows:
        user, day = eval_set.sessions.at[i, "user_id"], eval_set.sessions.at[i, "day"]
        days, seen = by_user.get(user, (np.empty(0), np.empty(0, dtype=int)))
        earlier = seen[: np.searchsorted(days, day, side="left")]
        if earlier.size < min_clicks:
            continue
        mode = int(np.bincount(earlier, minlength=n_values).argmax())
        label = eval_set.targets[i]
        match.append(values[label] == mode)
        chance.append(type_share[types[label], mode])
    return {"match": float(np.mean(match)) if match else float("nan"),
            "chance": float(np.mean(chance)) if chance else float("nan"), "sessions": len(match)}


def facet_probe(world: Marketplace, vectors: np.ndarray, facet: str = "aesthetic", max_listings: int = 4000,
                seed: int = 0) -> dict[str, float]:
    """Measure how well listing vectors reveal a hidden facet: a linear probe against the majority share.

    Fits a multinomial logistic regression from ``vectors`` (one row per listing, in listing-id order)
    to the listings' latent ``facet`` on a random half of at most ``max_listings`` listings and scores it
    on the other half. A model can only personalise on a taste its product vectors can see, so a probe
    at the majority share says the history has nothing to point at. Reads latent truth: explain with it,
    never train on it.
    """
    labels = world.latent.listings[facet]
    vectors = np.asarray(vectors, dtype=np.float64)
    if vectors.ndim != 2 or len(vectors) != len(labels):
        raise ValueError(f"expected one vector per listing ({len(labels)} rows), got shape {vectors.shape}")
    rng = np.random.default_rng(seed)
    rows = rng.permutation(len(labels))[:max_listings]
    fit, test = rows[: len(rows) // 2], rows[len(rows) // 2:]
    scale = StandardScaler().fit(vectors[fit])
    probe = LogisticRegression(max_iter=300).fit(scale.transform(vectors[fit]), labels[fit])
    accuracy = float((probe.predict(scale.transform(vectors[test])) == labels[test]).mean())
    majority = float(np.bincount(labels[test]).max() / len(test))
    return {"accuracy": accuracy, "majority": majority, "classes": int(labels.max()) + 1}
