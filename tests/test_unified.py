import numpy as np
import pandas as pd
import pytest
import torch

from retrieval_lib.baselines.popularity import PopularityRetriever
from retrieval_lib.evaluation.offline import EvaluationSet, evaluate
from retrieval_lib.models.unified import (
    COMPONENTS,
    UnifiedConfig,
    UnifiedModel,
    UnifiedRetriever,
    fit_unified,
    unified_model,
)
from retrieval_lib.serving.ann import HNSWIndex
from retrieval_lib.serving.search import Retriever, history_effect
from retrieval_lib.training.negatives import accidental_hits
from retrieval_lib.training.pairs import engaged_pairs, request_keys
from retrieval_lib.training.trainer import TrainConfig

BUCKETS = 2**14
CONFIG = UnifiedConfig(n_buckets=BUCKETS, term_dim=32, hidden=64, out_dim=32)
TRAIN = TrainConfig(epochs=4, batch_size=128, lr=3e-3, patience=2)


@pytest.fixture(scope="module")
def features(tiny_unified_features):
    return tiny_unified_features


@pytest.fixture(scope="module")
def trained(features):
    return fit_unified(features, CONFIG, TRAIN, progress=False)


def test_config_switches_and_validation():
    assert not CONFIG.without("graph").graph and CONFIG.without("graph").term
    with pytest.raises(ValueError, match="component"):
        CONFIG.without("colour")
    with pytest.raises(ValueError, match="term or transformer"):
        UnifiedConfig(term=False, transformer=False)
    with pytest.raises(ValueError, match="divisible"):
        UnifiedConfig(term_dim=30, history_heads=4)
    for bad in (1.0, -0.1, "half"):
        with pytest.raises(ValueError, match="graph_dropout"):
            UnifiedConfig(graph_dropout=bad)


def test_graph_dropout_hides_the_graph_block_in_training_only(features):
    """In training a share of listings look as if they were not in the graph; at inference none do."""
    import dataclasses

    config = dataclasses.replace(CONFIG, graph_dropout=0.5)
    torch.manual_seed(0)
    model = UnifiedModel(config, features.dims)
    bags, blocks = features.listings(np.arange(400))
    hidden = {**blocks, "graph": torch.zeros_like(blocks["graph"])}
    with torch.no_grad():
        model.train()
        torch.manual_seed(1)
        dropped = model.encode_listings(bags, blocks)
        model.eval()
        full, blind = model.encode_listings(bags, blocks), model.encode_listings(bags, hidden)
    in_graph = blocks["graph"][:, -1] > 0
    as_full = torch.isclose(dropped, full, atol=1e-6).all(dim=1)
    as_blind = torch.isclose(dropped, blind, atol=1e-6).all(dim=1)
    assert (as_full | as_blind).all()  # each listing either kept or hid its whole graph block
    share = as_blind[in_graph].float().mean().item()
    assert 0.35 < share < 0.65
    assert torch.equal(model.encode_listings(bags, blocks), full)  # inference never drops


@pytest.mark.parametrize("component", ["full", *COMPONENTS])
def test_every_ablation_builds_and_gives_unit_vectors(features, component):
    config = CONFIG if component == "full" else CONFIG.without(component)
    torch.manual_seed(0)
    model = UnifiedModel(config, features.dims).eval()
    sessions = features.observed.sessions.iloc[:5]
    with torch.no_grad():
        listings = model.encode_listings(*features.listings(np.arange(7)))
        rows = features.session_rows(sessions["session_id"].to_numpy())
        queries = model.encode_queries(*features.queries(sessions["query"].tolist(), sessions["user_id"].to_numpy(),
                                                         rows, config))
    assert listings.shape == (7, 32) and queries.shape == (5, 32)
    torch.testing.assert_close(listings.norm(dim=1), torch.ones(7))
    torch.testing.assert_close(queries.norm(dim=1), torch.ones(5))


def test_components_really_switch_off(features):
    """With location off, another user (no history) does not move the query vector; with it on, it does."""
    assert not np.allclose(features.user_location[0].numpy(), features.user_location[1].numpy())
    sessions = features.observed.sessions.iloc[:3]
    texts, rows = sessions["query"].tolist(), np.full(3, -1)
    for config, should_move in ((CONFIG.without("location"), False), (CONFIG, True)):
        torch.manual_seed(0)
        model = UnifiedModel(config, features.dims).eval()
        with torch.no_grad():
            a = model.encode_queries(*features.queries(texts, np.array([0, 0, 0]), rows, config))
            b = model.encode_queries(*features.queries(texts, np.array([1, 1, 1]), rows, config))
        assert (not torch.allclose(a, b)) == should_move


