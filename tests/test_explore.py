"""The explorer's functions on the tiny world: each system's table is what that system returns."""

import numpy as np
import pytest
import torch

from retrieval_lib.baselines.bm25 import BM25Retriever
from retrieval_lib.explore import (
    COLUMNS,
    SYSTEMS,
    Explorer,
    boost_recall,
    compare,
    search_effort,
    to_html,
    towers,
    would_buy,
)
from retrieval_lib.features.location import user_listing_miles
from retrieval_lib.serving.boosting import PurchaseRecall, quality_features
from retrieval_lib.serving.exact import exact_top_k
from retrieval_lib.serving.search import UnknownUserError

QUERY, USER = "silver necklace", 2


@pytest.fixture(scope="module")
def bm25(tiny_world):
    return BM25Retriever().fit(tiny_world.observed.listings)


@pytest.fixture(scope="module")
def tables(tiny_system, bm25):
    return compare(tiny_system, bm25, QUERY, USER, top_n=7)


def test_every_system_gets_a_table_of_the_same_shape(tables):
    assert list(tables) == list(SYSTEMS)
    for name, table in tables.items():
        assert list(table.columns) == list(COLUMNS), name
        assert len(table) == 7 and table.index.tolist() == list(range(1, 8)), name
        assert table["listing_id"].is_unique, name
        assert not table["would_buy"].any(), name  # no target given


