import numpy as np
import pandas as pd
import pytest

from retrieval_lib.evaluation import (
    LONG_HISTORY,
    EvaluationSet,
    evaluate,
    facet_probe,
    history_bin,
    history_length,
    history_reveals_taste,
    query_segments,
    segment_of,
)
from retrieval_lib.lexical import PAD
from retrieval_lib.marketplace import ObservedMarketplace


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
    def __init__(self, ranked):
        self.ranked = ranked

    def retrieve(self, sessions, k):
        return self.ranked


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
    result = evaluate(Fixed(np.full((len(eval_set.sessions), 1000), PAD)), eval_set)
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


def test_wrong_shape_is_a_clear_error(eval_set):
    with pytest.raises(ValueError, match="shape"):
        evaluate(Fixed(np.zeros((3, 5), dtype=int)), eval_set)


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
