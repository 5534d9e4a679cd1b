from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from retrieval_lib.baselines.bm25 import BM25Retriever
from retrieval_lib.baselines.popularity import PopularityRetriever
from retrieval_lib.evaluation.offline import (
    ID_COLUMNS,
    LONG_HISTORY,
    NDCG_K,
    EvaluationSet,
    check_ranking,
    evaluate,
    history_bin,
    history_length,
    keep_available,
    query_segments,
    segment_of,
    unavailable_margin,
)
from retrieval_lib.evaluation.oracle import OracleRetriever
from retrieval_lib.evaluation.probes import facet_probe, history_reveals_taste
from retrieval_lib.marketplace import ObservedMarketplace
from retrieval_lib.marketplace.behaviour import available, relevance_grades, utility
from retrieval_lib.serving.base import PAD


def _observed(queries, users=None, days=None, split="train"):
    n = len(queries)
    sessions = pd.DataFrame({"session_id": np.arange(n), "user_id": users if users is not None else np.zeros(n, int),
                             "query": queries, "day": days if days is not None else np.arange(n, dtype=float),
                             "split": split})
    empty = pd.DataFrame()
    return ObservedMarketplace(listings=empty, shops=empty, users=empty, sessions=sessions, impressions=empty,
                               train_end=1e9, valid_end=2e9)


def test_segments_split_training_traffic_in_thirds():
    obs = _observed(["a"] * 6 + ["b"] * 3 + ["c"] * 2 + ["d"])
    seg = query_segments(obs)
    # a carries the first half of traffic (head); b starts at 50% (< 2/3: torso); c starts at 75% (tail)
    assert seg.to_dict() == {"a": "head", "b": "torso", "c": "tail", "d": "tail"}
    assert segment_of(pd.Series(["a", "never seen"]), seg).tolist() == ["head", "tail"]


def test_segment_shares_must_be_valid():
    with pytest.raises(ValueError):
        query_segments(_observed(["a"]), head_share=0.7, torso_share=0.5)


def test_history_length_counts_earlier_searches_of_the_same_user():
    obs = _observed(["q"] * 5, users=np.array([1, 2, 1, 1, 2]), days=np.array([0.0, 1.0, 2.0, 3.0, 4.0]))
    assert history_length(obs).tolist() == [0, 0, 1, 2, 1]
    assert history_bin(np.array([0, 1, LONG_HISTORY - 1, LONG_HISTORY])).tolist() == ["none", "short", "short",
                                                                                         "long"]


class Oracle:
    """Puts the label first: perfect recall by construction."""

    def __init__(self, targets):
        self.targets = targets

    def retrieve(self, sessions, k):
        out = np.full((len(sessions), k), PAD)
        out[:, 0] = self.targets[sessions["session_id"].to_numpy()]
        return out


class Fixed:
    """Returns the same array whatever ``k`` it is asked for (to test shape checks)."""

    def __init__(self, ranked):
        self.ranked = ranked

    def retrieve(self, sessions, k):
        return self.ranked


class Padding:
    """Returns ``k`` padding ids per session: nothing retrieved."""

    def retrieve(self, sessions, k):
        return np.full((len(sessions), k), PAD)


class Ranked:
    """Serves a precomputed ranking of listing ids per session id, cut or padded to the ``k`` asked for."""

    def __init__(self, session_ids, ranked):
        self.row = pd.Series(np.arange(len(session_ids)), index=session_ids)
        self.ranked = np.asarray(ranked, dtype=np.int64)
        self.asked: list[int] = []

    def retrieve(self, sessions, k):
        self.asked.append(k)
        out = self.ranked[self.row.loc[sessions["session_id"].to_numpy()].to_numpy(), :k]
        return np.concatenate([out, np.full((len(out), k - out.shape[1]), PAD)], axis=1)


def _rank_by(keys, keep=None):
    """Every listing id per row, sorted by ``keys`` (``(n, L)`` arrays, most important first, higher first).

    Listings where ``keep`` is False become padding at the end of the row.
    """
    n, n_listings = keys[0].shape
    ids = np.broadcast_to(np.arange(n_listings), (n, n_listings))
    keep = np.ones((n, n_listings), bool) if keep is None else keep
    # lexsort sorts by its last key first: kept listings first, then each key descending, ties by id
    order = np.lexsort((ids, *(-k for k in reversed(keys)), ~keep), axis=1)
    ranked = np.take_along_axis(ids, order, axis=1)
    return np.where(np.take_along_axis(keep, order, axis=1), ranked, PAD)