def test_the_query_towers_frozen_blocks_follow_the_components(features):
    """The query's graph vector and token means feed the query tower only while their component is on."""
    assert UnifiedConfig().query_frozen_blocks
    blocks = {c: UnifiedModel(c, features.dims).query_blocks for c in (
        UnifiedConfig(), UnifiedConfig().without("graph"), UnifiedConfig().without("transformer"),
        UnifiedConfig(query_frozen_blocks=False), UnifiedConfig(query_frozen_blocks=False, term=False))}
    assert list(blocks.values()) == [["location", "transformer", "graph"], ["location", "transformer"],
                                     ["location", "graph"], ["location"], ["location", "transformer"]]


def _necklace(model, features, row, config=CONFIG):
    with torch.no_grad():
        return model.encode_queries(*features.queries(["necklace"], np.array([-1]), np.array([row]), config))


def test_history_starts_switched_off_and_training_switches_it_on(features, trained):
    """The history's output projection starts at zero; after training, history moves the query vector."""
    row = int(np.argmax(features.history.lengths()))
    torch.manual_seed(0)
    fresh = UnifiedModel(CONFIG, features.dims).eval()
    torch.testing.assert_close(_necklace(fresh, features, row), _necklace(fresh, features, -1))
    model = trained[0].eval()
    assert not torch.allclose(_necklace(model, features, row), _necklace(model, features, -1))
    with pytest.raises(ValueError, match="history"):
        fresh.encode_queries(*features.queries(["necklace"], np.array([-1]), np.array([-1]),
                                               CONFIG.without("history")))


def test_request_keys_separate_users_of_the_same_query():
    keys = request_keys(np.array([0, 0, 0, 1]), np.array([5, 5, 6, 5]))
    assert keys[0] == keys[1] and len({keys[1], keys[2], keys[3]}) == 3
    mask = accidental_hits(keys, np.array([10, 11, 12, 13])).numpy()
    assert mask[0, 1] and mask[1, 0]  # the same buyer's same query: an accidental hit
    assert not mask[0, 2] and not mask[2, 0]  # another buyer's "necklace": a real negative


def test_trained_model_beats_popularity(tiny_world, features, trained):
    model, history = trained
    assert history.best_score > 0 and len(history.train_loss) >= 2
    es = EvaluationSet.build(tiny_world, "test")
    ours = evaluate(UnifiedRetriever(model, features), es)
    popular = evaluate(PopularityRetriever().fit(tiny_world.observed.logs("train")), es)
    assert ours.value("recall@100", "all") > popular.value("recall@100", "all")


def test_training_is_reproducible(features, trained):
    again, _ = fit_unified(features, CONFIG, TRAIN, progress=False)
    for (name, a), (_, b) in zip(trained[0].state_dict().items(), again.state_dict().items(), strict=True):
        torch.testing.assert_close(a, b, msg=name)


def test_cached_model_round_trips(features, tmp_path, monkeypatch):
    monkeypatch.setenv("RETRIEVAL_LIB_CACHE", str(tmp_path))
    one = TrainConfig(epochs=1, batch_size=128)
    first, history = unified_model(features, "t", CONFIG, one, progress=False)
    (folder,) = tmp_path.glob("unified-*")
    second, again = unified_model(features, "t", CONFIG, one, progress=False)
    assert again == history
    for (name, a), (_, b) in zip(first.state_dict().items(), second.state_dict().items(), strict=True):
        torch.testing.assert_close(a, b, msg=name)
    (folder / "model.safetensors").write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="unreadable"):
        unified_model(features, "t", CONFIG, one, progress=False)


def test_bucket_mismatch_is_a_clear_error(features):
    with pytest.raises(ValueError, match="buckets"):
        UnifiedRetriever(UnifiedModel(UnifiedConfig(n_buckets=2**10, term_dim=32), features.dims), features)


def test_engaged_pairs_carry_their_session_context(tiny_world):
    pairs = engaged_pairs(tiny_world.observed, "valid")
    assert list(pairs.columns) == ["session_id", "user_id", "query", "day", "listing_id", "interaction"]
    valid = tiny_world.observed.split("valid").set_index("session_id")
    assert set(pairs["session_id"]) <= set(valid.index)
    context = valid.loc[pairs["session_id"], ["user_id", "query", "day"]].reset_index(drop=True)
    pd.testing.assert_frame_equal(pairs[["user_id", "query", "day"]], context)


