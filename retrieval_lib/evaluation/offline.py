"""Evaluate any retriever on a time window: overall, by query segment and by user-history length.

Labels come from the latent choice model over the *whole* catalogue (what each buyer would buy if
everything were shown), not from the logs, so a retriever is not rewarded for agreeing with the
lexical policy that produced the logs. Evaluation may read latent truth; models never do.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import pandas as pd
import torch

from retrieval_lib.evaluation import metrics
from retrieval_lib.marketplace import Marketplace, ObservedMarketplace
from retrieval_lib.marketplace.behaviour import available, ideal_gains, relevance_grades
from retrieval_lib.serving.base import PAD, SessionRetriever
from retrieval_lib.serving.exact import SCORE_CHUNK, top_k_of_scores

SEGMENTS: tuple[str, ...] = ("head", "torso", "tail")


HISTORY: tuple[str, ...] = ("none", "short", "long")


#: Users with at least this many earlier searches have a "long" history; 1 up to this, "short".
LONG_HISTORY = 10


#: Cut-offs and the NDCG depth reported by default.
KS: tuple[int, ...] = (10, 100, 1000)


NDCG_K = 10
#: Columns of :attr:`EvaluationResult.per_session` that identify or group a session (not metrics).
ID_COLUMNS: tuple[str, ...] = ("session_id", "user_id", "segment", "history")


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

    def ranking(self, retriever: SessionRetriever, depth: int) -> np.ndarray:
        """The retriever's top ``depth`` listings per session, among listings that exist at the session's time.

        The retriever is asked for enough extra results that ``depth`` remain after listings created
        later are dropped (:func:`keep_available`); its output is checked (:func:`check_ranking`). An
        exact session search is ranked from its scores instead (:func:`exact_ranking`), in the same order.
        """
        if isinstance(retriever, ExactSessionSearch):
            return exact_ranking(retriever, self, depth)
        sid = self.sessions["session_id"].to_numpy()
        fetch = depth + unavailable_margin(self.world, sid)
        ranked = check_ranking(retriever.retrieve(self.sessions, fetch), len(self.sessions), fetch,
                               n_listings=len(self.world.observed.listings))
        return keep_available(self.world, sid, ranked, depth)

    def hits(self, ranked: np.ndarray) -> np.ndarray:
        """``(n, k)`` booleans: where each session's label sits in a ranking (row order of :attr:`sessions`)."""
        ranked = np.asarray(ranked)
        if ranked.ndim != 2 or len(ranked) != len(self.sessions):
            raise ValueError(f"need one ranking row per session ({len(self.sessions)}), got shape {ranked.shape}")
        return (ranked == self.targets[:, None]) & (ranked != PAD)

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
        metric_cols = [c for c in self.per_session.columns if c not in ID_COLUMNS]
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


def check_ranking(ranked: np.ndarray, n_rows: int, depth: int, n_listings: int | None = None) -> np.ndarray:
    """Validate a retriever's output: shape ``(n_rows, depth)``, valid integer ids, no listing twice in a row.

    An id is a listing id (below ``n_listings`` when given) or ``PAD``; anything else is an error.
    """
    ranked = np.asarray(ranked)
    if ranked.shape != (n_rows, depth):
        raise ValueError(f"retriever returned shape {ranked.shape}, expected {(n_rows, depth)}")
    if ranked.size and not np.issubdtype(ranked.dtype, np.integer):
        raise ValueError(f"retriever returned {ranked.dtype} ids; listing ids are integers")
    invalid = (ranked < PAD) | (ranked >= n_listings if n_listings is not None else False)
    if invalid.any():
        raise ValueError(f"retriever returned listing id {int(ranked[invalid][0])}, which is neither a listing "
                         f"(0 to {n_listings - 1 if n_listings else '?'}) nor padding ({PAD})")
    ordered = np.sort(ranked, axis=1)
    repeated = (ordered[:, 1:] == ordered[:, :-1]) & (ordered[:, 1:] != PAD)
    if repeated.any():
        row = int(np.flatnonzero(repeated.any(axis=1))[0])
        listing = int(ordered[row, 1:][repeated[row]][0])
        raise ValueError(f"retriever returned listing {listing} twice for session row {row}; "
                         "each listing may appear once per result list")
    return ranked