@pytest.fixture(scope="module")
def full_test(tiny_world):
    """Every labelled test session, with the latent relevance grade and future flag of every listing."""
    es = EvaluationSet.build(tiny_world, "test")
    latent = tiny_world.latent
    sid = es.sessions["session_id"].to_numpy()
    n_listings = len(latent.listings["created_day"])
    every = np.broadcast_to(np.arange(n_listings), (len(sid), n_listings))
    grades = relevance_grades(latent, sid, every).astype(np.int64)
    future = latent.listings["created_day"][None, :] > latent.intents["day"][sid][:, None]
    return es, grades, future


@pytest.fixture(scope="module")
def eval_set(tiny_world):
    return EvaluationSet.build(tiny_world, "test", max_sessions=400, seed=0)


def test_oracle_gets_perfect_recall_and_mrr(tiny_world, eval_set):
    result = evaluate(Oracle(tiny_world.latent.labels), eval_set)
    ok = eval_set.targets >= 0
    per = result.per_session[ok]
    assert (per["recall@10"] == 1).all() and (per["mrr"] == 1).all()
    assert per["ndcg@10"].between(0, 1).all()
    # the label is relevant to what the query names, except some gift queries bought without that recipient
    assert (per["ndcg@10"] > 0).mean() > 0.9


def test_padding_only_retriever_scores_zero(eval_set):
    result = evaluate(Padding(), eval_set)
    summary = result.summary()
    assert (summary.drop(columns="n").fillna(0).to_numpy() == 0).all()


def test_summary_rows_and_counts(tiny_world, eval_set):
    result = evaluate(Oracle(tiny_world.latent.labels), eval_set)
    summary = result.summary()
    assert list(summary.index) == ["all", "head", "torso", "tail", "history=none", "history=short", "history=long"]
    assert summary.loc[["head", "torso", "tail"], "n"].sum() == summary.loc["all", "n"] == 400
    assert summary.loc[["history=none", "history=short", "history=long"], "n"].sum() == 400
    assert result.value("recall@100", "all") == pytest.approx(summary.loc["all", "recall@100"])
    with pytest.raises(KeyError):
        result.value("recall@7")


def test_hits_mark_where_each_label_sits(eval_set):
    ranked = np.full((len(eval_set.sessions), 3), PAD)
    ranked[:, 1] = eval_set.targets
    ranked[0, 1] = PAD
    hits = eval_set.hits(ranked)
    assert hits.shape == ranked.shape and hits[1:, 1].all() and not hits[0].any()
    assert not hits[:, [0, 2]].any()
    with pytest.raises(ValueError, match="one ranking row per session"):
        eval_set.hits(ranked[:2])


def test_wrong_shape_is_a_clear_error(eval_set):
    with pytest.raises(ValueError, match="shape"):
        evaluate(Fixed(np.zeros((3, 5), dtype=int)), eval_set)
    # the right number of rows but only max(ks) columns: the retriever ignored the k it was given
    with pytest.raises(ValueError, match="shape"):
        evaluate(Fixed(np.full((len(eval_set.sessions), 1000), PAD)), eval_set)
    with pytest.raises(ValueError, match="integers"):
        check_ranking(np.zeros((2, 3)), 2, 3)


def test_evaluation_asks_for_enough_results_to_survive_the_availability_filter(full_test, tiny_world):
    es, grades, future = full_test
    sid = es.sessions["session_id"].to_numpy()
    retriever = Ranked(sid, _rank_by((grades,)))
    evaluate(retriever, es, ks=(10, 100))
    margin = unavailable_margin(tiny_world, sid)
    assert retriever.asked == [100 + margin]
    assert margin >= future.sum(axis=1).max() > 0  # no row can lose more than the margin
    assert unavailable_margin(tiny_world, np.array([], dtype=np.int64)) == 0


def test_listings_created_after_the_session_score_nothing(full_test, tiny_world):
    """A retriever that returns only listings that did not exist yet (best grades first) scores exactly 0."""
    es, grades, future = full_test
    sid = es.sessions["session_id"].to_numpy()
    ok = es.targets >= 0
    # precondition: every label existed at its session's time, and future listings would earn NDCG gain
    assert available(tiny_world.latent, sid[ok], es.targets[ok, None]).all()
    assert (grades * future).max() > 0 and future.any(axis=1).mean() > 0.5
    result = evaluate(Ranked(sid, _rank_by((grades,), keep=future)), es)
    metrics = result.per_session.drop(columns=list(ID_COLUMNS))
    assert [c for c in metrics.columns if c.startswith(("recall@", "ndcg@"))] == [
        "recall@10", "recall@100", "recall@1000", f"ndcg@{NDCG_K}"]
    assert (metrics.to_numpy() == 0).all()


