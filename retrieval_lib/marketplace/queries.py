"""Search sessions: who searches when, what they want (the latent intent), and what they type.

The query is a *rendering* of part of the intent. Short queries name only the product (or only a
category, or a recipient); they are few, so they repeat and become head queries. Long queries name
several facets, often in buyer words and sometimes misspelt; they are many and rare: the tail.
"""

from __future__ import annotations

import numpy as np

from retrieval_lib.marketplace import vocabulary as V
from retrieval_lib.marketplace.config import MarketplaceConfig
from retrieval_lib.marketplace.vocab_index import BUYER, COMMON, VocabIndex, misspell, render
from retrieval_lib.marketplace.world import sample_rows

#: Query modes when no facet is named: the product word, the category, or "gift for <recipient>".
MODE_TYPE, MODE_CATEGORY, MODE_GIFT = 0, 1, 2
#: Shares of intents that are for a recipient or an occasion.
INTENT_RECIPIENT_SHARE, INTENT_OCCASION_SHARE = 0.25, 0.2


def make_sessions(cfg: MarketplaceConfig, users: dict[str, np.ndarray], rng: np.random.Generator,
                  window: tuple[float, float] | None = None, n: int | None = None) -> dict[str, np.ndarray]:
    """Draw ``n`` (user, day) pairs in ``window``: users by activity, days after sign-up; sorted by time.

    The defaults are the logged window ``[0, n_days)`` with ``n_sessions`` sessions; the archive uses
    ``[-archive_days, 0)``. Only users who signed up before the window ends can search in it.
    """
    lo, hi = window if window is not None else (0.0, float(cfg.n_days))
    n = cfg.n_sessions if n is None else n
    p = np.where(users["signup_day"] < hi, users["activity"], 0.0)
    user = rng.choice(p.size, size=n, p=p / p.sum())
    start = np.clip(users["signup_day"][user], lo, None)
    day = start + rng.random(n) * (hi - start)
    order = np.argsort(day, kind="stable")
    return {"user": user[order], "day": day[order]}


def make_intents(cfg: MarketplaceConfig, vi: VocabIndex, users: dict[str, np.ndarray],
                 sessions: dict[str, np.ndarray], rng: np.random.Generator) -> dict[str, np.ndarray]:
    """What each session's buyer wants: a product type and facet values drawn from their tastes."""
    u = sessions["user"]
    n = u.size
    category = sample_rows(rng, users["category_pref"][u])
    type_ = np.empty(n, dtype=np.int64)
    for ci, types in enumerate(vi.types_of_category):
        idx = np.flatnonzero(category == ci)
        type_[idx] = rng.choice(types, size=idx.size)
    return {
        "category": category, "type": type_,
        "aesthetic": sample_rows(rng, users["aesthetic_pref"][u]),
        "colour": sample_rows(rng, users["colour_pref"][u]),
        "style": sample_rows(rng, users["style_pref"][u]),
        "material": rng.integers(vi.n_materials, size=n),
        "recipient": np.where(rng.random(n) < INTENT_RECIPIENT_SHARE,
                              rng.integers(len(vi.recipient_terms), size=n), -1),
        "occasion": np.where(rng.random(n) < INTENT_OCCASION_SHARE,
                             rng.integers(len(vi.occasion_terms), size=n), -1),
    }


def choose_expression(cfg: MarketplaceConfig, intents: dict[str, np.ndarray], rng: np.random.Generator
                      ) -> dict[str, np.ndarray]:
    """Decide how specific each query is and which parts of the intent it names.

    Returns boolean arrays ``expr_<facet>`` for every facet plus ``expr_type`` and ``expr_category``,
    the number of named facets ``level`` and the zero-facet ``mode``.
    """
    n = intents["type"].size
    level = rng.choice(4, size=n, p=np.asarray(cfg.specificity))
    available = np.stack([intents[f] >= 0 if f in ("recipient", "occasion") else np.ones(n, bool)
                          for f in V.FACETS], axis=1)
    priority = np.where(available, rng.random((n, len(V.FACETS))), -1.0)
    rank = np.argsort(np.argsort(-priority, axis=1), axis=1)
    named = (rank < level[:, None]) & available
    mode = np.full(n, MODE_TYPE)
    u = rng.random(n)
    zero = level == 0
    mode[zero & (u < 0.1)] = MODE_CATEGORY
    mode[zero & (u >= 0.1) & (u < 0.25) & (intents["recipient"] >= 0)] = MODE_GIFT
    named[:, V.FACETS.index("recipient")] |= mode == MODE_GIFT
    out = {f"expr_{f}": named[:, j] for j, f in enumerate(V.FACETS)}
    out["expr_type"] = mode == MODE_TYPE
    out["expr_category"] = mode == MODE_CATEGORY
    out["level"] = named.sum(axis=1)
    out["mode"] = mode
    return out


def render_queries(cfg: MarketplaceConfig, vi: VocabIndex, intents: dict[str, np.ndarray],
                   expr: dict[str, np.ndarray], rng: np.random.Generator) -> list[str]:
    """Type the queries: short ones in common words, long ones mostly in buyer words, some misspelt."""
    n = intents["type"].size
    long_query = expr["level"] >= 2
    words: dict[str, list[str]] = {}
    for facet in (*V.FACETS, "type"):
        idx = np.flatnonzero(expr[f"expr_{facet}"])
        if facet == "type":
            terms = [vi.type_terms[t] for t in intents["type"][idx].tolist()]
            p_buyer = np.where(long_query[idx], cfg.buyer_type_rate, 0.0)
        else:
            terms = vi.facet_terms(facet, intents[facet][idx], intents["category"][idx])
            p_buyer = np.where(long_query[idx], cfg.buyer_vocab_rate, cfg.buyer_vocab_rate / 3)
        kinds = np.where(rng.random(idx.size) < p_buyer, BUYER, COMMON).astype(np.int8)
        col = [""] * n
        for i, w in zip(idx.tolist(), render(terms, kinds, rng.random(idx.size)), strict=True):
            col[i] = w
        words[facet] = col
    typo = rng.random((n, 7)) < cfg.misspell_rate
    order = ("aesthetic", "style", "colour", "material", "type", "recipient", "occasion")
    queries = []
    for i in range(n):
        parts = []
        for j, slot in enumerate(order):
            w = words[slot][i]
            if not w:
                continue
            if long_query[i] and typo[i, j]:
                w = misspell(w, rng)
            parts.append(("gift for " if expr["mode"][i] == MODE_GIFT else "for ") + w
                         if slot == "recipient" else w)
        if expr["mode"][i] == MODE_CATEGORY:
            parts.insert(len(parts), vi.category_names[intents["category"][i]])
        queries.append(" ".join(parts))
    return queries
