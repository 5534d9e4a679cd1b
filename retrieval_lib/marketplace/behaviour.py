"""The buyers' choice model (latent truth): utility, whole-catalogue choices, graded relevance.

A buyer in session ``s`` values listing ``l`` by a utility that rewards the wanted product type and
facets, the buyer's hidden taste for the listing's aesthetic, quality, a short shipping distance and a
familiar price. Logged behaviour (:mod:`.policy`) and evaluation labels both come from this one model.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np

from retrieval_lib.marketplace import geo
from retrieval_lib.marketplace import vocabulary as V

if TYPE_CHECKING:
    from retrieval_lib.marketplace.data import LatentTruth

#: Floor on log(n_aesthetics * preference): a disliked aesthetic costs at most this much.
AESTHETIC_FLOOR = -3.0


def facet_matches(latent: LatentTruth, sessions: np.ndarray, cand: np.ndarray) -> dict[str, np.ndarray]:
    """Boolean ``(n, m)`` arrays: does candidate ``cand[i, j]`` match session ``i``'s intent, per facet."""
    L, intent = latent.listings, latent.intents
    s = sessions[:, None]
    out = {
        "type": L["type"][cand] == intent["type"][s],
        "category": L["category"][cand] == intent["category"][s],
        "colour": L["colour"][cand] == intent["colour"][s],
        "style": L["style"][cand] == intent["style"][s],
        "aesthetic": L["aesthetic"][cand] == intent["aesthetic"][s],
    }
    out["material"] = out["category"] & (L["material"][cand] == intent["material"][s])
    for f in ("recipient", "occasion"):
        out[f] = (intent[f][s] >= 0) & (L[f][cand] == intent[f][s])
    return out


def utility(latent: LatentTruth, sessions: np.ndarray, cand: np.ndarray) -> np.ndarray:
    """Deterministic utility ``(n, m)`` of candidate listings ``cand`` for ``sessions`` (without noise)."""
    sessions = np.asarray(sessions)
    cand = np.asarray(cand)
    w = latent.weights
    L, users, intent = latent.listings, latent.users, latent.intents
    m = facet_matches(latent, sessions, cand)
    s = sessions[:, None]
    u = intent["user"][s]
    score = -w.type_mismatch * (~m["type"] & ~m["category"]) - 0.6 * w.type_mismatch * (~m["type"] & m["category"])
    for f in V.FACETS:
        score = score + w.facet * m[f] * (1.0 + w.expressed * intent[f"expr_{f}"][s])
    pref = users["aesthetic_pref"][u, L["aesthetic"][cand]] * latent.n_aesthetics
    score = score + w.aesthetic * np.maximum(np.log(np.maximum(pref, 1e-12)), AESTHETIC_FLOOR)
    score = score + w.quality * L["quality"][cand]
    dist = geo.haversine_miles(users["lat"][u], users["lon"][u], L["shop_lat"][cand], L["shop_lon"][cand])
    score = score - w.distance * dist / 1000.0 - w.international * (users["country"][u] != L["shop_country"][cand])
    rel_price = L["log_price"][cand] - L["base_log_price"][cand] - users["log_price_level"][u]
    return score - w.price * np.abs(rel_price)


def relevance_grades(latent: LatentTruth, sessions: np.ndarray, cand: np.ndarray) -> np.ndarray:
    """Graded relevance 0-3 of candidates to each session, used for NDCG.

    1: the listing is what the query names (its product type, category, or a gift for the recipient);
    2: and it matches every facet the query names;
    3: and it matches the buyer's whole intent, including facets the query left unsaid.
    Padding ids (``-1``) get grade 0.
    """
    sessions = np.asarray(sessions)
    cand = np.asarray(cand)
    pad = cand < 0
    c = np.where(pad, 0, cand)
    m = facet_matches(latent, sessions, c)
    intent = latent.intents
    s = sessions[:, None]
    named_product = np.where(intent["expr_type"][s], m["type"],
                             np.where(intent["expr_category"][s], m["category"], m["recipient"]))
    named_facets = np.ones_like(named_product)
    whole = m["type"].copy()
    for f in V.FACETS:
        named_facets &= m[f] | ~intent[f"expr_{f}"][s]
        wanted = intent[f][s] >= 0 if f in ("recipient", "occasion") else np.ones_like(whole)
        whole &= m[f] | ~wanted
    g1 = named_product
    g2 = g1 & named_facets
    g3 = g2 & whole
    grades = g1.astype(np.int8) + g2 + g3
    return np.where(pad, 0, grades).astype(np.int8)


def available(latent: LatentTruth, sessions: np.ndarray, cand: np.ndarray) -> np.ndarray:
    """Whether each candidate listing already exists at the session's time."""
    return latent.listings["created_day"][cand] <= latent.intents["day"][np.asarray(sessions)][:, None]


