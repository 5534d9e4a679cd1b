"""Negative sources: which in-batch listings count as negatives, and which are masked as accidental hits."""

import numpy as np
import pandas as pd
import pytest
import torch

from retrieval_lib.serving.base import PAD
from retrieval_lib.training.negatives import (
    Batch,
    Catalogue,
    HardInBatchNegatives,
    InBatchNegatives,
    Negatives,
    UniformNegatives,
    accidental_hits,
    row_negatives,
    sample_existing,
)
from retrieval_lib.training.pairs import TrainingPairs


def test_accidental_hits_mask_same_listing_or_query_off_the_diagonal():
    mask = accidental_hits(np.array([0, 0, 1, 2]), np.array([5, 6, 5, 7])).numpy()
    expected = np.zeros((4, 4), bool)
    expected[0, 1] = expected[1, 0] = True  # same query
    expected[0, 2] = expected[2, 0] = True  # same listing
    np.testing.assert_array_equal(mask, expected)


def _pairs():
    frame = pd.DataFrame({
        "session_id": [0, 1, 2, 3, 4],
        "user_id": [1, 2, 1, 1, 3],
        "query": ["a", "a", "a", "b", "c"],
        "day": [0.0, 1.0, 2.0, 3.0, 4.0],
        "listing_id": [10, 11, 12, 10, 13],
        "interaction": ["click"] * 5,
    })
    return TrainingPairs.of(frame)


#: Off-diagonal pairs of the rows above that are accidental hits, by rule.
SAME_QUERY = {(0, 1), (0, 2), (1, 2)}  # rows 0, 1, 2 all searched "a"
SAME_REQUEST = {(0, 2)}  # rows 0 and 2: user 1 searching "a"
SAME_LISTING = {(0, 3)}  # listing 10


def _expected(hits, rows):
    full = np.eye(5, dtype=bool)  # the row's own listing is always masked
    for i, j in hits:
        full[i, j] = full[j, i] = True
    return full[np.ix_(rows, rows)]


@pytest.mark.parametrize("same, hits", [("query", SAME_QUERY | SAME_LISTING),
                                        ("request", SAME_REQUEST | SAME_LISTING)])
@pytest.mark.parametrize("rows", [[0, 1, 2, 3, 4], [4, 2, 3, 0, 1], [1, 3]])
def test_in_batch_negatives_by_hand(same, hits, rows):
    pairs = _pairs()
    rows = np.array(rows)
    generator = torch.Generator().manual_seed(0)
    q = torch.randn(len(rows), 4, generator=generator)
    v = torch.randn(len(rows), 4, generator=generator)

    def encode(ids):  # pragma: no cover - in-batch negatives never encode other listings
        raise AssertionError("in-batch negatives use the batch's own listings")

    negatives = InBatchNegatives(same)(Batch(rows, pairs, q, v, encode))
    torch.testing.assert_close(negatives.scores, q @ v.T)
    np.testing.assert_array_equal(negatives.mask.numpy(), _expected(hits, rows))


def test_in_batch_negatives_reject_an_unknown_key():
    assert InBatchNegatives().same == "query"
    with pytest.raises(ValueError, match="same"):
        InBatchNegatives("user")


