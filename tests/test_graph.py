import numpy as np
import pandas as pd
import pytest

from retrieval_lib.encoders.graph import (
    GraphEmbeddings,
    GraphRetriever,
    Node2VecConfig,
    engagement_edges,
    engagement_graph,
    fit_graph_embeddings,
    graph_embeddings,
    graph_logs,
)
from retrieval_lib.marketplace import ObservedMarketplace


def _observed():
    """Two queries, four listings (listing 3 never engaged), two users."""
    sessions = pd.DataFrame({"session_id": [0, 1, 2, 3], "user_id": [0, 0, 1, 1],
                             "query": ["ring", "ring", "mug", "mug"], "day": [0.0, 1.0, 2.0, 3.0],
                             "split": ["train", "train", "train", "valid"]})
    impressions = pd.DataFrame({
        "session_id": [0, 0, 1, 2, 2, 3], "listing_id": [0, 1, 0, 2, 3, 2], "position": [0, 1, 0, 0, 1, 0],
        "click": [True, True, True, True, False, True], "cart": [True, False, False, True, False, True],
        "purchase": [True, False, False, False, False, False]})
    listings = pd.DataFrame({"listing_id": np.arange(5)})
    return ObservedMarketplace(listings=listings, shops=pd.DataFrame(), users=pd.DataFrame(), sessions=sessions,
                               impressions=impressions, train_end=3.0, valid_end=4.0)


def test_edges_weight_the_strongest_stage_and_sum_over_impressions():
    edges = engagement_edges(_observed().logs("train"))
    got = {(q, i): w for q, i, w in edges.itertuples(index=False)}
    # ring-0: a purchase (4) plus a click (1); ring-1: a click; mug-2: a cart; mug-3: shown only (no edge)
    assert got == {("ring", 0): 5.0, ("ring", 1): 1.0, ("mug", 2): 2.0}


def test_graph_is_bipartite_and_uses_only_the_requested_window():
    graph = engagement_graph(_observed(), "train")
    assert sorted(graph.nodes) == ["l:0", "l:1", "l:2", "q:mug", "q:ring"]
    assert graph["q:ring"]["l:0"]["weight"] == 5.0
    assert {d["bipartite"] for _, d in graph.nodes(data=True)} == {0, 1}
    with_users = engagement_graph(_observed(), "train", with_users=True)
    assert with_users.has_edge("u:0", "l:0") and with_users.has_edge("u:1", "l:2")


def test_bad_weights_are_rejected():
    with pytest.raises(ValueError):
        engagement_edges(_observed().logs("train"), {"click": 0.0})
    with pytest.raises(ValueError, match="dim"):
        Node2VecConfig(dim=0)
    with pytest.raises(ValueError, match="q"):
        Node2VecConfig(q=-1.0)


@pytest.fixture(scope="module")
def tiny_embeddings(tiny_world):
    return fit_graph_embeddings(tiny_world.observed, Node2VecConfig(dim=8, num_walks=2, walk_length=8))


def test_cold_start_gets_zeros_and_a_flag(tiny_embeddings, tiny_world):
    cold = np.flatnonzero(~tiny_embeddings.listing_in_graph)[:3]
    warm = np.flatnonzero(tiny_embeddings.listing_in_graph)[:3]
    vectors, known = tiny_embeddings.listings(np.concatenate([warm, cold, [-1, 10**9]]))
    assert known.tolist() == [True] * 3 + [False] * 5
    assert (vectors[3:] == 0).all() and (np.abs(vectors[:3]).sum(axis=1) > 0).all()
    qv, qk = tiny_embeddings.queries(["a query nobody typed", tiny_world.observed.archive["query"].iloc[0]])
    assert qk.tolist() == [False, True] and (qv[0] == 0).all()


def test_only_archive_listings_are_embedded(tiny_embeddings, tiny_world):
    archive = tiny_world.observed.archive
    assert set(np.flatnonzero(tiny_embeddings.listing_in_graph)) == set(archive["listing_id"])
    # a listing engaged only in the training window is not in the graph: training pairs are not edges
    logs = tiny_world.observed.logs("train")
    only_train = set(logs.loc[logs.click, "listing_id"]) - set(archive["listing_id"])
    assert only_train and not tiny_embeddings.listing_in_graph[sorted(only_train)].any()


def test_graph_logs_pick_the_window(tiny_world):
    observed = tiny_world.observed
    assert graph_logs(observed) is observed.archive
    pd.testing.assert_frame_equal(graph_logs(observed, "train"), observed.logs("train"))


def test_same_seed_same_embeddings(tiny_world, tiny_embeddings):
    again = fit_graph_embeddings(tiny_world.observed, Node2VecConfig(dim=8, num_walks=2, walk_length=8))
    np.testing.assert_array_equal(again.listing_vectors, tiny_embeddings.listing_vectors)
    np.testing.assert_array_equal(again.query_vectors, tiny_embeddings.query_vectors)


def test_embeddings_round_trip_through_the_cache(tiny_world, tmp_path, monkeypatch):
    monkeypatch.setenv("RETRIEVAL_LIB_CACHE", str(tmp_path))
    config = Node2VecConfig(dim=8, num_walks=2, walk_length=8)
    first = graph_embeddings(tiny_world.observed, "fp", config)
    second = graph_embeddings(tiny_world.observed, "fp", config)
    np.testing.assert_array_equal(first.listing_vectors, second.listing_vectors)
    assert first.query_index == second.query_index
    folder = next(tmp_path.glob("graph-*"))
    (folder / "meta.json").write_text("garbage")
    with pytest.warns(UserWarning, match="recomputing"):
        third = graph_embeddings(tiny_world.observed, "fp", config)
    np.testing.assert_array_equal(third.listing_vectors, first.listing_vectors)
    assert isinstance(GraphEmbeddings.load(folder), GraphEmbeddings)


def test_graph_retriever_answers_seen_queries_only(tiny_embeddings, tiny_world):
    sessions = pd.DataFrame({"query": [tiny_world.observed.archive["query"].iloc[0], "zzz unseen"]})
    ids = GraphRetriever(tiny_embeddings).retrieve(sessions, 5)
    assert (ids[0] >= 0).all() and (ids[1] == -1).all()
    assert tiny_embeddings.listing_in_graph[ids[0]].all()
