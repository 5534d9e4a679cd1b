"""The ceilings: retrievers that know what buyers value (latent truth, evaluation only).

The oracle ranks the listings that exist at the request by the buyer's *expected* utility under the
world's choice model (the utility without its noise). Knowing the whole intent, no model can do
better, so its recall@K is the most any model can reach in this world, and every comparison can be
read as a share of the gap between a baseline and this ceiling.

The **ceiling ladder** asks what each kind of knowledge about the buyer is worth. Every rung is told
the wanted product type (as the top oracle is) and ranks that type's listings by the utility it
*expects* given what it knows; the rest of the utility enters as an expectation:

``query_no_location``
    the facets the query names and the listing's own properties; the buyer's tastes, price level and
    location are the population's;
``query``
    the same plus where the buyer is;
``history_text``
    plus a Bayes reading of the buyer's tastes from the listings they engaged with earlier, counting
    only what those listings' titles and tags say;
``history_posterior``
    the same, counting the engaged listings' true (latent) colour, style and aesthetic;
``taste``
    the buyer's true tastes and price level (but not the facet values of this request's intent);
``intent``
    the whole intent: the expected utility itself.

Utility is linear in the facet-match indicators, so the expected utility is the utility with each
unknown match replaced by its probability. These read latent truth: they measure, they are never models.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.special import betainc

from retrieval_lib.evaluation.offline import EvaluationResult, EvaluationSet, evaluate
from retrieval_lib.evaluation.probes import named_in_text
from retrieval_lib.marketplace import LatentTruth, Marketplace
from retrieval_lib.marketplace import vocabulary as V
from retrieval_lib.marketplace.behaviour import AESTHETIC_FLOOR, available, choice_sets, facet_matches, utility
from retrieval_lib.marketplace.config import ChoiceWeights
from retrieval_lib.marketplace.queries import INTENT_OCCASION_SHARE, INTENT_RECIPIENT_SHARE
from retrieval_lib.marketplace.vocab_index import vocab_index
from retrieval_lib.serving.base import PAD

#: Concentrations of the symmetric Dirichlet priors the generator draws each buyer's tastes from
#: (:func:`retrieval_lib.marketplace.world.make_users`; a test checks that they agree).
TASTE_PRIOR: dict[str, float] = {"colour": 0.4, "style": 0.35, "aesthetic": 0.2}
#: Requests whose buyers stand for "the population" where a rung does not know the buyer's price level or
#: location: this many, evenly spread over the logged window (so buyers count as often as they search).
POPULATION_SAMPLE = 512
#: Gauss-Legendre nodes and weights of the expected aesthetic-preference term's integral.
_QUAD_NODES, _QUAD_WEIGHTS = np.polynomial.legendre.leggauss(48)


@dataclass(frozen=True)
class Knowledge:
    """What one rung of the ladder knows besides the query's named facets and the listings themselves.

    Attributes
    ----------
    location : bool
        Where the buyer is (else the distance terms are the population's average).
    history : str or None
        ``'latent'``: the buyer's earlier engagements, read by their listings' latent facets; ``'text'``:
        only the facets those listings' titles or tags name; ``None``: no history.
    taste : bool
        The buyer's true colour, style and aesthetic preferences and price level.
    intent : bool
        The whole intent of the request (every facet value).
    """

    location: bool = True
    history: str | None = None
    taste: bool = False
    intent: bool = False


#: The rungs, lowest first, and what each knows.
KNOWLEDGE: dict[str, Knowledge] = {
    "query_no_location": Knowledge(location=False),
    "query": Knowledge(),
    "history_text": Knowledge(history="text"),
    "history_posterior": Knowledge(history="latent"),
    "taste": Knowledge(taste=True),
    "intent": Knowledge(taste=True, intent=True),
}
RUNGS: tuple[str, ...] = tuple(KNOWLEDGE)


def unknown_weights(knows: Knowledge) -> tuple[str, ...]:
    """The buyer-specific utility weights whose terms a rung must average over the population."""
    return (() if knows.taste else ("price",)) + (() if knows.location else ("distance", "international"))


def known_weights(weights: ChoiceWeights, knows: Knowledge) -> ChoiceWeights:
    """The utility weights whose terms a rung can compute exactly (the others set to zero).

    Below the top rung the facet terms are never exact (the intent's unnamed facets are unknown), and
    below ``taste`` neither is the aesthetic-preference term; their expectations are added separately.
    """
    if knows.intent:
        return weights
    zero = dict.fromkeys(("facet", *unknown_weights(knows), *(() if knows.taste else ("aesthetic",))), 0.0)
    return dataclasses.replace(weights, **zero)


def population_terms(latent: LatentTruth, names: tuple[str, ...], n: int = POPULATION_SAMPLE,
                     chunk: int = 64) -> np.ndarray:
    """Per listing: the utility terms of weights ``names``, averaged over the buyers of ``n`` requests.

    The requests are spread evenly over the logged window (sessions are in time order), so a buyer
    counts as often as they search. It is :func:`~retrieval_lib.marketplace.behaviour.utility` with
    every other weight set to zero, e.g. the expected price term ``-w_price E|rel_price|`` over the
    population's price levels, and the expected distance and international terms over where buyers live.
    """
    kept = {f.name: getattr(latent.weights, f.name) if f.name in names else 0.0
            for f in dataclasses.fields(latent.weights)}
    only = dataclasses.replace(latent, weights=ChoiceWeights(**kept))
    sample = np.unique(np.linspace(0, latent.intents["user"].size - 1, n).round().astype(np.int64))
    listings = np.arange(latent.listings["type"].size)
    total = np.zeros(listings.size)
    for start in range(0, sample.size, chunk):
        s = sample[start:start + chunk]
        total += utility(only, s, np.broadcast_to(listings, (s.size, listings.size))).sum(axis=0)
    return total / sample.size


def expected_aesthetic_term(alpha: np.ndarray, floor: float = AESTHETIC_FLOOR) -> np.ndarray:
    """``E[max(log(K p_a), floor)]`` for preferences ``p ~ Dirichlet(alpha)``, per row and aesthetic ``a``.

    The aesthetic-preference term of utility (before its weight) in expectation over a belief about the
    buyer's taste. ``p_a`` is Beta(``alpha_a``, ``sum(alpha) - alpha_a``), and with ``t = e^floor / K``
    ``E[max(log(K p), floor)] = floor + integral from log t to 0 of P(p > e^y) dy`` (integration by parts),
    a smooth integral computed by Gauss-Legendre quadrature over the distinct Beta parameters.
    """
    alpha = np.asarray(alpha, dtype=np.float64)
    k = alpha.shape[1]
    low = floor - np.log(k)  # log p below which the floor holds
    if low >= 0:
        return np.full(alpha.shape, floor)
    rest = np.broadcast_to(alpha.sum(axis=1, keepdims=True), alpha.shape) - alpha
    pairs, inverse = np.unique(np.stack([alpha.ravel(), rest.ravel()], axis=1), axis=0, return_inverse=True)
    y = low * (1.0 - _QUAD_NODES) / 2.0  # nodes mapped from [-1, 1] onto [low, 0]
    above = betainc(pairs[:, 1:], pairs[:, :1], -np.expm1(y)[None, :])  # P(p > e^y) = I_{1 - e^y}(b, a)
    value = floor + (above * _QUAD_WEIGHTS).sum(axis=1) * (-low / 2.0)
    return value[inverse.reshape(-1)].reshape(alpha.shape)


def engagements(world: Marketplace) -> pd.DataFrame:
    """Every logged engagement (click, cart or purchase) as ``user_id, day, listing_id``.

    The logged window's engaged impressions (their day is their session's exact latent day, so that the
    request's own session compares equal) and the older archive, which holds only engaged impressions.
    """
    imp = world.observed.impressions
    engaged = imp[imp["click"] | imp["cart"] | imp["purchase"]]
    sid = engaged["session_id"].to_numpy()
    intents = world.latent.intents
    archive = world.observed.archive
    return pd.DataFrame({
        "user_id": np.concatenate([intents["user"][sid], archive["user_id"].to_numpy(dtype=np.int64)]),
        "day": np.concatenate([intents["day"][sid], archive["day"].to_numpy(dtype=np.float64)]),
        "listing_id": np.concatenate([engaged["listing_id"].to_numpy(), archive["listing_id"].to_numpy()]),
    })


class EngagementHistory:
    """Counts of each colour, style and aesthetic among the listings a buyer engaged with before a request.

    ``text_only`` counts a listing's value only where its title or tags name it (what a perfect reader
    of the engaged listings' text could learn); otherwise every engaged listing counts by its latent value.
    """

    def __init__(self, world: Marketplace, text_only: bool = False) -> None:
        self.latent = world.latent
        events = engagements(world)
        days = np.concatenate([events["day"].to_numpy(), self.latent.intents["day"]])
        self._origin, self._span = days.min(), days.max() - days.min() + 1.0
        self._keys: dict[str, np.ndarray] = {}
        self._cumulative: dict[str, np.ndarray] = {}
        for facet in TASTE_PRIOR:
            listing = events["listing_id"].to_numpy()
            keep = np.logical_or(*named_in_text(world, facet))[listing] if text_only else np.ones(listing.size, bool)
            self._index(facet, events["user_id"].to_numpy()[keep], events["day"].to_numpy()[keep],
                        self.latent.listings[facet][listing[keep]])

    def _key(self, user: np.ndarray, day: np.ndarray) -> np.ndarray:
        """One sortable number per (user, day): users in blocks, time within a block."""
        return user * self._span + (day - self._origin)

    def _index(self, facet: str, user: np.ndarray, day: np.ndarray, value: np.ndarray) -> None:
        """Sort one facet's events by (user, day) and keep the running counts of each value."""
        keys = self._key(user, day)
        order = np.argsort(keys, kind="stable")
        n_values = self.latent.users[f"{facet}_pref"].shape[1]
        onehot = np.zeros((order.size + 1, n_values))
        onehot[np.arange(1, order.size + 1), value[order]] = 1.0
        self._keys[facet] = keys[order]
        self._cumulative[facet] = np.cumsum(onehot, axis=0)

    def counts(self, sessions: np.ndarray, facet: str) -> np.ndarray:
        """``(n, K)``: engaged listings per value of ``facet`` by each session's buyer, strictly before it.

        Only engagements of an earlier time (day below the request's) count, never the request's own.
        """
        sessions = np.asarray(sessions)
        user = self.latent.intents["user"][sessions]
        keys, cumulative = self._keys[facet], self._cumulative[facet]
        before = np.searchsorted(keys, self._key(user, self.latent.intents["day"][sessions]), side="left")
        start = np.searchsorted(keys, self._key(user, np.full(sessions.size, self._origin)), side="left")
        return cumulative[before] - cumulative[start]


@dataclass(frozen=True)
class Belief:
    """What a rung believes about the buyers of ``n`` requests (rows follow the requests).

    Attributes
    ----------
    match : dict
        Per taste facet, ``(n, K)`` probabilities that the intent's value is each value.
    aesthetic : np.ndarray or None
        ``(n, K)`` expected aesthetic-preference term per aesthetic; ``None`` where the true taste is known.
    """

    match: dict[str, np.ndarray]
    aesthetic: np.ndarray | None

    def rows(self, r: np.ndarray) -> Belief:
        """The belief about a subset of the requests."""
        return Belief({f: p[r] for f, p in self.match.items()}, None if self.aesthetic is None else self.aesthetic[r])


def posterior(latent: LatentTruth, sessions: np.ndarray, history: EngagementHistory | None = None
              ) -> dict[str, np.ndarray]:
    """Dirichlet parameters ``(n, K)`` of each buyer's colour, style and aesthetic taste.

    The generator's prior, plus one count for each value the query names (an intent's facet values are
    draws from the buyer's tastes), plus the counts of earlier engaged listings when a history is given.
    """
    sessions = np.asarray(sessions)
    out = {}
    for facet, concentration in TASTE_PRIOR.items():
        n_values = latent.users[f"{facet}_pref"].shape[1]
        alpha = np.full((sessions.size, n_values), concentration)
        named = np.flatnonzero(latent.intents[f"expr_{facet}"][sessions])
        alpha[named, latent.intents[facet][sessions[named]]] += 1.0
        out[facet] = alpha + (history.counts(sessions, facet) if history is not None else 0.0)
    return out


class LadderOracle:
    """One rung of the ceiling ladder: listings of the wanted type by the utility expected given ``knows``.

    Buyers choose among listings of the type they want (other types have far lower utility; see
    :func:`~retrieval_lib.marketplace.behaviour.choose_from_catalogue`), so each rung ranks those. An
    unnamed facet matches with the probability the rung's belief gives (``query``: the population's
    tastes; ``history_*``: a Dirichlet posterior; ``taste``: the buyer's true preferences; material,
    recipient and occasion: the generator's shares); see the module docstring for the rungs.
    """

    def __init__(self, world: Marketplace, knows: str = "intent", chunk: int = 256) -> None:
        if knows not in KNOWLEDGE:
            raise ValueError(f"unknown rung {knows!r}; choose one of {RUNGS}")
        self.world = world
        self.knows = knows
        self.chunk = chunk
        self.knowledge = KNOWLEDGE[knows]
        latent = world.latent
        self._known = dataclasses.replace(latent, weights=known_weights(latent.weights, self.knowledge))
        unknown = unknown_weights(self.knowledge)
        self._population = population_terms(latent, unknown) if unknown else None
        history = self.knowledge.history
        self._history = EngagementHistory(world, text_only=history == "text") if history else None

    def belief(self, sessions: np.ndarray) -> Belief | None:
        """The rung's belief about each session's buyer (``None`` for the top rung, which knows the intent)."""
        k, latent = self.knowledge, self.world.latent
        if k.intent:
            return None
        if k.taste:
            user = latent.intents["user"][np.asarray(sessions)]
            return Belief({f: latent.users[f"{f}_pref"][user] for f in TASTE_PRIOR}, None)
        alpha = posterior(latent, sessions, self._history)
        return Belief({f: a / a.sum(axis=1, keepdims=True) for f, a in alpha.items()},
                      expected_aesthetic_term(alpha["aesthetic"]))

    def match_probabilities(self, sessions: np.ndarray, cand: np.ndarray, belief: Belief) -> dict[str, np.ndarray]:
        """``(n, m)`` probability that candidate ``cand[i, j]`` matches session ``i``'s intent, per facet.

        The facets the query names are known (the match itself); the others follow the belief (colour,
        style, aesthetic) or the generator's intent shares (material: uniform within the category;
        recipient and occasion: their share spread uniformly over the values).
        """
        latent = self.world.latent
        vi = vocab_index()
        s = np.asarray(sessions)[:, None]
        m = facet_matches(latent, np.asarray(sessions), cand)
        listing = latent.listings
        prior = {
            "material": m["category"] / vi.n_materials,
            "recipient": (listing["recipient"][cand] >= 0) * INTENT_RECIPIENT_SHARE / len(vi.recipient_terms),
            "occasion": (listing["occasion"][cand] >= 0) * INTENT_OCCASION_SHARE / len(vi.occasion_terms),
        }
        prior |= {f: np.take_along_axis(p, listing[f][cand], axis=1) for f, p in belief.match.items()}
        return {f: np.where(latent.intents[f"expr_{f}"][s], m[f], prior[f]) for f in V.FACETS}

    def expected_utility(self, sessions: np.ndarray, cand: np.ndarray, belief: Belief | None = None) -> np.ndarray:
        """``(n, m)`` utility of candidates ``cand`` that this rung expects for ``sessions`` (without noise).

        The terms the rung knows come from :func:`~retrieval_lib.marketplace.behaviour.utility` itself;
        each facet term enters with its match probability, the aesthetic-preference term with its
        expectation under the belief and the price and location terms, where unknown, as the population's.
        """
        sessions, cand = np.asarray(sessions), np.asarray(cand)
        score = utility(self._known, sessions, cand)
        if self.knowledge.intent:
            return score
        belief = self.belief(sessions) if belief is None else belief
        w = self.world.latent.weights
        expressed = self.world.latent.intents
        for f, p in self.match_probabilities(sessions, cand, belief).items():
            score = score + w.facet * p * (1.0 + w.expressed * expressed[f"expr_{f}"][sessions][:, None])
        if belief.aesthetic is not None:
            score = score + w.aesthetic * np.take_along_axis(belief.aesthetic,
                                                             self.world.latent.listings["aesthetic"][cand], axis=1)
        return score if self._population is None else score + self._population[cand]

    def retrieve(self, sessions: pd.DataFrame, k: int) -> np.ndarray:
        """Top-``k`` listing ids per session by expected utility (padded where a type has fewer)."""
        if k <= 0:
            raise ValueError(f"k must be positive, got {k}")
        latent = self.world.latent
        sids = sessions["session_id"].to_numpy(dtype=np.int64)
        belief = self.belief(sids)
        out = np.full((len(sids), k), PAD, dtype=np.int64)
        for _, r, cand_all in choice_sets(latent, sids, self.chunk):
            kk = min(k, cand_all.size)
            cand = np.broadcast_to(cand_all, (r.size, cand_all.size))
            util = self.expected_utility(sids[r], cand, None if belief is None else belief.rows(r))
            util = np.where(available(latent, sids[r], cand), util, -np.inf)
            top = np.argsort(-util, axis=1, kind="stable")[:, :kk]
            best = np.take_along_axis(util, top, axis=1)
            out[r, :kk] = np.where(np.isfinite(best), cand_all[top], PAD)
        return out


class OracleRetriever(LadderOracle):
    """The ceiling: listings of the wanted type, available at the session's time, by expected utility.

    The top rung of the ladder (``knows='intent'``): the buyer's whole intent and tastes are known.
    """

    def __init__(self, world: Marketplace, chunk: int = 256) -> None:
        super().__init__(world, "intent", chunk)


def ladder(eval_set: EvaluationSet, rungs: tuple[str, ...] = RUNGS,
           done: Mapping[str, EvaluationResult] | None = None) -> dict[str, EvaluationResult]:
    """Evaluate each rung of the ceiling ladder on ``eval_set``, lowest first.

    ``done`` holds rungs already evaluated on the same set (e.g. the oracle's ``intent`` result), which
    are reused rather than computed again.
    """
    done = dict(done or {})
    unknown = [r for r in (*rungs, *done) if r not in KNOWLEDGE]
    if unknown:
        raise ValueError(f"unknown rungs {unknown}; choose from {RUNGS}")
    return {r: done[r] if r in done else evaluate(LadderOracle(eval_set.world, r), eval_set) for r in rungs}


def ladder_table(results: Mapping[str, EvaluationResult], metric: str = "recall@100",
                 groups: tuple[str, ...] = ("all", "head", "torso", "tail")) -> pd.DataFrame:
    """One row per rung, one column per group: ``metric`` of each rung's result."""
    return pd.DataFrame({g: {r: res.value(metric, g) for r, res in results.items()} for g in groups})