def test_ndcg_never_exceeds_one(full_test, tiny_world):
    es, grades, future = full_test
    sid = es.sessions["session_id"].to_numpy()
    wanted = tiny_world.latent.listings["type"][None, :] == tiny_world.latent.intents["type"][sid][:, None]
    rng = np.random.default_rng(0)
    retrievers = {
        # ranks by latent grade over the whole catalogue, ignoring when listings were created
        "oracle-ish": _rank_by((grades,)),
        # listings of the wanted type created after the session first, then by grade
        "future first": _rank_by(((future & wanted).astype(np.int64), grades)),
        "future only": _rank_by((grades,), keep=future),
        "label first": _rank_by(((np.arange(grades.shape[1])[None, :] == es.targets[:, None]).astype(np.int64),)),
        "random": _rank_by((rng.random(grades.shape),)),
    }
    ndcg = {}
    for name, ranked in retrievers.items():
        ndcg[name] = evaluate(Ranked(sid, ranked), es).per_session[f"ndcg@{NDCG_K}"].to_numpy()
        assert ((ndcg[name] >= 0) & (ndcg[name] <= 1 + 1e-9)).all(), name
    # after unavailable listings are dropped, the oracle-ish ranking is the ideal ranking
    has_gain = es.ideal.sum(axis=1) > 0
    np.testing.assert_allclose(ndcg["oracle-ish"][has_gain], 1.0)
    assert ndcg["future first"].mean() > ndcg["random"].mean()


def test_a_listing_twice_in_a_row_is_a_clear_error(eval_set):
    assert len(eval_set.sessions) > 7

    class Repeats:
        def retrieve(self, sessions, k):
            out = np.full((len(sessions), k), PAD)
            out[:, :3] = [4, 9, 1]
            out[7, 5] = 9  # row 7 returns listing 9 twice
            return out

    with pytest.raises(ValueError, match="listing 9 twice for session row 7"):
        evaluate(Repeats(), eval_set)
    ranked = np.array([[3, PAD, PAD, 5], [2, 2, PAD, PAD]])
    with pytest.raises(ValueError, match="listing 2 twice for session row 1"):
        check_ranking(ranked, 2, 4)
    np.testing.assert_array_equal(check_ranking(ranked[:1], 1, 4), ranked[:1])  # padding may repeat


def test_keep_available_by_hand():
    """Listings 0-5 created on days 0, 5, 10, 0, 20, 1; sessions 0 and 1 on days 4 and 12."""
    latent = SimpleNamespace(listings={"created_day": np.array([0.0, 5.0, 10.0, 0.0, 20.0, 1.0])},
                             intents={"day": np.array([4.0, 12.0])})
    world = SimpleNamespace(latent=latent)
    ranked = np.array([[1, 0, 4, PAD, 3, 2],
                       [4, 2, 1, 5, PAD, PAD]])
    np.testing.assert_array_equal(keep_available(world, np.array([0, 1]), ranked, 6),
                                  [[0, 3, PAD, PAD, PAD, PAD],
                                   [2, 1, 5, PAD, PAD, PAD]])
    np.testing.assert_array_equal(keep_available(world, np.array([0, 1]), ranked, 2), [[0, 3], [2, 1]])
    np.testing.assert_array_equal(keep_available(world, np.array([1, 0]), ranked[:, :2], 4),
                                  [[1, 0, PAD, PAD], [PAD, PAD, PAD, PAD]])
    assert unavailable_margin(world, np.array([0, 1])) == 3  # listings 1, 2 and 4 come after day 4
    assert unavailable_margin(world, np.array([1])) == 1


def test_training_window_cannot_be_evaluated(tiny_world):
    with pytest.raises(ValueError, match="valid"):
        EvaluationSet.build(tiny_world, "train")
    with pytest.raises(ValueError, match="split"):
        EvaluationSet.build(tiny_world, "later")


