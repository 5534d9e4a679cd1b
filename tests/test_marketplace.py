import dataclasses

import numpy as np
import pandas as pd
import pytest

from retrieval_lib.evaluation.offline import EvaluationSet
from retrieval_lib.evaluation.probes import co_purchase_agreement, named_rate, would_buy_rate
from retrieval_lib.marketplace import ChoiceWeights, LatentTruth, MarketplaceConfig, generate, geo, stats
from retrieval_lib.marketplace import vocabulary as V
from retrieval_lib.marketplace.behaviour import (
    available,
    choice_probabilities,
    choose_from_catalogue,
    ideal_gains,
    relevance_grades,
    utility,
)
from retrieval_lib.marketplace.vocab_index import misspell, vocab_index
from retrieval_lib.marketplace.world import TAG_MENTION, TITLE_MENTION
from retrieval_lib.text.words import listing_documents, tokenize, word_overlap


def test_same_seed_same_world(tiny_world):
    again = generate("tiny", seed=0)
    for name in ("listings", "shops", "users", "sessions", "impressions", "archive"):
        pd.testing.assert_frame_equal(getattr(tiny_world.observed, name), getattr(again.observed, name))
    np.testing.assert_array_equal(tiny_world.latent.labels, again.latent.labels)
    for key, value in tiny_world.latent.intents.items():
        np.testing.assert_array_equal(value, again.latent.intents[key])


def test_other_seed_other_world(tiny_world):
    other = generate("tiny", seed=1)
    assert not tiny_world.observed.sessions["query"].equals(other.observed.sessions["query"])
    assert other.config.seed == 1


def test_sizes_follow_the_config(tiny_world):
    cfg = tiny_world.config
    obs = tiny_world.observed
    assert len(obs.listings) == cfg.n_listings and len(obs.shops) == cfg.n_shops
    assert len(obs.users) == cfg.n_users and len(obs.sessions) == cfg.n_sessions
    assert obs.listings["shop_id"].nunique() == cfg.n_shops  # no empty shop
    summary = tiny_world.summary()
    assert summary["purchases"] == int(obs.impressions["purchase"].sum()) > 0


def test_time_split_is_ordered(tiny_world):
    s = tiny_world.observed.sessions
    assert s["day"].is_monotonic_increasing
    assert set(s["split"]) == {"train", "valid", "test"}
    last_train = s.loc[s.split == "train", "day"].max()
    first_valid, last_valid = s.loc[s.split == "valid", "day"].agg(["min", "max"])
    assert last_train < tiny_world.observed.train_end <= first_valid
    assert last_valid < tiny_world.observed.valid_end <= s.loc[s.split == "test", "day"].min()
    signup = tiny_world.observed.users.set_index("user_id").loc[s["user_id"], "signup_day"].to_numpy()
    assert (s["day"].to_numpy() >= np.minimum(signup, 0) - 1e-3).all()


def test_funnel_is_graded_and_pages_are_valid(tiny_world):
    imp = tiny_world.observed.impressions
    assert (imp["cart"] <= imp["click"]).all() and (imp["purchase"] <= imp["cart"]).all()
    assert imp.groupby("session_id")["purchase"].sum().max() == 1
    assert imp["position"].between(0, tiny_world.config.page_size - 1).all()
    assert not imp.duplicated(["session_id", "listing_id"]).any()
    logs = tiny_world.observed.logs()
    created = tiny_world.observed.listings["created_day"].to_numpy()[logs["listing_id"]]
    assert (created <= logs["day"].to_numpy() + 1e-3).all()


def test_new_listings_are_cold_in_training(tiny_world):
    obs = tiny_world.observed
    late = obs.listings.loc[obs.listings["created_day"] >= obs.train_end, "listing_id"]
    assert len(late) > 0
    assert not obs.logs("train")["listing_id"].isin(late).any()


def test_labels_only_for_held_out_sessions_and_of_the_wanted_type(tiny_world):
    s = tiny_world.observed.sessions
    labels = tiny_world.latent.labels
    assert (labels[s.split == "train"] == -1).all()
    held = s.loc[s.split != "train", "session_id"].to_numpy()
    assert (labels[held] >= 0).mean() > 0.99  # tiny labels every held-out session
    ok = held[labels[held] >= 0]
    lat = tiny_world.latent
    assert (lat.listings["type"][labels[ok]] == lat.intents["type"][ok]).all()
    assert (lat.listings["created_day"][labels[ok]] <= lat.intents["day"][ok]).all()