def test_negatives_need_scores_and_mask_of_one_shape():
    Negatives(torch.zeros(2, 3), torch.zeros(2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="shape"):
        Negatives(torch.zeros(2, 3), torch.zeros(3, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="shape"):
        Negatives(torch.zeros(2, 3), torch.zeros(2, dtype=torch.bool))


# --- chapter 7: the catalogue, hard in-batch and uniform negatives -----------------------------------


def _catalogue(n=40):
    """Listing ``i`` is created on day ``i - 20``: listings 0-20 exist from day 0, one more each day."""
    return Catalogue(np.arange(n), np.arange(n, dtype=float) - 20)


def _batch(pairs, rows, catalogue=None, dim=4, seed=0):
    generator = torch.Generator().manual_seed(seed)
    table = torch.randn(100, dim, generator=generator)
    q = torch.randn(len(rows), dim, generator=generator)
    return Batch(np.asarray(rows), pairs, q, table[pairs.listing[rows]], lambda ids: table[torch.from_numpy(ids)],
                 catalogue=catalogue), table


def test_catalogue_knows_which_listings_exist_on_a_day():
    cat = _catalogue()
    ids = np.array([[0, 20, 21, PAD], [25, 39, 40, 3]])
    np.testing.assert_array_equal(cat.existing(ids, np.array([0.0, 5.5])),
                                  [[True, True, False, False], [True, False, False, True]])
    with pytest.raises(ValueError, match="empty"):
        Catalogue(np.array([], dtype=np.int64), np.array([]))
    with pytest.raises(ValueError, match="one creation day"):
        Catalogue(np.arange(3), np.zeros(2))


def test_sample_existing_draws_only_listings_that_exist_at_the_request():
    cat = _catalogue()
    days = np.array([-30.0, -20.0, 0.0, 10.0, 100.0])
    ids = sample_existing(cat, days, 500, torch.Generator().manual_seed(0))
    assert ids.shape == (5, 500)
    assert (ids[0] == PAD).all()  # before the first listing: nothing to draw
    assert (ids[1] == 0).all()  # only listing 0 exists on day -20
    for day, row in zip(days[2:], ids[2:], strict=True):
        assert (row >= 0).all() and (cat.created_day[row] <= day).all()
    assert set(ids[4]) == set(range(40))  # uniform over everything once all exist


def test_uniform_negatives_never_return_a_positive_or_a_future_listing():
    # queries engage: "a" listings 10, 11, 12; "b" 10; "c" 13. Requests on days 0..4; listing i is
    # created on day i - 20, so listings 21 to 24 appear during the batch
    pairs = _pairs()
    batch, table = _batch(pairs, np.arange(5), _catalogue())
    torch.manual_seed(0)
    source = UniformNegatives(n=200)
    ids = source.sample(batch)
    assert ids.shape == (5, 200)
    engaged = {"a": {10, 11, 12}, "b": {10}, "c": {13}}
    for row, drawn in zip(range(5), ids, strict=True):
        drawn = drawn[drawn != PAD]
        assert drawn.size > 0
        assert not set(drawn) & engaged[pairs.frame.at[row, "query"]]
        assert (_catalogue().created_day[drawn] <= pairs.day[row]).all()
    assert 24 in set(ids[4]) and 24 not in set(ids[0])  # the pool holds it; only the last row may use it
    torch.manual_seed(1)
    negatives = source(batch)
    torch.manual_seed(1)
    again = source.sample(batch)
    np.testing.assert_array_equal(negatives.mask.numpy(), again == PAD)
    pool = again.max(axis=0)  # every pooled listing is kept by some row here
    expected = batch.query_vectors @ table[torch.from_numpy(pool)].T
    keep = torch.from_numpy(again != PAD)
    torch.testing.assert_close(negatives.scores[keep], expected[keep])


def test_uniform_negatives_mask_what_they_cannot_avoid():
    # a catalogue of the engaged listings only: every draw is a positive for some row's query
    pairs = _pairs()
    catalogue = Catalogue(np.array([10, 11, 12, 13]), np.full(4, -1.0))
    batch, _ = _batch(pairs, np.array([0, 3]), catalogue)
    ids = UniformNegatives(n=16).sample(batch)
    assert set(ids[0]) <= {13, PAD} and set(ids[1]) <= {11, 12, 13, PAD}
    late = Catalogue(np.array([10, 11]), np.array([50.0, 60.0]))  # nothing exists yet
    negatives = UniformNegatives(n=4)(_batch(pairs, np.array([0, 3]), late)[0])
    assert negatives.mask.all()


def test_uniform_negatives_need_a_catalogue_and_valid_settings():
    batch, _ = _batch(_pairs(), np.arange(5))
    with pytest.raises(ValueError, match="catalogue"):
        UniformNegatives(4)(batch)
    for bad in (0, 2.5, -1):
        with pytest.raises(ValueError, match="UniformNegatives"):
            UniformNegatives(bad)


def test_hard_in_batch_negatives_are_the_top_scoring_unmasked_ones():
    pairs = _pairs()
    rows = np.array([0, 1, 2, 3, 4])
    batch, _ = _batch(pairs, rows)
    every = InBatchNegatives("request")(batch)
    hard = HardInBatchNegatives(k=2, same="request")(batch)
    assert hard.scores.shape == (5, 2)
    for i in range(5):
        allowed = sorted(every.scores[i][~every.mask[i]].tolist(), reverse=True)[:2]
        got = hard.scores[i][~hard.mask[i]].tolist()
        assert got == pytest.approx(allowed)
    # make every row's positive its best-scoring listing: the hard negatives must still skip it
    unit = torch.nn.functional.normalize(batch.listing_vectors, dim=1)
    same = Batch(rows, pairs, unit, unit, batch.encode_listings)
    hard = HardInBatchNegatives(k=2, same="request")(same)
    positive = (same.query_vectors * same.listing_vectors).sum(1)
    assert not torch.isclose(hard.scores, positive[:, None]).any()
    # k above the batch: rows keep their valid negatives and mask the rest
    big = HardInBatchNegatives(k=50)(batch)
    assert big.scores.shape == (5, 5)
    np.testing.assert_array_equal(big.mask.numpy().sum(1), every.mask.numpy().sum(1))
    with pytest.raises(ValueError, match="k"):
        HardInBatchNegatives(k=0)
    with pytest.raises(ValueError, match="same"):
        HardInBatchNegatives(same="user")


def test_row_negatives_score_each_row_against_its_own_listings():
    pairs = _pairs()
    batch, table = _batch(pairs, np.array([0, 1]))
    ids = np.array([[3, PAD, 3], [7, 8, PAD]])
    negatives = row_negatives(batch, ids)
    np.testing.assert_array_equal(negatives.mask.numpy(), ids == PAD)
    assert float(negatives.scores[0, 0]) == pytest.approx(float(batch.query_vectors[0] @ table[3]))
    assert float(negatives.scores[1, 1]) == pytest.approx(float(batch.query_vectors[1] @ table[8]))
    assert float(negatives.scores[0, 1]) == 0.0
    assert row_negatives(batch, np.full((2, 3), PAD)).mask.all()
    with pytest.raises(ValueError, match="one row of negative ids per batch row"):
        row_negatives(batch, np.zeros((3, 2), dtype=np.int64))


def test_engaged_for_query_is_the_observable_false_negative_guard():
    pairs = _pairs()  # "a": listings 10, 11, 12; "b": 10; "c": 13
    ids = np.array([[10, 11, 12, 13, PAD, 10_000], [10, 11, 12, 13, PAD, 10_000], [10, 11, 12, 13, PAD, 10_000]])
    got = pairs.engaged_for_query(np.array([1, 3, 4]), ids)
    np.testing.assert_array_equal(got, [[True, True, True, False, False, False],
                                        [True, False, False, False, False, False],
                                        [False, False, False, True, False, False]])
