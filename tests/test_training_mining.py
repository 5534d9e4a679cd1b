"""Dynamic hard negatives: the ANN miner against exact search, its window, guards and refreshes."""

import numpy as np
import pandas as pd
import pytest
import torch

from retrieval_lib.serving.base import PAD
from retrieval_lib.serving.exact import exact_top_k
from retrieval_lib.training.mining import (
    MinedNegatives,
    catalogue_index,
    check_window,
    ranked_candidates,
    sample_window,
)
from retrieval_lib.training.negatives import Batch, Catalogue
from retrieval_lib.training.pairs import TrainingPairs

N_LISTINGS = 300


def _unit(n, dim=16, seed=0):
    x = torch.randn(n, dim, generator=torch.Generator().manual_seed(seed))
    return torch.nn.functional.normalize(x, dim=1)


TABLE = _unit(N_LISTINGS)


def _encode(ids):
    return TABLE[torch.from_numpy(np.array(ids))]


def _pairs(n=12, day=0.0):
    rng = np.random.default_rng(0)
    return TrainingPairs.of(pd.DataFrame({
        "session_id": np.arange(n), "user_id": np.arange(n), "query": [f"q{i % 4}" for i in range(n)],
        "day": np.full(n, day), "listing_id": rng.integers(0, N_LISTINGS, n), "interaction": ["click"] * n}))


def _catalogue(future=()):
    created = np.full(N_LISTINGS, -10.0)
    created[list(future)] = 5.0  # listed after the requests (day 0)
    return Catalogue(np.arange(N_LISTINGS), created)


def test_the_miner_index_matches_exact_search_on_a_small_catalogue():
    index = catalogue_index(_encode, _catalogue(), m=16, ef_construction=200, ef=200)
    queries = _unit(50, seed=1)
    approx = index.search(queries, 30).ids
    exact, _ = exact_top_k(queries, TABLE, 30)
    np.testing.assert_array_equal(approx, exact)


def test_ranked_candidates_drop_guarded_listings_and_keep_the_order():
    pairs = _pairs()
    future = [int(i) for i in exact_top_k(_unit(1, seed=2), TABLE, 3)[0][0]]  # the top 3 of row 0's query
    catalogue = _catalogue(future)
    index = catalogue_index(_encode, catalogue, ef_construction=200, ef=200)
    rows = np.arange(len(pairs))
    queries = torch.cat([_unit(1, seed=2), _unit(len(pairs) - 1, seed=3)])
    ranked = ranked_candidates(index, catalogue, pairs, rows, queries, depth=40)
    exact, _ = exact_top_k(queries, TABLE, N_LISTINGS)
    guarded = pairs.engaged_for_query(rows, exact)
    for i in rows:
        allowed = [int(x) for x, g in zip(exact[i], guarded[i], strict=True) if not g and x not in future]
        assert ranked[i].tolist() == allowed[:40]
    assert not set(ranked[0]) & set(future)


def test_ranked_candidates_need_a_positive_depth():
    pairs = _pairs()
    index = catalogue_index(_encode, _catalogue())
    for depth, slack in ((0, 10), (5, -1)):
        with pytest.raises(ValueError, match="depth"):
            ranked_candidates(index, _catalogue(), pairs, np.arange(2), _unit(2), depth, slack)


def test_sample_window_draws_only_from_the_window_without_replacement():
    ranked = np.tile(np.arange(100, 200), (3, 1))
    ranked[2, 20:] = PAD  # a short list: the window holds only ranks 11-20
    ids = sample_window(ranked, (11, 31), 8, torch.Generator().manual_seed(0))
    assert ids.shape == (3, 8)
    for row in ids[:2]:
        assert len(set(row)) == 8 and set(row) <= set(range(110, 130))
    assert set(ids[2]) <= set(range(110, 120))
    short = sample_window(ranked, (11, 31), 25, torch.Generator().manual_seed(0))
    assert (short[2] == PAD).sum() == 15 and (short[0] == PAD).sum() == 5


def test_rank_windows_are_checked():
    assert check_window((1, 11)) == (1, 11)
    for bad in ((0, 10), (10, 10), (5, 2), (1.5, 3), (1, 2, 3)):
        with pytest.raises(ValueError, match="rank window"):
            check_window(bad)
    for bad in ({"n": 0}, {"refresh_every": 0}, {"ef": -1}, {"window": (0, 5)}):
        with pytest.raises(ValueError):
            MinedNegatives(**bad)


def _batch(pairs, rows, step, catalogue, queries):
    return Batch(rows, pairs, queries, _encode(pairs.listing[rows]), _encode, step, catalogue, _encode)


def test_mined_negatives_never_return_a_positive_and_refresh_on_schedule():
    pairs = _pairs()
    catalogue = _catalogue()
    rows = np.arange(len(pairs))
    # queries equal to their positives: the positives would be rank 1 without the guard
    queries = _encode(pairs.listing)
    miner = MinedNegatives(window=(1, 21), n=10, refresh_every=3)
    refreshes = []
    for step in range(7):
        ids = miner.sample(_batch(pairs, rows, step, catalogue, queries))
        refreshes.append(miner.stats()["refreshes"])
        assert ids.shape == (len(pairs), 10) and (ids >= 0).all()
        assert not pairs.engaged_for_query(rows, ids).any()
        assert not (ids == pairs.listing[:, None]).any()
    assert refreshes == [1, 1, 1, 2, 2, 2, 3]  # steps 0, 3 and 6
    assert miner.stats()["refresh_seconds"] > 0
    miner.reset()
    assert miner.stats()["refreshes"] == 0


def test_mined_negatives_take_the_window_not_the_top():
    pairs = _pairs()
    catalogue = _catalogue()
    rows = np.arange(len(pairs))
    queries = _unit(len(pairs), seed=5)
    miner = MinedNegatives(window=(6, 16), n=10, refresh_every=100, ef=200, ef_construction=200)
    negatives = miner(_batch(pairs, rows, 0, catalogue, queries))
    ranked = ranked_candidates(catalogue_index(_encode, catalogue, ef_construction=200, ef=200), catalogue, pairs,
                               rows, queries, depth=15)
    ids = miner.sample(_batch(pairs, rows, 1, catalogue, queries))
    for i in rows:
        assert set(ids[i]) == set(ranked[i, 5:15])  # all ten of ranks 6-15, none of the top 5
    assert negatives.scores.shape == (len(pairs), 10) and not negatives.mask.any()


def test_mined_negatives_need_the_trainers_catalogue_and_encoder():
    pairs = _pairs()
    rows = np.arange(4)
    with pytest.raises(ValueError, match="encode_frozen"):
        MinedNegatives()(Batch(rows, pairs, _encode(rows), _encode(rows), _encode, 0, _catalogue(), None))
    with pytest.raises(ValueError, match="catalogue"):
        MinedNegatives()(Batch(rows, pairs, _encode(rows), _encode(rows), _encode, 0, None, _encode))