def test_buyer_words_never_share_a_token_with_common_words():
    terms = [t for ts in V.CATEGORIES.values() for t in ts] + [t for ts in V.MATERIALS.values() for t in ts]
    terms += [*V.COLOURS, *V.STYLES, *V.OCCASIONS, *V.RECIPIENTS]
    for term in terms:
        common = {w for form in term.common for w in tokenize(form)}
        for form in term.buyer:
            assert not set(tokenize(form)) & common, (term.name, form)


def test_long_queries_share_fewer_words_with_what_buyers_want(tiny_world):
    s = tiny_world.observed.sessions
    held = s[s.split != "train"]
    docs = listing_documents(tiny_world.observed.listings)
    labels = tiny_world.latent.labels[held["session_id"]]
    level = tiny_world.latent.intents["level"][held["session_id"]]
    overlap = np.array([word_overlap(q, docs[label]) for q, label in zip(held["query"], labels, strict=True)])
    assert np.nanmean(overlap[level == 0]) > 0.9
    assert np.nanmean(overlap[level >= 2]) < 0.6


def test_query_frequencies_have_a_head_and_a_tail(tiny_world):
    freq = stats.query_frequencies(tiny_world.observed)
    assert freq["count"].iloc[0] >= 20 * freq["count"].median()
    assert (freq["count"] == 1).mean() > 0.5


def test_logs_show_position_bias_quality_and_location(tiny_world):
    ctr = stats.click_rate_by_position(tiny_world.observed)
    assert ctr.iloc[:3].mean() > 2 * ctr.iloc[-3:].mean()
    logs = tiny_world.observed.impressions
    quality = tiny_world.latent.listings["quality"][logs["listing_id"]]
    assert logs["purchase"][quality > 0.5].mean() > 2 * logs["purchase"][quality < -0.5].mean()
    dist = stats.buyer_shop_distance(tiny_world.observed)
    assert dist.loc[dist.purchase, "domestic"].mean() > dist["domestic"].mean() + 0.1


def test_co_purchases_share_hidden_aesthetics(tiny_world):
    agreement = co_purchase_agreement(tiny_world, "aesthetic", split="train")
    assert agreement["pairs"] > 50
    assert agreement["co_purchased"] > 2.0 / tiny_world.config.n_aesthetics
    assert agreement["co_purchased"] > 1.5 * agreement["random"]


def test_misspell_changes_one_character():
    rng = np.random.default_rng(0)
    for word in ["necklace", "bohemian", "cerulean"]:
        typo = misspell(word, rng)
        assert abs(len(typo) - len(word)) <= 1 and typo[0] == word[0]
    assert misspell("mug", rng) == "mug"
    assert misspell("two words", rng) == "two words"


# --- the choice model on a hand-made world ----------------------------------------------------------

def _hand_world(weights: ChoiceWeights) -> LatentTruth:
    """Two listings of type 0 and one of type 1 (same category), one buyer in New York."""
    listings = {
        "type": np.array([0, 0, 1]), "category": np.array([0, 0, 0]), "colour": np.array([2, 3, 2]),
        "style": np.array([1, 1, 1]), "material": np.array([0, 1, 0]), "recipient": np.array([-1, 4, -1]),
        "occasion": np.array([-1, -1, -1]), "aesthetic": np.array([0, 1, 0]), "quality": np.array([1.0, 0.0, 0.0]),
        "log_price": np.log([20.0, 40.0, 20.0]), "base_log_price": np.log([20.0, 20.0, 20.0]),
        "shop_lat": np.array([40.7, 51.5, 40.7]), "shop_lon": np.array([-74.0, -0.1, -74.0]),
        "shop_country": np.array([0, 1, 0]), "created_day": np.array([-5.0, -5.0, 3.0]),
    }
    users = {"lat": np.array([40.7]), "lon": np.array([-74.0]), "country": np.array([0]),
             "aesthetic_pref": np.array([[0.75, 0.25]]), "log_price_level": np.array([0.0])}
    intents = {"user": np.array([0]), "day": np.array([1.0]), "type": np.array([0]), "category": np.array([0]),
               "colour": np.array([2]), "style": np.array([1]), "material": np.array([0]), "aesthetic": np.array([0]),
               "recipient": np.array([4]), "occasion": np.array([-1]),
               "expr_type": np.array([True]), "expr_category": np.array([False]), "expr_colour": np.array([True]),
               "expr_style": np.array([False]), "expr_material": np.array([False]),
               "expr_recipient": np.array([False]), "expr_occasion": np.array([False]),
               "expr_aesthetic": np.array([False])}
    return LatentTruth(listings=listings, users=users, intents=intents, labels=np.array([-1]), weights=weights,
                       n_aesthetics=2)


