"""The ceiling ladder: each rung's expected utility on hand-built cases, and its honesty on the tiny world."""

import dataclasses

import numpy as np
import pandas as pd
import pytest

from retrieval_lib.evaluation.offline import EvaluationSet, evaluate
from retrieval_lib.evaluation.oracle import (
    RUNGS,
    TASTE_PRIOR,
    EngagementHistory,
    LadderOracle,
    OracleRetriever,
    expected_aesthetic_term,
    ladder,
    ladder_table,
    population_terms,
)
from retrieval_lib.marketplace import LatentTruth, Marketplace, MarketplaceConfig, ObservedMarketplace
from retrieval_lib.marketplace import world as generator
from retrieval_lib.marketplace.behaviour import AESTHETIC_FLOOR
from retrieval_lib.marketplace.config import ChoiceWeights
from retrieval_lib.marketplace.vocab_index import vocab_index

W = ChoiceWeights()
N_AESTHETICS = 24
#: Listing 1 is the better one by quality; listing 0 has the colour (blue) the buyer's history shows.
QUALITY_GAP = 0.1


def _hand_world(history_title: str = "ring", archive: pd.DataFrame | None = None) -> Marketplace:
    """Two necklaces (0: blue, 1: red and a little better), two rings (2: blue, 3: red), one buyer.

    Session 0 (day 1) clicks the blue ring; session 1 (day 2) is the request: a necklace, no facet named,
    whose own page shows a click on the red necklace; session 2 (day 3), later, clicks the red ring.
    Everything else (shop, place, price, style, aesthetic) is the same for every listing and buyer.
    """
    n = 4
    listings = {
        "shop": np.zeros(n, int), "category": np.zeros(n, int), "type": np.array([0, 0, 1, 1]),
        "style": np.zeros(n, int), "vague": np.zeros(n, bool), "colour": np.array([0, 1, 0, 1]),
        "material": np.zeros(n, int), "recipient": np.full(n, -1), "occasion": np.full(n, -1),
        "aesthetic": np.zeros(n, int), "quality": np.array([0.0, QUALITY_GAP, 0.0, 0.0]),
        "log_price": np.full(n, 3.0), "base_log_price": np.full(n, 3.0), "created_day": np.full(n, -10.0),
        "shop_lat": np.full(n, 40.0), "shop_lon": np.full(n, -75.0), "shop_country": np.zeros(n, int),
    }
    colour_pref = np.full((2, 10), 0.01)
    colour_pref[:, 0] = 0.91
    users = {
        "lat": np.full(2, 40.0), "lon": np.full(2, -75.0), "country": np.zeros(2, int),
        "signup_day": np.full(2, -100.0), "activity": np.ones(2), "category_pref": np.full((2, 8), 1 / 8),
        "colour_pref": colour_pref, "style_pref": np.full((2, 8), 1 / 8),
        "aesthetic_pref": np.full((2, N_AESTHETICS), 1 / N_AESTHETICS), "log_price_level": np.zeros(2),
    }
    s = 3
    intents = {
        "category": np.zeros(s, int), "type": np.array([1, 0, 1]), "aesthetic": np.zeros(s, int),
        "colour": np.array([0, 0, 1]), "style": np.zeros(s, int), "material": np.zeros(s, int),
        "recipient": np.full(s, -1), "occasion": np.full(s, -1), "user": np.zeros(s, int),
        "day": np.array([1.0, 2.0, 3.0]), "level": np.zeros(s, int), "mode": np.zeros(s, int),
        **{f"expr_{f}": np.zeros(s, bool) for f in (*TASTE_PRIOR, "material", "recipient", "occasion", "category")},
        "expr_type": np.ones(s, bool),
    }
    latent = LatentTruth(listings=listings, users=users, intents=intents, labels=np.full(s, -1), weights=W,
                         n_aesthetics=N_AESTHETICS)
    observed = ObservedMarketplace(
        listings=pd.DataFrame({"listing_id": np.arange(n), "title": ["necklace", "necklace", history_title, "ring"],
                               "tags": [("necklace",), ("necklace",), ("ring",), ("ring",)]}),
        shops=pd.DataFrame(), users=pd.DataFrame(),
        sessions=pd.DataFrame({"session_id": np.arange(s), "user_id": 0, "query": "necklace",
                               "day": intents["day"], "split": "test"}),
        impressions=pd.DataFrame({"session_id": [0, 1, 2], "listing_id": [2, 1, 3], "position": 0,
                                  "click": True, "cart": False, "purchase": False}),
        train_end=0.0, valid_end=1.0)
    if archive is not None:
        observed = dataclasses.replace(observed, archive=archive)
    return Marketplace(config=MarketplaceConfig.preset("tiny"), observed=observed, latent=latent)