def unavailable_margin(world: Marketplace, session_ids: np.ndarray) -> int:
    """How many listings are created after the earliest of these sessions (the most any row can lose)."""
    if len(session_ids) == 0:
        return 0
    first = world.latent.intents["day"][np.asarray(session_ids)].min()
    return int((world.latent.listings["created_day"] > first).sum())


def keep_available(world: Marketplace, session_ids: np.ndarray, ranked: np.ndarray, depth: int) -> np.ndarray:
    """Each row's listings that exist at its session's time, in the retriever's order, cut or padded to ``depth``.

    Retrieval at request time can only return listings that exist then; a retriever that indexes the
    whole catalogue (including listings created later in the window) is held to that here.
    """
    ranked = np.asarray(ranked, dtype=np.int64)
    ok = (ranked != PAD) & available(world.latent, np.asarray(session_ids), ranked.clip(0))
    kept = np.full((len(ranked), depth), PAD, dtype=np.int64)
    whole = np.zeros(len(ranked), dtype=bool)
    if ranked.shape[1] >= depth:  # most rows: their first ``depth`` all exist
        whole = ok[:, :depth].all(axis=1)
        kept[whole] = ranked[whole, :depth]
    rest = np.flatnonzero(~whole)
    place = np.cumsum(ok[rest], axis=1) - 1  # each available listing's place among its row's available ones
    rows, cols = np.nonzero(ok[rest] & (place < depth))
    kept[rest[rows], place[rows, cols]] = ranked[rest[rows], cols]
    return kept


@runtime_checkable
class ExactSessionSearch(Protocol):
    """A retriever that ranks every listing by the inner product of a session vector and a listing vector.

    ``search_space`` is ``(listing vectors, listing ids)``; ``retrieve`` must be
    :func:`~retrieval_lib.serving.exact.exact_top_k` of ``encode_sessions(sessions)`` over it. Such a
    retriever is evaluated without building its top-``max(ks)`` lists (:func:`exact_target_ranks`).
    """

    search_space: tuple[torch.Tensor, np.ndarray]

    def encode_sessions(self, sessions: pd.DataFrame) -> torch.Tensor:  # pragma: no cover - protocol
        """Unit-norm query vectors of logged sessions."""
        ...


def _available_scores(retriever: ExactSessionSearch, es: EvaluationSet) -> Iterator[tuple[slice, torch.Tensor]]:
    """The retriever's scores of every listing, :data:`SCORE_CHUNK` sessions at a time.

    ``-inf`` where a listing does not exist yet at the session's time; the other scores come from the
    same matrix products as the retriever's own search.
    """
    vectors, ids = retriever.search_space
    n_listings = len(es.world.observed.listings)
    if not np.array_equal(np.asarray(ids), np.arange(n_listings)):
        raise ValueError("exact evaluation needs listing ids numbered 0, 1, ... in catalogue order")
    sid = es.sessions["session_id"].to_numpy()
    created = np.asarray(es.world.latent.listings["created_day"])
    day = np.asarray(es.world.latent.intents["day"])[sid]
    # only listings created after the earliest session can be missing at a session's time (a few hundred)
    late = np.flatnonzero(created > day.min()) if len(sid) else np.zeros(0, dtype=np.int64)
    x = torch.as_tensor(vectors, dtype=torch.float32)
    with torch.no_grad():
        q = torch.as_tensor(retriever.encode_sessions(es.sessions), dtype=torch.float32)
        for start in range(0, len(sid), SCORE_CHUNK):
            part = slice(start, start + SCORE_CHUNK)
            scores = q[part] @ x.T
            s = scores.numpy()  # the same memory
            s[:, late] = np.where(created[late][None, :] > day[part, None], -np.inf, s[:, late])
            yield part, scores