def test_utility_matches_a_hand_computation():
    w = ChoiceWeights()
    lat = _hand_world(w)
    got = utility(lat, np.array([0]), np.array([[0, 1, 2]]))[0]
    london = geo.haversine_miles(40.7, -74.0, 51.5, -0.1)
    # listing 0: colour (expressed), style, material and aesthetic match; taste 0.75*2; quality 1; same place
    u0 = w.facet * (1 + w.expressed) + 3 * w.facet + w.aesthetic * np.log(1.5) + w.quality
    # listing 1: style and recipient match; aesthetic 0.25*2; abroad; price twice the usual
    u1 = (2 * w.facet + w.aesthetic * np.log(0.5) - w.distance * london / 1000 - w.international
          - w.price * np.log(2.0))
    # listing 2: another type of the same category, otherwise like listing 0 without quality
    u2 = -0.6 * w.type_mismatch + w.facet * (1 + w.expressed) + 3 * w.facet + w.aesthetic * np.log(1.5)
    np.testing.assert_allclose(got, [u0, u1, u2], rtol=1e-9)


def test_relevance_grades_by_hand():
    lat = _hand_world(ChoiceWeights())
    grades = relevance_grades(lat, np.array([0]), np.array([[0, 1, 2, -1]]))[0]
    # 0: right type, named colour, but not the wanted recipient -> 2; 1: right type, wrong colour -> 1;
    # 2: wrong type -> 0; padding -> 0
    assert grades.tolist() == [2, 1, 0, 0]


def test_ideal_gains_are_the_best_available_grades():
    lat = _hand_world(ChoiceWeights())
    # listing 2 is not yet created on day 1, the others are
    assert ideal_gains(lat, np.array([0]), k=3)[0].tolist() == [2, 1, 0]


def test_catalogue_choice_picks_available_listings_of_the_wanted_type():
    lat = _hand_world(ChoiceWeights())
    picks = choose_from_catalogue(lat, np.zeros(200, dtype=int), np.random.default_rng(0))
    assert set(picks.tolist()) <= {0, 1}
    assert (picks == 0).mean() > 0.8  # listing 0 has the much higher utility


def test_choice_probabilities_are_the_logit_of_the_catalogue_choice():
    lat = _hand_world(ChoiceWeights())
    u = utility(lat, np.array([0]), np.array([[0, 1]]))[0]
    expected = np.exp(u) / np.exp(u).sum()  # listings 0 and 1 are the type-0 choice set
    got = choice_probabilities(lat, np.array([0, 0]), np.array([[0, 1, 2, -1], [1, 1, 0, 2]]))
    np.testing.assert_allclose(got[0], [expected[0], expected[1], 0.0, 0.0], rtol=1e-9)
    np.testing.assert_allclose(got[1], [expected[1], expected[1], expected[0], 0.0], rtol=1e-9)
    picks = choose_from_catalogue(lat, np.zeros(20_000, dtype=int), np.random.default_rng(1))
    assert (picks == 0).mean() == pytest.approx(expected[0], abs=0.01)  # Gumbel-max = logit
    with pytest.raises(ValueError, match="one row of candidates per session"):
        choice_probabilities(lat, np.array([0]), np.array([0, 1]))


