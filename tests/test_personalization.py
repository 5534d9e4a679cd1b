"""Observable diagnostics of personalization: top-k overlap with and without history, same-type negatives."""

import numpy as np
import pandas as pd
import pytest

from retrieval_lib.evaluation.personalization import history_overlap, same_type_share
from retrieval_lib.marketplace.data import ObservedMarketplace


class Fixed:
    """A retriever that returns a fixed ranking."""

    def __init__(self, ranked):
        self.ranked = np.asarray(ranked)

    def retrieve(self, sessions, k):
        return self.ranked[:, :k]


def test_history_overlap_is_the_shared_share_of_the_top_k():
    sessions = pd.DataFrame({"session_id": [0, 1]})
    a = Fixed([[1, 2, 3, 4], [5, 6, 7, -1]])
    b = Fixed([[4, 3, 9, 8], [5, 6, 7, -1]])
    np.testing.assert_allclose(history_overlap(a, b, sessions, k=4), [0.5, 0.75])  # padding never counts
    np.testing.assert_allclose(history_overlap(a, a, sessions, k=2), [1.0, 1.0])
    with pytest.raises(ValueError, match="positive"):
        history_overlap(a, b, sessions, k=0)


def _pages() -> ObservedMarketplace:
    """Four listings of two types; two pages, one click each."""
    listings = pd.DataFrame({"listing_id": [0, 1, 2, 3], "title": ["a"] * 4, "tags": [[]] * 4,
                             "taxonomy": ["lamp", "lamp", "vase", "vase"]})
    sessions = pd.DataFrame({"session_id": [0, 1], "user_id": [0, 1], "query": ["q", "q"], "day": [0.0, 1.0],
                             "split": ["train", "train"]})
    impressions = pd.DataFrame({"session_id": [0, 0, 0, 1, 1], "listing_id": [0, 1, 2, 2, 0],
                                "position": [0, 1, 2, 0, 1], "click": [True, False, False, True, False],
                                "cart": [False] * 5, "purchase": [False] * 5})
    return ObservedMarketplace(listings, pd.DataFrame(), pd.DataFrame(), sessions, impressions, 2.0, 3.0)


def test_same_type_share_by_hand():
    share = same_type_share(_pages(), batch_size=2, n_batches=20)
    # engaged pairs: listing 0 (lamp) and listing 2 (vase): a batch of both never shares a type
    assert share["in_batch"] == 0.0
    # page 0: clicked lamp among a lamp and a vase (1/2); page 1: clicked vase among a lamp (0/1)
    assert share["page"] == pytest.approx(0.25)
    with pytest.raises(ValueError, match="fewer than a batch"):
        same_type_share(_pages(), batch_size=3)
    with pytest.raises(ValueError, match="at least 2"):
        same_type_share(_pages(), batch_size=1)


def test_pages_contrast_far_more_same_type_listings_than_batches_on_the_tiny_world(tiny_world):
    share = same_type_share(tiny_world.observed, batch_size=128, n_batches=20)
    assert 0 <= share["in_batch"] < 0.2
    assert share["page"] > 3 * share["in_batch"]
