"""Negative sources: which in-batch listings count as negatives, and which are masked as accidental hits."""

import numpy as np
import pandas as pd
import pytest
import torch

from retrieval_lib.training.negatives import Batch, InBatchNegatives, Negatives, accidental_hits
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