def test_sampling_is_deterministic(tiny_world):
    a = EvaluationSet.build(tiny_world, "valid", max_sessions=50, seed=3)
    b = EvaluationSet.build(tiny_world, "valid", max_sessions=50, seed=3)
    assert a.sessions["session_id"].tolist() == b.sessions["session_id"].tolist()
    assert len(a.sessions) == 50 and (a.sessions["split"] == "valid").all()
    with pytest.raises(ValueError):
        EvaluationSet.build(tiny_world, "valid", max_sessions=0)


def test_logged_labels_are_the_logged_purchases(tiny_world):
    logged = EvaluationSet.from_logged_purchases(tiny_world, "test")
    logs = tiny_world.observed.logs("test")
    bought = logs[logs["purchase"]].set_index("session_id")["listing_id"]
    assert len(logged.sessions) == len(bought)
    assert (bought.loc[logged.sessions["session_id"]].to_numpy() == logged.targets).all()


def test_evaluate_accepts_a_world(tiny_world):
    result = evaluate(Oracle(tiny_world.latent.labels), tiny_world, split="valid", ks=(5,))
    assert "recall@5" in result.per_session.columns
    assert len(result.per_session) == (tiny_world.observed.sessions["split"] == "valid").sum()


def test_history_reveals_taste_on_the_tiny_world(tiny_world):
    es = EvaluationSet.build(tiny_world, "test")
    taste = history_reveals_taste(es, facet="aesthetic", segment="head", min_clicks=3)
    assert taste["sessions"] > 0
    assert 0 <= taste["chance"] < taste["match"] <= 1
    none = history_reveals_taste(es, facet="aesthetic", segment="head", min_clicks=10**6)
    assert none["sessions"] == 0 and np.isnan(none["match"])


def test_facet_probe_reads_a_visible_facet_and_not_noise(tiny_world):
    aesthetic = tiny_world.latent.listings["aesthetic"]
    n_classes = int(aesthetic.max()) + 1
    rng = np.random.default_rng(0)
    visible = np.eye(n_classes)[aesthetic] + rng.normal(0, 0.1, (len(aesthetic), n_classes))
    seen = facet_probe(tiny_world, visible, "aesthetic")
    assert seen["classes"] == n_classes and seen["accuracy"] > 0.95 > seen["majority"]
    noise = facet_probe(tiny_world, rng.normal(size=(len(aesthetic), 8)), "aesthetic")
    assert noise["accuracy"] < 2 * noise["majority"]
    assert facet_probe(tiny_world, visible, "aesthetic") == seen  # deterministic for a fixed seed


def test_facet_probe_needs_one_vector_per_listing(tiny_world):
    with pytest.raises(ValueError, match="one vector per listing"):
        facet_probe(tiny_world, np.zeros((3, 4)))


@pytest.mark.parametrize("bad", [-2, 10**6])
def test_ids_that_are_neither_listings_nor_padding_are_a_clear_error(bad):
    ranked = np.array([[0, 1, bad], [2, 3, 4]])
    with pytest.raises(ValueError, match="neither a listing"):
        check_ranking(ranked, 2, 3, n_listings=100)


def test_the_oracle_is_the_ceiling_of_the_baselines(tiny_world):
    es = EvaluationSet.build(tiny_world, "test")
    oracle = evaluate(OracleRetriever(tiny_world), es)
    bm25 = evaluate(BM25Retriever().fit(tiny_world.observed.listings), es)
    popularity = evaluate(PopularityRetriever().fit(tiny_world.observed.logs("train")), es)
    for group in ("all", "head", "torso", "tail"):
        for other in (bm25, popularity):
            assert oracle.value("recall@100", group) > other.value("recall@100", group), group


def test_the_oracle_returns_available_listings_of_the_wanted_type_by_utility(tiny_world):
    sessions = EvaluationSet.build(tiny_world, "test").sessions.iloc[:20]
    ranked = OracleRetriever(tiny_world).retrieve(sessions, 30)
    latent, sid = tiny_world.latent, sessions["session_id"].to_numpy()
    real = ranked != PAD
    assert real.any(axis=1).all()
    wanted = latent.intents["type"][sid][:, None]
    assert (latent.listings["type"][ranked.clip(0)] == wanted)[real].all()
    assert available(latent, sid, ranked.clip(0))[real].all()
    util = np.where(real, utility(latent, sid, ranked.clip(0)), -np.inf)
    assert (np.diff(util, axis=1)[real[:, 1:]] <= 1e-9).all()  # best first
