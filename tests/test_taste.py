"""The taste block: word profiles from earlier engagements only, a click model's word weights, the retriever."""

import numpy as np
import pandas as pd
import pytest
import torch

from retrieval_lib.features.taste import (
    earlier_engagements,
    engagements,
    listing_words,
    taste_profiles,
)
from retrieval_lib.marketplace.data import ObservedMarketplace
from retrieval_lib.models.taste import TasteConfig, TasteModel, TasteRetriever, choose_taste_weight
from retrieval_lib.models.unified import UnifiedConfig, UnifiedRetriever, fit_unified
from retrieval_lib.training.pairs import validation_pairs
from retrieval_lib.training.trainer import TrainConfig


def _listings(titles: list[str]) -> pd.DataFrame:
    return pd.DataFrame({"listing_id": np.arange(len(titles)), "title": titles,
                         "tags": [[] for _ in titles], "taxonomy": ["home"] * len(titles)})


def _events(rows: list[tuple[int, float, int, int]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["user_id", "day", "session_id", "listing_id"])


# --- features ------------------------------------------------------------------------------------------


def test_listing_words_are_binary_and_drop_rare_words():
    words = listing_words(_listings(["boho lamp lamp", "boho vase", "modern lamp"]), min_df=2)
    assert list(words.vocabulary) == ["boho", "home", "lamp"]
    np.testing.assert_array_equal(words.dense(), [[1, 1, 1], [1, 1, 0], [0, 1, 1]])
    with pytest.raises(ValueError, match="min_df"):
        listing_words(_listings(["a"]), min_df=0)
    with pytest.raises(ValueError, match="no word"):
        listing_words(_listings(["boho", "modern"]).assign(taxonomy=["x", "y"]), min_df=3)
    with pytest.raises(ValueError, match="numbered"):
        listing_words(_listings(["boho", "modern"]).assign(listing_id=[3, 4]), min_df=1)


def test_earlier_engagements_count_only_what_happened_strictly_before():
    events = _events([(1, -3.0, -1, 0), (1, 1.0, 5, 1), (1, 2.0, 7, 2), (1, 2.0, 9, 3), (4, 0.0, 2, 0)])
    select = earlier_engagements(events, user_ids=np.array([1, 1, 1, 4, 2, -1]),
                                 days=np.array([2.0, 2.0, 3.0, 0.0, 5.0, 5.0]),
                                 session_ids=np.array([9, 7, 11, 2, 3, 4]))
    dense = select.toarray()
    # session 9 of day 2 sees the archive item, day 1 and session 7 of day 2, not its own click
    np.testing.assert_array_equal(dense[0], [1, 1, 1, 0, 0])
    np.testing.assert_array_equal(dense[1], [1, 1, 0, 0, 0])  # session 7 does not see session 9 (later)
    np.testing.assert_array_equal(dense[2], [1, 1, 1, 1, 0])  # a later day sees everything
    np.testing.assert_array_equal(dense[3], [0, 0, 0, 0, 0])  # user 4's only click is its own session
    assert dense[4:].sum() == 0  # a user without engagements, an anonymous request
    with pytest.raises(ValueError, match="sorted"):
        earlier_engagements(events.iloc[::-1], np.array([1]), np.array([2.0]), np.array([9]))
    with pytest.raises(ValueError, match="one entry"):
        earlier_engagements(events, np.array([1, 2]), np.array([2.0]), np.array([9]))


def test_taste_profiles_are_shares_of_earlier_engaged_listings():
    words = listing_words(_listings(["boho lamp", "boho vase", "modern lamp"]), min_df=1)
    events = _events([(7, 0.0, 1, 0), (7, 1.0, 2, 1), (7, 2.0, 3, 2)])
    profile = taste_profiles(events, words, np.array([7, 7, 8]), np.array([2.0, 9.0, 2.0]), np.array([3, 9, 3]))
    vocab = list(words.vocabulary)
    # before session 3 the buyer engaged listings 0 and 1: both boho, one lamp, one vase
    expected = dict(boho=1.0, home=1.0, lamp=0.5, modern=0.0, vase=0.5)
    np.testing.assert_allclose(profile[0], [expected[v] for v in vocab])
    assert profile[1, vocab.index("modern")] == pytest.approx(1 / 3)
    assert not profile[2].any()  # no earlier engagement, no taste


def test_profiles_on_the_tiny_world_match_a_brute_force_reading_of_the_logs(tiny_world):
    observed = tiny_world.observed
    words = listing_words(observed.listings)
    events = engagements(observed)
    assert len(events) == len(observed.archive) + int(
        (observed.impressions[["click", "cart", "purchase"]].any(axis=1)).sum())
    sessions = observed.sessions.sample(60, random_state=0)
    profiles = taste_profiles(events, words, sessions["user_id"].to_numpy(), sessions["day"].to_numpy(),
                              sessions["session_id"].to_numpy())
    dense = words.dense()
    for row, (user, day, sid) in enumerate(zip(sessions["user_id"], sessions["day"], sessions["session_id"],
                                               strict=True)):
        own = events[events["user_id"] == user]
        before = own[(own["day"] < day) | ((own["day"] == day) & (own["session_id"] < sid))]
        expected = dense[before["listing_id"].to_numpy()].mean(0) if len(before) else np.zeros(dense.shape[1])
        np.testing.assert_allclose(profiles[row], expected, atol=1e-6)
        assert not np.isin(before["session_id"], [sid]).any()


# --- the click model: a planted taste is learned ---------------------------------------------------------


def _planted_marketplace(n_users: int = 40, seed: int = 0) -> ObservedMarketplace:
    """Half the buyers like boho lamps, half modern ones; each page shows both and the buyer clicks their look."""
    rng = np.random.default_rng(seed)
    titles = [f"{look} lamp shade {i}" for look in ("boho", "modern") for i in range(20)]
    listings = _listings(titles)
    looks = np.repeat([0, 1], 20)
    users = pd.DataFrame({"user_id": np.arange(n_users)})
    archive, sessions, impressions = [], [], []
    sid = 0
    for user in range(n_users):
        taste = user % 2
        for lid in rng.choice(np.flatnonzero(looks == taste), 3, replace=False):
            archive.append((user, "lamp", -5.0, lid, True, False, False))
        for day in range(4):
            shown = rng.permutation(np.concatenate([rng.choice(np.flatnonzero(looks == t), 4, replace=False)
                                                    for t in (0, 1)]))
            split = "train" if day < 3 else "valid"
            sessions.append((sid, user, "lamp", float(day), split))
            for pos, lid in enumerate(shown):
                click = looks[lid] == taste and rng.random() < 0.6
                impressions.append((sid, lid, pos, click, False, False))
            sid += 1
    return ObservedMarketplace(
        listings=listings, shops=pd.DataFrame(), users=users,
        sessions=pd.DataFrame(sessions, columns=["session_id", "user_id", "query", "day", "split"]),
        impressions=pd.DataFrame(impressions, columns=["session_id", "listing_id", "position", "click", "cart",
                                                       "purchase"]),
        train_end=3.0, valid_end=4.0,
        archive=pd.DataFrame(archive, columns=["user_id", "query", "day", "listing_id", "click", "cart", "purchase"]))


def test_the_click_model_learns_a_planted_taste():
    observed = _planted_marketplace()
    model = TasteModel.fit(observed, TasteConfig(min_df=1))
    weight = dict(zip(model.words.vocabulary, model.weights, strict=True))
    assert weight["boho"] > 1.0 and weight["modern"] > 1.0
    assert abs(weight["lamp"]) < 0.5 * weight["boho"]  # every listing is a lamp: no taste in it
    assert set(model.top_words(2).index) == {"boho", "modern"}
    # a boho buyer's profile favours boho listings
    boho_buyer = observed.sessions.query("user_id == 0 and split == 'valid'")
    profile = model.profiles(boho_buyer)[0]
    scores = model.words.dense() @ profile
    assert scores[:20].min() > scores[20:].max()


def test_fit_and_profiles_reject_bad_input(tiny_world):
    observed = _planted_marketplace()
    with pytest.raises(ValueError, match="C must"):
        TasteConfig(C=0)
    with pytest.raises(ValueError, match="max_iter"):
        TasteConfig(max_iter=0)
    with pytest.raises(ValueError, match="no page"):
        TasteModel.fit(observed, TasteConfig(min_df=1), split="test")
    model = TasteModel.fit(observed, TasteConfig(min_df=1))
    with pytest.raises(KeyError, match="unknown session"):
        model.profiles(pd.DataFrame({"session_id": [10**6], "user_id": [0]}))
    current = model.current_profiles(np.array([0, -1]))
    assert current[0].any() and not current[1].any()  # a known buyer's taste; none for anonymous


# --- the retriever -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_parts(tiny_world, tiny_unified_features):
    config = UnifiedConfig(n_buckets=2**14, term_dim=16, hidden=32, out_dim=16)
    model, _ = fit_unified(tiny_unified_features, config, TrainConfig(epochs=2, batch_size=128), progress=False)
    return UnifiedRetriever(model, tiny_unified_features), TasteModel.fit(tiny_world.observed)


def test_weight_zero_is_the_base_model_and_history_off_is_the_unpersonalised_request(tiny_world, tiny_parts):
    base, taste = tiny_parts
    sessions = tiny_world.observed.split("valid").head(50)
    np.testing.assert_array_equal(TasteRetriever(base, taste, 0.0).retrieve(sessions, 20),
                                  base.retrieve(sessions, 20))
    off = TasteRetriever(base, taste, 0.3, history=False).retrieve(sessions, 20)
    expected = base.encode_sessions(sessions, history=False) @ base.listing_vectors.T
    np.testing.assert_array_equal(off, base.listing_ids[torch.topk(expected, 20, dim=1).indices.numpy()])


def test_the_taste_score_adds_weight_times_profile_dot_words(tiny_world, tiny_parts):
    base, taste = tiny_parts
    sessions = tiny_world.observed.split("valid").head(30)
    ranked = TasteRetriever(base, taste, 0.2).retrieve(sessions, 10)
    score = (base.encode_sessions(sessions) @ base.listing_vectors.T).numpy() + 0.2 * (
        taste.profiles(sessions) @ taste.words.dense().T)
    np.testing.assert_array_equal(ranked, np.argsort(-score, axis=1, kind="stable")[:, :10])


def test_choose_taste_weight_reads_logged_recall_and_rejects_bad_input(tiny_world, tiny_parts):
    base, taste = tiny_parts
    pairs = validation_pairs(tiny_world.observed, max_pairs=200)
    best, scores = choose_taste_weight(base, taste, pairs, weights=(0.0, 0.1, 1.0))
    assert best in (0.0, 0.1, 1.0) and scores[best] == scores.max()
    assert list(scores.index) == [0.0, 0.1, 1.0]
    with pytest.raises(ValueError, match="at least one"):
        choose_taste_weight(base, taste, pairs, weights=())
    with pytest.raises(ValueError, match="non-negative"):
        TasteRetriever(base, taste, -0.1)
    with pytest.raises(ValueError, match="non-negative"):
        TasteRetriever(base, taste, float("nan"))
