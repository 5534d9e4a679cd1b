"""Chapters 7 and 8's measurements: scores by negative source and by interaction type, false-negative rates."""

import numpy as np
import pytest
import torch

from retrieval_lib.evaluation.negatives import false_negative_rates, interaction_scores, negative_scores
from retrieval_lib.evaluation.probes import would_buy_rate
from retrieval_lib.serving.ann import HNSWIndex
from retrieval_lib.training.mining import ranked_candidates
from retrieval_lib.training.negatives import Catalogue
from retrieval_lib.training.pairs import INTERACTIONS, TrainingPairs, engaged_pairs


@pytest.fixture(scope="module")
def setup(tiny_world):
    observed = tiny_world.observed
    pairs = TrainingPairs.of(engaged_pairs(observed, "train"))
    catalogue = Catalogue.of(observed.listings)
    n = len(catalogue)
    listing_vectors = torch.nn.functional.normalize(torch.randn(n, 16, generator=torch.Generator().manual_seed(0)),
                                                    dim=1)
    rows = np.arange(0, len(pairs), max(len(pairs) // 200, 1))[:200]
    # queries close to their positive, so the positive scores high and the ranking means something
    noise = torch.randn(len(rows), 16, generator=torch.Generator().manual_seed(1))
    queries = torch.nn.functional.normalize(listing_vectors[torch.from_numpy(pairs.listing[rows])] + 0.3 * noise,
                                            dim=1)
    index = HNSWIndex(seed=0).build(listing_vectors, catalogue.listing_id)
    ranked = ranked_candidates(index, catalogue, pairs, rows, queries, depth=60)
    return pairs, catalogue, listing_vectors, rows, queries, ranked


def test_negative_scores_cover_every_source_and_put_the_positive_on_top(setup):
    pairs, catalogue, vectors, rows, queries, ranked = setup
    scores = negative_scores(queries, vectors, pairs, rows, catalogue, ranked, (11, 51), n=4)
    assert list(scores["source"].unique()) == ["positive", "in-batch", "uniform", "mined, ranks 11-50",
                                               "mined, ranks 1-10"]
    counts = scores["source"].value_counts()
    assert counts["positive"] == len(rows) and counts["mined, ranks 1-10"] <= 10 * len(rows)
    medians = scores.groupby("source")["score"].median()
    assert medians["positive"] > medians["mined, ranks 1-10"] > medians["mined, ranks 11-50"] > medians["uniform"]
    again = negative_scores(queries, vectors, pairs, rows, catalogue, ranked, (11, 51), n=4)
    assert scores.equals(again)  # seeded


def test_false_negative_rates_are_the_mean_choice_probability_per_window(setup, tiny_world):
    pairs, _, _, rows, _, ranked = setup
    rates = false_negative_rates(tiny_world, pairs, rows, ranked, [(1, 11), (11, 61)])
    assert rates["window"].tolist() == ["1-10", "11-60"]
    sessions = pairs.frame["session_id"].to_numpy()[rows]
    assert rates["false_negative_rate"].iloc[1] == pytest.approx(would_buy_rate(tiny_world, sessions,
                                                                                 ranked[:, 10:60]))
    assert (rates["false_negative_rate"] >= 0).all() and (rates["false_negative_rate"] <= 1).all()
    with pytest.raises(ValueError, match="goes past"):
        false_negative_rates(tiny_world, pairs, rows, ranked, [(1, 100)])


def test_interaction_scores_give_each_pair_its_logged_type(setup):
    pairs, _, vectors, rows, queries, _ = setup
    scores = interaction_scores(queries, vectors, pairs, rows, n=3)
    positives = scores[scores["kind"] != "negative"]
    assert len(positives) == len(rows)
    expected = np.asarray(INTERACTIONS, dtype=object)[pairs.interaction[rows]]
    np.testing.assert_array_equal(positives["kind"].to_numpy(), expected)
    own = (queries * vectors[torch.from_numpy(pairs.listing[rows])]).sum(1).numpy()
    np.testing.assert_allclose(positives["score"].to_numpy(), own, rtol=1e-5)
    negatives = scores[scores["kind"] == "negative"]
    assert 0 < len(negatives) <= 3 * len(rows)  # accidental hits skipped
    assert positives["score"].median() > negatives["score"].median()
    again = interaction_scores(queries, vectors, pairs, rows, n=3)
    assert again.equals(scores)  # seeded
