"""The fast exact evaluation agrees with the generic one, figure for figure, ties included."""

import numpy as np
import pandas as pd
import pytest
import torch

from retrieval_lib.evaluation.offline import (
    EvaluationSet,
    ExactSessionSearch,
    evaluate,
    exact_target_ranks,
    keep_available,
)
from retrieval_lib.marketplace.behaviour import available
from retrieval_lib.models.unified import UnifiedConfig, UnifiedRetriever, fit_unified
from retrieval_lib.serving.base import PAD
from retrieval_lib.training.loop import TrainConfig


class _Generic:
    """The same retriever seen only through ``retrieve``: evaluate takes the generic path."""

    def __init__(self, inner):
        self.inner = inner

    def retrieve(self, sessions, k):
        return self.inner.retrieve(sessions, k)


class _Vectors:
    """An exact retriever over given session and listing vectors (rounded, so that many scores tie)."""

    def __init__(self, es, dim=4, levels=3, seed=0):
        rng = np.random.default_rng(seed)
        n = len(es.world.observed.listings)
        self.search_space = (torch.from_numpy(rng.integers(0, levels, (n, dim)).astype(np.float32)), np.arange(n))
        vectors = rng.integers(0, levels, (len(es.sessions), dim)).astype(np.float32)
        self._q = dict(zip(es.sessions["session_id"], vectors, strict=True))

    def encode_sessions(self, sessions):
        return torch.from_numpy(np.stack([self._q[s] for s in sessions["session_id"]]))

    def retrieve(self, sessions, k):
        from retrieval_lib.serving.exact import exact_top_k
        vectors, ids = self.search_space
        return exact_top_k(self.encode_sessions(sessions), vectors, k, item_ids=ids)[0]


@pytest.fixture(scope="module")
def eval_set(tiny_world):
    return EvaluationSet.build(tiny_world, "test")


@pytest.fixture(scope="module")
def trained_unified(tiny_unified_features):
    config = UnifiedConfig(n_buckets=tiny_unified_features.n_buckets, term_dim=16, hidden=32, out_dim=16,
                           history_heads=2)
    model, _ = fit_unified(tiny_unified_features, config, TrainConfig(epochs=2, batch_size=128), progress=False)
    return UnifiedRetriever(model, tiny_unified_features)


def test_fast_and_generic_paths_give_the_same_figures_with_many_ties(eval_set):
    for seed in (0, 1):
        retriever = _Vectors(eval_set, seed=seed)
        assert isinstance(retriever, ExactSessionSearch) and not isinstance(_Generic(retriever), ExactSessionSearch)
        fast = evaluate(retriever, eval_set).per_session
        generic = evaluate(_Generic(retriever), eval_set).per_session
        pd.testing.assert_frame_equal(fast, generic)


@pytest.mark.parametrize("depth", [1, 7, 100, 5000])
def test_exact_ranking_is_the_generic_ranking(eval_set, depth):
    retriever = _Vectors(eval_set, seed=depth)
    fast = eval_set.ranking(retriever, depth)
    np.testing.assert_array_equal(fast, eval_set.ranking(_Generic(retriever), depth))
    assert fast.shape == (len(eval_set.sessions), depth)
    if depth > len(eval_set.world.observed.listings):
        assert (fast[:, -1] == PAD).all()


def test_fast_path_agrees_for_the_unified_model(eval_set, trained_unified):
    fast = evaluate(trained_unified, eval_set).per_session
    generic = evaluate(_Generic(trained_unified), eval_set).per_session
    pd.testing.assert_frame_equal(fast, generic)


def test_target_ranks_by_hand(eval_set):
    retriever = _Vectors(eval_set, seed=2)
    places, firsts = exact_target_ranks(retriever, eval_set, 5)
    vectors, _ = retriever.search_space
    q = retriever.encode_sessions(eval_set.sessions).numpy()
    sid = eval_set.sessions["session_id"].to_numpy()
    for row in range(0, len(sid), max(1, len(sid) // 25)):
        scores = vectors.numpy() @ q[row]
        ok = available(eval_set.world.latent, sid[row:row + 1], np.arange(len(scores))[None, :])[0]
        order = [c for c in np.lexsort((np.arange(len(scores)), -scores)) if ok[c]]
        assert list(firsts[row][firsts[row] != PAD]) == order[:5]
        assert places[row] == order.index(eval_set.targets[row])


def test_keep_available_keeps_order_and_pads(tiny_world):
    latent = tiny_world.latent
    late = int(np.argmax(latent.listings["created_day"]))
    first = int(np.argmin(latent.intents["day"]))
    ranked = np.array([[late, 0, PAD, 1, 2]])
    kept = keep_available(tiny_world, np.array([first]), ranked, 4)
    expected = [x for x in ranked[0] if x != PAD and latent.listings["created_day"][x] <= latent.intents["day"][first]]
    assert kept.tolist() == [(expected + [PAD] * 4)[:4]]


class _World:
    """Just enough of a world for keep_available: listing creation days and session days."""

    def __init__(self, created, day):
        self.latent = type("Latent", (), {"listings": {"created_day": created}, "intents": {"day": day}})()


def test_keep_available_matches_a_stable_sort_on_random_rows():
    rng = np.random.default_rng(3)
    for _ in range(300):
        m, n, depth = int(rng.integers(0, 6)), int(rng.integers(0, 12)), int(rng.integers(1, 15))
        world = _World(rng.integers(0, 3, 50).astype(float), rng.integers(0, 3, 6).astype(float))
        sessions = rng.integers(0, 6, m)
        ranked = rng.integers(-1, 50, (m, n))
        ok = (ranked != PAD) & available(world.latent, sessions, ranked.clip(0))
        order = np.argsort(~ok, axis=1, kind="stable")  # the reference: available first, order kept
        ref = np.where(np.take_along_axis(ok, order, axis=1), np.take_along_axis(ranked, order, axis=1), PAD)
        ref = np.concatenate([ref, np.full((m, max(0, depth - n)), PAD)], axis=1)[:, :depth]
        np.testing.assert_array_equal(keep_available(world, sessions, ranked, depth), ref)