def _gap(world: Marketplace, rung: str) -> float:
    """Expected utility of the blue necklace minus the red one, for the request (session 1)."""
    util = LadderOracle(world, rung).expected_utility(np.array([1]), np.array([[0, 1]]))
    return float(util[0, 0] - util[0, 1])


REQUEST = pd.DataFrame({"session_id": [1]})
#: Posterior mean of blue minus red after one blue click: (0.4 + 1 - 0.4) / (10 * 0.4 + 1).
POSTERIOR_GAP = 1.0 / (10 * TASTE_PRIOR["colour"] + 1)


@pytest.mark.parametrize(("rung", "gap"), [
    ("query_no_location", -W.quality * QUALITY_GAP),  # colour unknown: 1/10 each, quality decides
    ("query", -W.quality * QUALITY_GAP),
    ("history_text", -W.quality * QUALITY_GAP),  # the clicked ring's text does not say "blue"
    ("history_posterior", W.facet * POSTERIOR_GAP - W.quality * QUALITY_GAP),
    ("taste", W.facet * (0.91 - 0.01) - W.quality * QUALITY_GAP),
    ("intent", W.facet - W.quality * QUALITY_GAP),  # the intent's colour is blue
])
def test_each_rung_expects_what_its_knowledge_implies(rung, gap):
    world = _hand_world()
    assert _gap(world, rung) == pytest.approx(gap)
    first = 0 if gap > 0 else 1
    assert LadderOracle(world, rung).retrieve(REQUEST, 2).tolist() == [[first, 1 - first]]


def test_the_text_rung_counts_a_colour_the_clicked_title_names():
    world = _hand_world(history_title="blue ring")
    assert _gap(world, "history_text") == pytest.approx(W.facet * POSTERIOR_GAP - W.quality * QUALITY_GAP)


def test_the_query_rung_adds_up_the_utility_by_hand():
    vi = vocab_index()
    # every facet unnamed: colour 1/10, style 1/8, aesthetic 1/24, material 1/4; no recipient or occasion
    facets = W.facet * (1 / 10 + 1 / 8 + 1 / N_AESTHETICS + 1 / vi.n_materials)
    prior = np.full((1, N_AESTHETICS), TASTE_PRIOR["aesthetic"])
    aesthetic = W.aesthetic * expected_aesthetic_term(prior)[0, 0]
    # same place as the shop, and every buyer's price level equals the listings' relative price (0)
    util = LadderOracle(_hand_world(), "query").expected_utility(np.array([1]), np.array([[0, 1]]))
    np.testing.assert_allclose(util[0], facets + aesthetic + W.quality * np.array([0.0, QUALITY_GAP]))


def test_history_never_reads_an_engagement_at_or_after_the_request():
    # the request's own click (red, day 2) and the later one (red, day 3) are not counted; nor are archive
    # rows of the same buyer at the request's time or after, nor another buyer's
    late = pd.DataFrame({"user_id": [0, 0, 1], "query": "ring", "day": [2.0, 2.5, 1.0], "listing_id": [3, 3, 3],
                         "click": True, "cart": False, "purchase": False})
    for world in (_hand_world(), _hand_world(archive=late)):
        counts = EngagementHistory(world).counts(np.array([1]), "colour")
        assert counts.tolist() == [[1.0] + [0.0] * 9]
        assert LadderOracle(world, "history_posterior").retrieve(REQUEST, 2).tolist() == [[0, 1]]
    # one red click just before the request does count (the check above can fail)
    early = late.assign(day=[1.5, 2.5, 1.0])
    counts = EngagementHistory(_hand_world(archive=early)).counts(np.array([1]), "colour")
    assert counts.tolist() == [[1.0, 1.0] + [0.0] * 8]