def exact_ranking(retriever: ExactSessionSearch, es: EvaluationSet, depth: int) -> np.ndarray:
    """:meth:`EvaluationSet.ranking` of an exact session search, straight from its scores.

    The first ``depth`` listings that exist at each session's time, by score and then listing id,
    ``PAD`` where fewer exist: what the generic path keeps of a deeper search, without fetching the
    listings it would drop.
    """
    n_listings = len(es.world.observed.listings)
    ranked = np.full((len(es.sessions), depth), PAD, dtype=np.int64)
    for part, scores in _available_scores(retriever, es):
        values, cols = top_k_of_scores(scores, min(depth, n_listings))
        ranked[part, :cols.shape[1]] = torch.where(torch.isfinite(values), cols, PAD).numpy()
    return ranked


def exact_target_ranks(retriever: ExactSessionSearch, es: EvaluationSet, top: int) -> tuple[np.ndarray, np.ndarray]:
    """Each session's label's place (0 = first) among the listings that exist then, and the ``top`` first.

    The same order as :meth:`EvaluationSet.ranking` of an exact search (score, then listing id), from the
    same scores (:func:`_available_scores`), without sorting a thousand listings per session: the place
    is a count of the listings ahead of the label. A label that does not exist at the session's time
    gets the catalogue's size.
    """
    n_listings = len(es.world.observed.listings)
    targets = np.asarray(es.targets, dtype=np.int64)
    places = np.full(len(es.sessions), n_listings, dtype=np.int64)
    firsts = np.full((len(es.sessions), top), PAD, dtype=np.int64)
    for part, scores in _available_scores(retriever, es):
        s = scores.numpy()
        target = targets[part]
        known = (target >= 0) & (target < n_listings)
        label = s[np.arange(len(s)), target.clip(0, n_listings - 1)][:, None]
        place = np.count_nonzero(s > label, axis=1)
        for row in np.flatnonzero(np.count_nonzero(s == label, axis=1) > 1):  # ties with the label: rare
            place[row] += np.count_nonzero(s[row, :target[row]] == label[row])
        places[part] = np.where(known & np.isfinite(label[:, 0]), place, n_listings)
        values, cols = top_k_of_scores(scores, min(top, n_listings))
        firsts[part, :cols.shape[1]] = torch.where(torch.isfinite(values), cols, PAD).numpy()
    return places, firsts


def evaluate(retriever: SessionRetriever, data: Marketplace | EvaluationSet, split: str = "test",
             ks: tuple[int, ...] = KS) -> EvaluationResult:
    """Run ``retriever`` on a window's sessions and score it against whole-catalogue labels.

    ``data`` is a generated :class:`Marketplace` (the ``split`` window is collected) or a prepared
    :class:`EvaluationSet` (reuse it when comparing several retrievers: labels and ideal gains are
    computed once). Rankings come from :meth:`EvaluationSet.ranking`: only listings that exist at each
    session's time count.
    """
    es = data if isinstance(data, EvaluationSet) else EvaluationSet.build(data, split)
    depth = max(ks)
    out = {"session_id": es.sessions["session_id"].to_numpy(), "user_id": es.sessions["user_id"].to_numpy(),
           "segment": es.segment, "history": es.history}
    if isinstance(retriever, ExactSessionSearch):  # the same figures, without the top-1,000 lists
        places, firsts = exact_target_ranks(retriever, es, NDCG_K)
        for k in ks:
            out[f"recall@{k}"] = (places < k).astype(float)
        top = firsts
        out["mrr"] = np.where(places < depth, 1.0 / (places + 1.0), 0.0)
    else:
        ranked = es.ranking(retriever, depth)
        for k in ks:
            out[f"recall@{k}"] = metrics.recall_at_k(ranked, es.targets, k)
        top = ranked[:, :NDCG_K]
        out["mrr"] = metrics.reciprocal_rank(ranked, es.targets)
    gains = relevance_grades(es.world.latent, out["session_id"], top)
    out[f"ndcg@{NDCG_K}"] = metrics.ndcg_at_k(gains, es.ideal, NDCG_K)
    out = {c: out[c] for c in (*ID_COLUMNS, *(f"recall@{k}" for k in ks), f"ndcg@{NDCG_K}", "mrr")}
    return EvaluationResult(pd.DataFrame(out))