def ideal_gains(latent: LatentTruth, sessions: np.ndarray, k: int, chunk: int = 256) -> np.ndarray:
    """The ``k`` best relevance grades in the whole available catalogue, per session (for ideal DCG).

    A query that names a product type gives grade 0 to every other type, so only that type's listings
    are scored; category and gift queries scan the whole catalogue.
    """
    sessions = np.asarray(sessions)
    types = latent.listings["type"]
    out = np.zeros((sessions.size, k), dtype=np.int8)
    named = latent.intents["expr_type"][sessions]
    groups = [(np.flatnonzero(named & (latent.intents["type"][sessions] == t)), np.flatnonzero(types == t))
              for t in np.unique(latent.intents["type"][sessions[named]])]
    groups.append((np.flatnonzero(~named), np.arange(types.size)))
    for rows, cand_all in groups:
        kk = min(k, cand_all.size)
        for start in range(0, rows.size, chunk):
            r = rows[start:start + chunk]
            s = sessions[r]
            cand = np.broadcast_to(cand_all, (s.size, cand_all.size))
            g = np.where(available(latent, s, cand), relevance_grades(latent, s, cand), 0)
            top = -np.partition(-g, kk - 1, axis=1)[:, :kk]
            out[r, :kk] = -np.sort(-top, axis=1)
    return out


def choice_sets(latent: LatentTruth, sessions: np.ndarray, chunk: int
                ) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """``(type, session rows, listings of that type)`` per chunk of sessions wanting one product type.

    A buyer chooses among the listings of the type they want (other types have far lower utility), so
    whole-catalogue choices are computed one wanted type and one chunk of sessions at a time.
    """
    wanted = latent.intents["type"][sessions]
    for t in np.unique(wanted):
        rows = np.flatnonzero(wanted == t)
        cand_all = np.flatnonzero(latent.listings["type"] == t)
        for start in range(0, rows.size, chunk):
            yield int(t), rows[start:start + chunk], cand_all


def choice_probabilities(latent: LatentTruth, sessions: np.ndarray, cand: np.ndarray, chunk: int = 256
                         ) -> np.ndarray:
    """``(n, m)``: the probability that session ``i``'s buyer, shown the whole catalogue, buys ``cand[i, j]``.

    :func:`choose_from_catalogue` takes the argmax of utility plus standard Gumbel noise over the
    available listings of the wanted type, so the choice is a multinomial logit: ``exp(u_l) / sum_j
    exp(u_j)`` over that choice set, and 0 for a listing outside it (another type, not yet created,
    or padding ``-1``).
    """
    sessions = np.asarray(sessions)
    cand = np.asarray(cand)
    if cand.ndim != 2 or cand.shape[0] != sessions.size:
        raise ValueError(f"need one row of candidates per session, got {cand.shape} for {sessions.size} sessions")
    out = np.zeros(cand.shape)
    L = latent.listings
    for t, r, cand_all in choice_sets(latent, sessions, chunk):
        s = sessions[r]
        every = np.broadcast_to(cand_all, (s.size, cand_all.size))
        util = np.where(available(latent, s, every), utility(latent, s, every), -np.inf)
        top = util.max(axis=1, keepdims=True)
        log_z = top[:, 0] + np.log(np.exp(util - np.where(np.isfinite(top), top, 0.0)).sum(axis=1))
        c = np.where(cand[r] >= 0, cand[r], 0)
        ok = (cand[r] >= 0) & (L["type"][c] == t) & available(latent, s, c)
        out[r] = np.where(ok, np.exp(np.where(ok, utility(latent, s, c), 0.0) - log_z[:, None]), 0.0)
    return out


def choose_from_catalogue(latent: LatentTruth, sessions: np.ndarray, rng: np.random.Generator,
                          chunk: int = 512) -> np.ndarray:
    """What each buyer would buy if shown everything: argmax of utility + Gumbel noise.

    The choice set is every listing of the wanted product type that exists at the session's time; other
    types have so much lower utility that they would essentially never be chosen.
    """
    sessions = np.asarray(sessions)
    labels = np.full(sessions.size, -1, dtype=np.int64)
    for _, r, cand_all in choice_sets(latent, sessions, chunk):
        s = sessions[r]
        cand = np.broadcast_to(cand_all, (s.size, cand_all.size))
        util = utility(latent, s, cand) + rng.gumbel(size=cand.shape)
        util = np.where(available(latent, s, cand), util, -np.inf)
        best = np.argmax(util, axis=1)
        ok = np.isfinite(util[np.arange(s.size), best])
        labels[r] = np.where(ok, cand_all[best], -1)
    return labels
