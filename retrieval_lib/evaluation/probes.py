"""Probes that explain a model with the latent truth: what a history or a vector reveals.

They read latent truth, so they explain and measure; nothing here is ever a feature.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from retrieval_lib.evaluation.offline import EvaluationSet
from retrieval_lib.marketplace import Marketplace
from retrieval_lib.marketplace.behaviour import choice_probabilities
from retrieval_lib.marketplace.vocab_index import vocab_index


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


def neighbor_precision(vectors: np.ndarray | sparse.spmatrix, labels: np.ndarray, k: int = 10,
                       rows: np.ndarray | None = None) -> float:
    """Mean share of each row's ``k`` nearest other rows (by inner product) that carry the same label.

    Works on dense vectors and on sparse ones (e.g. TF-IDF). ``rows`` limits the queries to a sample;
    neighbours are always searched among all rows.
    """
    labels = np.asarray(labels)
    n = vectors.shape[0]
    if labels.shape[0] != n:
        raise ValueError(f"{labels.shape[0]} labels for {n} vectors")
    if not 0 < k < n:
        raise ValueError(f"k must be in [1, {n - 1}], got {k}")
    rows = np.arange(n) if rows is None else np.asarray(rows)
    hits = []
    for start in range(0, rows.size, 1024):
        r = rows[start:start + 1024]
        sims = vectors[r] @ vectors.T
        sims = sims.toarray() if sparse.issparse(sims) else np.asarray(sims, dtype=np.float64)
        sims[np.arange(r.size), r] = -np.inf  # a row is not its own neighbour
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        hits.append((labels[top] == labels[r][:, None]).mean(axis=1))
    return float(np.concatenate(hits).mean())


def co_purchase_agreement(world: Marketplace, facet: str = "aesthetic", split: str = "train",
                          n_random: int = 100_000, seed: int = 0) -> dict[str, float]:
    """How often two listings bought by the same buyer share a hidden ``facet``, against random pairs.

    The engagement structure a graph can learn (chapter 1): if co-purchased listings agree on the facet
    far more often than random pairs, behaviour carries that facet even where text does not.
    """
    logs = world.observed.logs(split)
    bought = logs.loc[logs["purchase"], ["user_id", "listing_id"]]
    pairs = bought.merge(bought, on="user_id")
    pairs = pairs[pairs["listing_id_x"] < pairs["listing_id_y"]]
    values = world.latent.listings[facet]
    rng = np.random.default_rng(seed)
    a, b = rng.integers(len(values), size=(2, n_random))
    same = values[pairs["listing_id_x"].to_numpy()] == values[pairs["listing_id_y"].to_numpy()]
    return {"co_purchased": float(same.mean()) if len(pairs) else float("nan"),
            "random": float((values[a] == values[b]).mean()), "pairs": len(pairs)}


def named_in_text(world: Marketplace, facet: str = "aesthetic") -> tuple[np.ndarray, np.ndarray]:
    """Per listing: whether its title, and whether its tags, name the listing's own hidden ``facet`` value.

    A word of the value's surface forms (common, seller or buyer) in the title, or a tag equal to one of
    them: what a perfect reader of the listing's text could learn about the facet. Listings without the
    facet (no recipient, say) count as unnamed. Returns two boolean arrays in listing-id order.
    """
    vi = vocab_index()
    lat = world.latent.listings
    idx = np.flatnonzero(lat[facet] >= 0)
    terms = vi.facet_terms(facet, lat[facet][idx], lat["category"][idx])
    listings = world.observed.listings
    in_title = np.zeros(len(listings), bool)
    in_tags = np.zeros(len(listings), bool)
    for i, term in zip(idx.tolist(), terms, strict=True):
        forms = set(term.common + term.seller + term.buyer)
        title = f" {listings['title'].iat[i]} "
        in_title[i] = any(f" {form} " in title for form in forms)
        in_tags[i] = bool(forms & set(listings["tags"].iat[i]))
    return in_title, in_tags


def named_rate(world: Marketplace, facet: str = "aesthetic") -> dict[str, float]:
    """Share of listings whose title, and whose tags, name the listing's own hidden ``facet`` value.

    How much of a latent attribute the text shows (chapter 1); see :func:`named_in_text`.
    """
    in_title, in_tags = named_in_text(world, facet)
    return {"title": float(in_title.mean()), "tags": float(in_tags.mean()),
            "either": float((in_title | in_tags).mean())}


def would_buy_rate(world: Marketplace, session_ids: np.ndarray, ids: np.ndarray) -> float:
    """Expected share of listings ``ids`` ``(n, m)`` that session's buyer would buy from the whole catalogue.

    The mean, over every non-padding entry, of the buyer's choice probability
    (:func:`~retrieval_lib.marketplace.behaviour.choice_probabilities`): for listings mined as negatives,
    the share that are in truth what the buyer wanted (false negatives). Latent truth: evaluation only.
    """
    ids = np.asarray(ids)
    valid = ids >= 0
    if not valid.any():
        raise ValueError("no listings to rate: every id is padding")
    return float(choice_probabilities(world.latent, np.asarray(session_ids), ids)[valid].mean())