def test_choice_probabilities_sum_to_one_over_the_available_catalogue(tiny_world):
    lat = tiny_world.latent
    sessions = tiny_world.observed.split("test")["session_id"].to_numpy()[:20]
    every = np.broadcast_to(np.arange(lat.listings["type"].size), (sessions.size, lat.listings["type"].size))
    np.testing.assert_allclose(choice_probabilities(lat, sessions, every).sum(axis=1), 1.0, rtol=1e-9)


def test_would_buy_rate_is_the_mean_choice_probability_of_real_ids(tiny_world):
    sessions = tiny_world.observed.split("test")["session_id"].to_numpy()[:5]
    ids = np.array([[0, 1, -1], [2, -1, -1], [3, 4, 5], [6, 7, 8], [-1, 9, 10]])
    probs = choice_probabilities(tiny_world.latent, sessions, ids)
    assert would_buy_rate(tiny_world, sessions, ids) == pytest.approx(probs[ids >= 0].mean())
    labels = tiny_world.latent.labels[sessions][:, None]
    assert would_buy_rate(tiny_world, sessions, labels) > would_buy_rate(tiny_world, sessions, ids)
    with pytest.raises(ValueError, match="padding"):
        would_buy_rate(tiny_world, sessions, np.full((5, 2), -1))


def test_zero_weights_remove_the_location_effect():
    cfg = MarketplaceConfig.preset("tiny", weights=ChoiceWeights(distance=0.0, international=0.0))
    world = generate(cfg)
    dist = stats.buyer_shop_distance(world.observed)
    assert abs(dist.loc[dist.purchase, "domestic"].mean() - dist["domestic"].mean()) < 0.1


@pytest.mark.parametrize("field", ["listings", "users", "intents"])
def test_latent_truth_is_a_separate_frozen_object(tiny_world, field):
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(tiny_world.latent, field, {})


def test_vocab_index_is_consistent():
    vi = vocab_index()
    assert vi.n_types == sum(len(v) for v in V.CATEGORIES.values())
    assert vi.taxonomy_path(0) == "jewelry > necklace"
    assert np.isclose(vi.category_weights.sum(), 1.0)


def test_label_budget_caps_the_labelled_sessions():
    world = generate(MarketplaceConfig.preset("tiny", max_labelled_sessions=100))
    assert (world.latent.labels >= 0).sum() <= 100
    es = EvaluationSet.build(world, "test")
    assert (es.targets >= 0).all() and 0 < len(es.sessions) <= 100


def test_ideal_gains_match_a_brute_force_scan(tiny_world):
    lat = tiny_world.latent
    sessions = tiny_world.observed.split("test")["session_id"].to_numpy()[:300]
    all_ids = np.broadcast_to(np.arange(lat.listings["type"].size), (sessions.size, lat.listings["type"].size))
    grades = np.where(available(lat, sessions, all_ids), relevance_grades(lat, sessions, all_ids), 0)
    brute = -np.sort(-grades, axis=1)[:, :10]
    np.testing.assert_array_equal(ideal_gains(lat, sessions, k=10), brute)


def test_sellers_tag_the_aesthetic_more_often_than_they_title_it(tiny_world):
    rate = named_rate(tiny_world, "aesthetic")
    descriptive = 1.0 - tiny_world.config.vague_listing_share
    assert rate["tags"] == pytest.approx(TAG_MENTION["aesthetic"] * descriptive, abs=0.04)
    assert rate["title"] == pytest.approx(TITLE_MENTION["aesthetic"] * descriptive, abs=0.03)
    assert rate["title"] < rate["tags"] < rate["either"] < 0.6  # most listings still leave it latent


def test_vague_listings_say_nothing_about_the_product(tiny_world):
    lat, listings = tiny_world.latent.listings, tiny_world.observed.listings
    vague = lat["vague"]
    assert vague.mean() == pytest.approx(tiny_world.config.vague_listing_share, abs=0.03)
    vi = vocab_index()
    shops = tiny_world.observed.shops.set_index("shop_id")["name"]
    for i in np.flatnonzero(vague)[:200].tolist():
        title, tags = listings.at[i, "title"], listings.at[i, "tags"]
        assert shops[listings.at[i, "shop_id"]] in title and shops[listings.at[i, "shop_id"]] in tags
        term = vi.type_terms[lat["type"][i]]
        text = f" {title} {' '.join(tags)} "
        assert not any(f" {form} " in text for form in term.common + term.seller + term.buyer)
        assert listings.at[i, "taxonomy"] == vi.taxonomy_path(lat["type"][i])  # the category is still filed
        for facet in ("aesthetic", "colour", "material"):  # nor any of its facets
            value = vi.facet_terms(facet, lat[facet][[i]], lat["category"][[i]])[0]
            assert not any(f" {form} " in text for form in value.common + value.seller + value.buyer)