def test_history_counts_match_a_direct_count_on_the_tiny_world(tiny_world):
    es = EvaluationSet.build(tiny_world, "test", max_sessions=60)
    sid = es.sessions["session_id"].to_numpy()
    counts = EngagementHistory(tiny_world).counts(sid, "style")
    logs = tiny_world.observed.logs()
    engaged = logs[logs["click"] | logs["cart"] | logs["purchase"]]
    days = tiny_world.latent.intents["day"]
    style = tiny_world.latent.listings["style"]
    archive = tiny_world.observed.archive
    assert counts.sum() > 0
    for row, s in enumerate(sid):
        user = tiny_world.latent.intents["user"][s]
        mine = engaged[(engaged["user_id"] == user) & (days[engaged["session_id"].to_numpy()] < days[s])]
        older = archive[(archive["user_id"] == user) & (archive["day"] < days[s])]
        seen = np.concatenate([mine["listing_id"].to_numpy(), older["listing_id"].to_numpy()])
        np.testing.assert_array_equal(counts[row], np.bincount(style[seen], minlength=counts.shape[1]))


def test_the_posterior_without_history_is_the_query_rung(tiny_world):
    es = EvaluationSet.build(tiny_world, "test")
    sid = es.sessions["session_id"].to_numpy()
    history = EngagementHistory(tiny_world)
    fresh = sid[sum(history.counts(sid, f).sum(axis=1) for f in TASTE_PRIOR) == 0][:20]
    assert fresh.size > 0
    cand = np.broadcast_to(np.arange(200), (fresh.size, 200))
    query = LadderOracle(tiny_world, "query").expected_utility(fresh, cand)
    posterior = LadderOracle(tiny_world, "history_posterior").expected_utility(fresh, cand)
    np.testing.assert_allclose(posterior, query)


def test_the_intent_rung_is_the_oracle(tiny_world):
    sessions = EvaluationSet.build(tiny_world, "test").sessions
    np.testing.assert_array_equal(LadderOracle(tiny_world, "intent").retrieve(sessions, 50),
                                  OracleRetriever(tiny_world).retrieve(sessions, 50))


def test_unknown_rungs_and_bad_depths_are_clear_errors(tiny_world):
    with pytest.raises(ValueError, match="unknown rung"):
        LadderOracle(tiny_world, "clairvoyant")
    with pytest.raises(ValueError, match="unknown rungs"):
        ladder(EvaluationSet.build(tiny_world, "test", max_sessions=5), rungs=("query", "tastes"))
    sessions = tiny_world.observed.split("test").iloc[:3]
    for k in (0, -1):
        with pytest.raises(ValueError, match="k must be positive"):
            LadderOracle(tiny_world, "query").retrieve(sessions, k)


def test_the_expected_aesthetic_term_matches_sampling():
    rng = np.random.default_rng(0)
    alpha = np.array([[0.2] * 23 + [3.2], [1.2, 5.2] + [0.2] * 22])
    exact = expected_aesthetic_term(alpha)
    for row, a in enumerate(alpha):
        p = rng.dirichlet(a, 200_000)
        sampled = np.maximum(np.log(np.maximum(p * a.size, 1e-300)), AESTHETIC_FLOOR).mean(axis=0)
        np.testing.assert_allclose(exact[row], sampled, atol=0.02)


def test_population_terms_average_the_price_term_over_buyers():
    world = _hand_world()
    users = dict(world.latent.users, log_price_level=np.array([0.2, -0.6]))
    intents = dict(world.latent.intents, user=np.array([0, 1, 1]))
    latent = dataclasses.replace(world.latent, users=users, intents=intents)
    # requests 0, 1, 2 have buyers 0, 1, 1: levels 0.2, -0.6, -0.6 against a relative price of 0
    np.testing.assert_allclose(population_terms(latent, ("price",)), -W.price * (0.2 + 0.6 + 0.6) / 3)


def test_the_taste_prior_is_the_generators():
    cfg = MarketplaceConfig.preset("tiny", n_users=20_000)
    users = generator.make_users(cfg, vocab_index(), np.random.default_rng(0))
    for facet, concentration in TASTE_PRIOR.items():
        p = users[f"{facet}_pref"]
        k = p.shape[1]
        # symmetric Dirichlet: E[p_i^2] = (alpha + 1) / (k (k alpha + 1)), solved for alpha
        m2 = (p**2).mean()
        fitted = (1 - k * m2) / (k * k * m2 - 1)
        assert fitted == pytest.approx(concentration, rel=0.05), facet


def test_the_ladder_reuses_done_rungs_and_climbs_on_the_tiny_world(tiny_world):
    es = EvaluationSet.build(tiny_world, "test")
    top = evaluate(OracleRetriever(tiny_world), es)
    results = ladder(es, done={"intent": top})
    assert list(results) == list(RUNGS) and results["intent"] is top
    recall = ladder_table(results, "recall@10")["all"]
    assert recall["query_no_location"] < recall["query"] < recall["history_posterior"] < recall["intent"]