def test_each_table_is_what_its_system_returns(tiny_system, bm25, tables):
    ids, scores = bm25.search([QUERY], 7)
    np.testing.assert_array_equal(tables["BM25"]["listing_id"], ids[0])
    np.testing.assert_allclose(tables["BM25"]["score"], scores[0], rtol=1e-6)
    for name, history in (("unified", True), ("unified, no history", False)):
        q = tiny_system.encode(QUERY, USER, history=history)
        exact = exact_top_k(q, tiny_system.listing_vectors, 7, item_ids=tiny_system.exact.listing_ids)
        np.testing.assert_array_equal(tables[name]["listing_id"], exact.ids[0])
        np.testing.assert_allclose(tables[name]["score"], exact.scores[0], rtol=1e-5, atol=1e-6)
    # the full model's score is the cosine column itself
    np.testing.assert_allclose(tables["unified"]["cosine"], tables["unified"]["score"], rtol=1e-5, atol=1e-6)
    page = tiny_system.search(QUERY, USER, top_n=7, rerank=True)
    np.testing.assert_array_equal(tables["served"]["listing_id"], page["listing_id"])
    np.testing.assert_allclose(tables["served"]["score"], page["score"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(tables["served"]["score"], tables["served"]["cosine"] + tables["served"]["boost"])


def test_without_boost_the_served_system_ranks_by_cosine(tiny_system, bm25, tables):
    unboosted = compare(tiny_system, bm25, QUERY, USER, top_n=7, boost_scale=0.0)
    assert (unboosted["served"]["boost"] == 0).all()
    np.testing.assert_array_equal(unboosted["served"]["listing_id"], tables["unified"]["listing_id"])


def test_distance_and_the_latent_target(tiny_system, bm25, tiny_world, tables):
    first = int(tables["unified"]["listing_id"].iloc[0])
    expected = user_listing_miles(tiny_world.observed, np.array([USER]), np.array([[first]]))[0, 0]
    assert tables["unified"]["miles"].iloc[0] == pytest.approx(expected)
    marked = compare(tiny_system, bm25, QUERY, USER, top_n=7, target=first)
    assert marked["unified"]["would_buy"].tolist() == [True] + [False] * 6
    anonymous = compare(tiny_system, bm25, QUERY, None, top_n=5)
    assert anonymous["unified"]["miles"].isna().all()
    # a logged request's latent target, read from the world (for the reader only)
    session = int(np.flatnonzero(tiny_world.latent.labels >= 0)[0])
    assert would_buy(tiny_world, session) == tiny_world.latent.labels[session]
    with pytest.raises(KeyError, match="unknown session"):
        would_buy(tiny_world, -1)


def test_bad_requests_are_clear_errors(tiny_system, bm25):
    with pytest.raises(ValueError, match="nothing to search for"):
        compare(tiny_system, bm25, "  ", None)
    with pytest.raises(UnknownUserError):
        compare(tiny_system, bm25, QUERY, 10**9)
    with pytest.raises(ValueError, match="boost_scale"):
        compare(tiny_system, bm25, QUERY, USER, boost_scale=-1)
    with pytest.raises(ValueError, match="top_n"):
        compare(tiny_system, bm25, QUERY, USER, top_n=0)


def test_search_effort_and_boost_recall(tiny_system, tiny_world):
    sample = tiny_world.observed.split("valid").sample(15, random_state=0)
    effort = search_effort(tiny_system, sample, levels=(1, 5), k=20)
    assert effort.index.tolist() == [1, 5] and (effort["ef"] >= 20).all()
    assert ((effort["recall_vs_exact"] >= 0) & (effort["recall_vs_exact"] <= 1)).all()
    assert effort.loc[5, "recall_vs_exact"] >= effort.loc[1, "recall_vs_exact"]
    assert (effort["ms_per_query"] > 0).all()
    recall = boost_recall(tiny_system, [0.0, 1.0], k=50)
    objective = PurchaseRecall(tiny_system.exact, quality_features(tiny_world.observed), tiny_world.observed,
                               "valid", 50)
    assert recall.loc[1.0] == objective(tiny_system.w) and recall.loc[0.0] == objective(tiny_system.w * 0)
    with pytest.raises(ValueError, match="no requests"):
        search_effort(tiny_system, sample.iloc[:0])


def test_html_and_the_widget(tiny_system, bm25, tiny_world, tables):
    page = to_html(tables, "a caption")
    assert all(name in page for name in SYSTEMS) and "a caption" in page and 'class="retrieval-explorer"' in page
    session = int(np.flatnonzero(tiny_world.latent.labels >= 0)[0])
    query, user = tiny_world.observed.sessions.loc[session, ["query", "user_id"]]
    explorer = Explorer(tiny_system, bm25, tiny_world, (query, int(user), session))
    bundle = explorer._repr_mimebundle_()
    assert bundle["text/html"] == explorer.static and "retrieval-explorer" in bundle["text/html"]
    assert "application/vnd.jupyter.widget-view+json" in bundle
    explorer.user.value = str(10**9)
    explorer.refresh()
    assert "UnknownUserError" in explorer.out.value
    explorer.user.value, explorer.query.value = str(USER), QUERY
    explorer.refresh()
    assert "retrieval-explorer" in explorer.out.value and "UnknownUserError" not in explorer.out.value


def test_both_towers_block_by_block(tiny_system):
    page = tiny_system.search(QUERY, USER, top_n=1)
    listing = int(page["listing_id"].iloc[0])
    traced = towers(tiny_system, QUERY, USER, listing)
    model = tiny_system.model
    # the blocks, fed through each tower's MLP, give exactly the vectors the system serves
    with torch.no_grad():
        q = torch.nn.functional.normalize(model.query(traced["query_inputs"]), dim=-1)
        p = torch.nn.functional.normalize(model.product(traced["product_inputs"]), dim=-1)
    torch.testing.assert_close(q, tiny_system.encode(QUERY, USER))
    torch.testing.assert_close(p[0], tiny_system.listing_vectors[listing])
    assert traced["cosine"] == pytest.approx(float(q[0] @ p[0]), abs=1e-6)
    assert list(traced["product"].index) == ["terms", *model.product_blocks]
    assert traced["query"]["width"].sum() == traced["query_inputs"].shape[1]
    assert "history" in traced["query"].index and len(traced["history"]) > 0
    assert set(traced["history"]["kind"]) <= {"query", "click", "purchase"}
    # an anonymous request has no history items and a zero location block
    anonymous = towers(tiny_system, QUERY, None, listing)
    assert anonymous["history"].empty and anonymous["query"].loc["location", "norm"] == 0
    with pytest.raises(KeyError, match="unknown listing"):
        towers(tiny_system, QUERY, USER, -3)