def test_buyers_engage_with_vague_listings(tiny_world):
    logs = tiny_world.observed.logs("train")
    vague = tiny_world.latent.listings["vague"][logs["listing_id"].to_numpy()]
    clicked = logs["click"].to_numpy()
    assert clicked[vague].sum() >= 30  # behaviour shows what their text does not
    assert clicked[vague].mean() > 0.3 * clicked[~vague].mean()
    archived = tiny_world.latent.listings["vague"][tiny_world.observed.archive["listing_id"].to_numpy()]
    assert archived.sum() > clicked[vague].sum()  # and the longer archive shows it for more of them


def test_archive_is_an_older_window_of_real_engagement(tiny_world):
    cfg, observed = tiny_world.config, tiny_world.observed
    archive = observed.archive
    assert list(archive.columns) == ["user_id", "query", "day", "listing_id", "click", "cart", "purchase"]
    assert archive["click"].all() and (archive["click"] >= archive["cart"]).all()
    assert (archive["cart"] >= archive["purchase"]).all()
    # longer than the training window
    assert archive["purchase"].sum() > observed.logs("train")["purchase"].sum()
    assert archive["day"].between(-cfg.archive_days, 0.0, inclusive="left").all()
    assert archive["day"].is_monotonic_increasing
    created = observed.listings.set_index("listing_id").loc[archive["listing_id"], "created_day"].to_numpy()
    assert (created <= archive["day"].to_numpy()).all()  # only listings that existed were bought
    signup = observed.users.set_index("user_id").loc[archive["user_id"], "signup_day"].to_numpy()
    assert (signup <= archive["day"].to_numpy() + 1e-3).all()
    assert (archive["query"].str.len() > 0).all()


@pytest.mark.parametrize("field, value", [("vague_listing_share", 1.5), ("archive_days", 0),
                                          ("n_archive_sessions", -1), ("vague_listing_share", -0.1)])
def test_new_world_knobs_are_validated(field, value):
    with pytest.raises(ValueError, match=field):
        MarketplaceConfig.preset("tiny", **{field: value})


# --- the world cache: one generation shared by every chapter ------------------------------------------

def test_cached_world_is_the_generated_world_exactly(tiny_world, tmp_path, monkeypatch):
    from retrieval_lib.marketplace.store import FRAMES, LATENT_DICTS

    monkeypatch.setenv("RETRIEVAL_LIB_CACHE", str(tmp_path))
    first = generate("tiny", seed=0, cache=True)
    (folder,) = [p for p in tmp_path.iterdir() if p.name.startswith("world-")]
    loaded = generate("tiny", seed=0, cache=True)
    for world in (first, loaded):
        assert world.config == tiny_world.config
        for name in FRAMES:
            pd.testing.assert_frame_equal(getattr(world.observed, name), getattr(tiny_world.observed, name),
                                          check_exact=True)
        for name in LATENT_DICTS:
            got, want = getattr(world.latent, name), getattr(tiny_world.latent, name)
            assert got.keys() == want.keys()
            for key in want:
                assert got[key].dtype == want[key].dtype
                np.testing.assert_array_equal(got[key], want[key])
        np.testing.assert_array_equal(world.latent.labels, tiny_world.latent.labels)
        assert world.observed.train_end == tiny_world.observed.train_end
    # another seed is another artifact; a corrupted file is regenerated, not trusted
    generate("tiny", seed=1, cache=True)
    assert len([p for p in tmp_path.iterdir() if p.name.startswith("world-")]) == 2
    (folder / "observed_sessions.npz").write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="unreadable"):
        again = generate("tiny", seed=0, cache=True)
    pd.testing.assert_frame_equal(again.observed.sessions, tiny_world.observed.sessions)
