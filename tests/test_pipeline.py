"""The whole system in one call, and the served Retriever's two calls (boosted, levels, exact re-ranking)."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from retrieval_lib.evaluation.choice import one_standard_error_choice, validation_sweep_se
from retrieval_lib.infra.cache import source_digest
from retrieval_lib.pipeline import LOSSES, SERVED_RECIPE, SystemConfig, build_system
from retrieval_lib.serving.ann import HNSWIndex
from retrieval_lib.serving.boosting import hydrate_queries
from retrieval_lib.serving.exact import exact_top_k
from retrieval_lib.serving.search import EF_BY_LEVEL, RERANK_DEPTH, Retriever, UnknownUserError

DATA = Path(__file__).resolve().parents[1] / "book" / "data"


def test_build_system_serves_the_boosted_model_and_loads_from_the_cache(tiny_world, tiny_system):
    choice = tiny_system.choice
    assert tiny_system.w is not None and len(choice.w) == tiny_system.items.shape[1] - tiny_system.dim
    assert choice.valid_recall >= SystemConfig().target_recall
    assert tiny_system.index.space == "l2" and (tiny_system.index.m, tiny_system.index.ef) == (choice.m, choice.ef)
    again = build_system(tiny_world)  # every piece cached: same choice, same answers
    assert again.choice == choice
    pd.testing.assert_frame_equal(again.search("necklace", top_n=7), tiny_system.search("necklace", top_n=7))


def test_the_system_serves_the_recipe_chosen_on_logged_purchases():
    """``pipeline.SERVED_RECIPE`` is the (recipe, loss, cut) that ``benchmarks/served_choice.py`` chose on the book."""
    data = json.loads((DATA / "served_choice.json").read_text())
    assert data["digest"] == source_digest(tuple(data["modules"])), f"stale: rerun `.venv/bin/python {data['command']}`"
    assert data["preset"] == "book" and data["valid_purchases"] > 1_000 and len(data["rows"]) >= 6
    # the one-standard-error rule (docs/decisions.md): the fewest changes to what was served before
    means = {(row["recipe"], row["loss"], cut): row[f"{cut}_recall"] for row in data["rows"]
             for cut in ("top_n", "threshold")}
    previous = ("uniform", "softmax", "top_n")
    changes = {option: sum(a != b for a, b in zip(option, previous, strict=True)) for option in means}
    se = validation_sweep_se(json.loads((DATA / "choices" / "validation_choices.json").read_text()))
    choice = data["choice"]
    assert choice["standard_error"] == pytest.approx(se) and choice["best_logged_recall"] == max(means.values())
    rule = one_standard_error_choice(means, changes, se)
    assert (choice["recipe"], choice["loss"], choice["cut"]) == rule
    assert choice["logged_recall"] == means[rule] >= max(means.values()) - se
    assert (choice["recipe"], choice["loss"]) == SERVED_RECIPE and SERVED_RECIPE[1] in LOSSES
    assert choice["cut"] == "top_n", "the pipeline serves a fixed depth; a threshold won: serve it"


def test_the_whole_system_diagram_names_the_served_recipe():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from retrieval_lib.infra.plotting import whole_system_diagram

    ax = whole_system_diagram()
    labels = " ".join(t.get_text().replace("\n", " ") for t in ax.texts)
    recipe, loss = SERVED_RECIPE
    assert f"{recipe.replace('_', ' ')} negatives" in labels and loss in labels
    assert "{" not in labels  # every placeholder filled
    plt.close(ax.figure)


def test_system_config_validation():
    for bad in ({"boost_trials": 0}, {"ms": ()}, {"efs": (0,)}, {"target_recall": 0.0}, {"target_recall": 1.5}):
        with pytest.raises(ValueError):
            SystemConfig(**bad)
    with pytest.raises(TypeError, match="SystemConfig"):
        build_system(None, config={"boost_trials": 3})


def test_search_ranks_by_the_boosted_score(tiny_system):
    hits = tiny_system.search("silver necklace", user_id=0, top_n=10)
    assert list(hits.columns) == ["listing_id", "score", "title", "taxonomy"] and len(hits) == 10
    q = hydrate_queries(tiny_system.encode("silver necklace", 0), tiny_system.w)
    exact = (tiny_system.items[np.array(hits["listing_id"])] @ q[0]).numpy()
    np.testing.assert_allclose(hits["score"], exact, atol=1e-4)
    assert hits["score"].is_monotonic_decreasing


def test_rerank_orders_candidates_by_their_exact_hydrated_score(tiny_system):
    timings = {}
    hits = tiny_system.search("gift for mom", user_id=3, top_n=12, rerank=True, timings=timings)
    q = hydrate_queries(tiny_system.encode("gift for mom", 3), tiny_system.w)
    exact = (tiny_system.items[np.array(hits["listing_id"])] @ q[0]).numpy()
    np.testing.assert_allclose(hits["score"], exact, rtol=0, atol=1e-6)
    assert (np.diff(hits["score"]) <= 0).all()
    best = exact_top_k(q, tiny_system.items, 12).ids[0]
    assert len(set(best) & set(hits["listing_id"])) >= 11  # 4 x 12 ANN candidates hold the exact top 12
    assert set(timings) == {"query_tower", "ann", "rerank"} and min(timings.values()) >= 0
    assert RERANK_DEPTH > 1


def test_query_takes_a_query_tower_vector_and_a_level(tiny_system):
    vector = tiny_system.encode("wooden toy")
    plain = tiny_system.query(vector, top_n=5)
    pd.testing.assert_frame_equal(plain, tiny_system.search("wooden toy", top_n=5))
    for level in EF_BY_LEVEL:
        assert len(tiny_system.query(vector.numpy()[0], top_n=5, level=level)) == 5
    assert tiny_system.index.ef == tiny_system.choice.ef  # a level never changes the index's own setting
    highest = tiny_system.query(vector, top_n=20, level=max(EF_BY_LEVEL))
    exact = exact_top_k(hydrate_queries(vector, tiny_system.w), tiny_system.items, 20).ids[0]
    assert len(set(exact) & set(highest["listing_id"])) >= 19


@pytest.mark.parametrize("bad", [np.full(3, 0.1), np.full((2, 32), 0.1)])
def test_query_rejects_a_vector_of_the_wrong_length(tiny_system, bad):
    with pytest.raises(ValueError, match="dimension"):
        tiny_system.query(bad)
    with pytest.raises(ValueError, match="dimension"):
        tiny_system.query(torch.ones(tiny_system.dim + 1))


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_query_rejects_nan_and_infinity(tiny_system, value):
    vector = tiny_system.encode("necklace").numpy()[0].copy()
    vector[3] = value
    with pytest.raises(ValueError, match="NaN or infinity"):
        tiny_system.query(vector)


@pytest.mark.parametrize("top_n", [0, -1, 2.5, True, "10"])
def test_query_rejects_a_bad_top_n(tiny_system, top_n):
    with pytest.raises(ValueError, match="top_n"):
        tiny_system.search("necklace", top_n=top_n)


def test_bad_requests_get_clear_errors(tiny_system):
    with pytest.raises(UnknownUserError, match="unknown user"):
        tiny_system.search("necklace", user_id=10**6)
    with pytest.raises(ValueError, match="nothing to search"):
        tiny_system.search("  ")
    with pytest.raises(ValueError, match="level"):
        tiny_system.search("necklace", level=9)
    with pytest.raises(KeyError, match="unknown listing"):
        tiny_system.listing(10**7)
    with pytest.raises(KeyError):
        tiny_system.listing(True)


def test_listing_is_readable(tiny_system):
    listing = tiny_system.listing(0)
    assert listing["listing_id"] == 0 and listing["title"] and isinstance(listing["tags"], list)
    assert listing["rating"] is None or 1 <= listing["rating"] <= 5


def test_retrieve_matches_the_exact_boosted_search_for_logged_sessions(tiny_world, tiny_system):
    sessions = tiny_world.observed.split("test").head(300)
    ids = tiny_system.retrieve(sessions, 50)
    q = hydrate_queries(tiny_system.exact.encode_sessions(sessions), tiny_system.w)
    exact = exact_top_k(q, tiny_system.items, 50).ids
    overlap = np.mean([len(set(a) & set(b)) / 50 for a, b in zip(ids, exact, strict=True)])
    assert ids.shape == (300, 50) and overlap >= 0.99


def test_boost_needs_both_quality_and_weights(tiny_system):
    with pytest.raises(ValueError, match="both"):
        Retriever(tiny_system.model, tiny_system.features, quality=np.zeros((3, 4)))
    with pytest.raises(ValueError, match="index dimension"):
        Retriever(tiny_system.model, tiny_system.features, HNSWIndex().build(torch.zeros(5, 3)))