def test_history_graph_vectors_are_those_of_the_engaged_listings(features):
    """The graph block of a history item is its engaged listing's node2vec vector and in-graph flag."""
    history = features.history
    rows = np.concatenate([np.arange(len(history.session_ids)), [-1]])
    graph = features.histories(rows)["graph"].numpy()
    dim = features.graph.dim
    assert graph.shape == (len(rows), history.item.shape[1], dim + 1)
    listing = np.concatenate([history.listing, np.full((1, history.item.shape[1]), -1)])
    engaged = listing >= 0
    vectors = features.graph.listing_vectors
    in_graph = features.graph.listing_in_graph
    lid = listing[engaged]
    expected = np.where(in_graph[lid][:, None], vectors[lid], 0)
    np.testing.assert_allclose(graph[engaged][:, :dim], expected, rtol=1e-6)
    np.testing.assert_array_equal(graph[engaged][:, dim], in_graph[lid])
    assert in_graph[lid].mean() > 0.5  # most engaged listings are in the graph: the check is not vacuous
    assert not graph[~engaged].any()  # queries, padding and the no-history row carry no graph vector
    # the engaged listings are the history's clicks and purchases, and nothing else
    kind = np.concatenate([history.kind, np.zeros((1, history.item.shape[1]), dtype=history.kind.dtype)])
    real = np.concatenate([history.item, np.full((1, history.item.shape[1]), -1)]) >= 0
    np.testing.assert_array_equal(engaged, real & (kind > 0))


def test_retriever_search_and_bad_requests(features, trained):
    retriever = Retriever(trained[0], features, HNSWIndex(ef=100))
    hits = retriever.search("silver necklace", top_n=5)
    assert list(hits.columns) == ["listing_id", "score", "title", "taxonomy"] and len(hits) == 5
    assert hits["score"].is_monotonic_decreasing
    personal = retriever.search("silver necklace", user_id=0, top_n=5)
    assert len(personal) == 5
    assert len(retriever.search("", user_id=0)) == 10  # history and location alone
    assert len(retriever.search("qzxv wvvk")) == 10  # out-of-vocabulary words still hash to features
    with pytest.raises(ValueError, match="unknown user"):
        retriever.search("necklace", user_id=10**6)
    with pytest.raises(ValueError, match="nothing to search"):
        retriever.search("   ")
    with pytest.raises(ValueError, match="dimension"):
        retriever.query(np.ones(3))
    vector = retriever.encode("silver necklace")
    pd.testing.assert_frame_equal(retriever.query(vector, 5), hits)


def test_history_effect_holds_the_user_and_location_fixed(features, trained):
    retriever = Retriever(trained[0], features, HNSWIndex(ef=100))
    lengths = features.history.lengths()[features.current_rows(np.arange(len(features.observed.users)))]
    with_history, without = int(np.argmax(lengths)), int(np.flatnonzero(lengths == 0)[0])
    effect = history_effect(retriever, "necklace", np.array([with_history, without]), k=50).set_index("user_id")
    assert effect.loc[without, "history_items"] == 0
    assert effect.loc[without, "overlap"] == 1.0 and effect.loc[without, "cosine"] == pytest.approx(1.0, abs=1e-5)
    assert effect.loc[with_history, "history_items"] == lengths.max() > 0
    assert 0 <= effect.loc[with_history, "overlap"] <= 1 and effect.loc[with_history, "cosine"] <= 1 + 1e-5
    assert len(retriever.search("necklace", user_id=with_history, top_n=5, history=False)) == 5


def test_query_inputs_are_kept_per_batch_and_equal_fresh_ones(features):
    import dataclasses

    from retrieval_lib.features import unified as unified_features

    sessions = features.observed.sessions.iloc[:5]
    texts, users, rows = sessions["query"].tolist(), sessions["user_id"].to_numpy(), np.full(5, -1)
    first = features.queries(texts, users, rows, CONFIG)
    again = features.queries(texts, users, rows, CONFIG)
    assert again[0][0] is first[0][0] and again[1]["transformer"] is first[1]["transformer"]  # kept
    fresh = dataclasses.replace(features, history_vectors=features.history_vectors)  # a new, empty memo
    assert not fresh._query_memo
    other = fresh.queries(texts, users, rows, CONFIG)
    for a, b in zip((*first[0], *first[1].values()), (*other[0], *other[1].values()), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    for n in range(unified_features.QUERY_MEMO + 3):  # the memo stays bounded
        features.queries([f"query {n}"], np.array([-1]), np.array([-1]), CONFIG)
    assert len(features._query_memo) == unified_features.QUERY_MEMO
