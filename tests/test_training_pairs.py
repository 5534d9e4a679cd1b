"""Training pairs from the logs: engaged impressions, their strongest interaction and their indexing."""

import numpy as np
import pandas as pd
import pytest
import torch

from retrieval_lib.marketplace import ObservedMarketplace
from retrieval_lib.training.pairs import INTERACTIONS, TrainingPairs, engaged_pairs, validation_pairs


def _observed():
    """Two training sessions and one validation session; impressions cover every stage combination."""
    sessions = pd.DataFrame({"session_id": [0, 1, 2], "user_id": [7, 8, 7], "query": ["mug", "ring", "mug"],
                             "day": [1.0, 2.0, 50.0], "split": ["train", "train", "valid"]})
    #              listing: click  cart   purchase   expected
    stages = [(0, 10, True, False, False),   # click
              (0, 11, True, True, False),    # cart
              (0, 12, True, True, True),     # purchase
              (0, 13, False, False, False),  # not engaged: no pair
              (1, 10, False, True, False),   # cart without a logged click is still cart
              (1, 14, False, False, True),   # purchase alone is still purchase
              (1, 15, True, False, True),    # purchase beats click
              (2, 10, True, False, False)]   # another window
    impressions = pd.DataFrame(stages, columns=["session_id", "listing_id", "click", "cart", "purchase"])
    impressions.insert(2, "position", np.arange(len(impressions)))
    empty = pd.DataFrame()
    return ObservedMarketplace(listings=empty, shops=empty, users=empty, sessions=sessions, impressions=impressions,
                               train_end=10.0, valid_end=100.0)


def test_engaged_pairs_by_hand():
    pairs = engaged_pairs(_observed(), "train")
    assert list(pairs.columns) == ["session_id", "user_id", "query", "day", "listing_id", "interaction"]
    assert pairs["listing_id"].tolist() == [10, 11, 12, 10, 14, 15]
    assert pairs["interaction"].tolist() == ["click", "cart", "purchase", "cart", "purchase", "purchase"]
    assert list(pairs["interaction"].cat.categories) == list(INTERACTIONS)
    assert pairs["user_id"].tolist() == [7, 7, 7, 8, 8, 8] and pairs["query"].tolist()[3] == "ring"
    assert pairs["day"].tolist() == [1.0, 1.0, 1.0, 2.0, 2.0, 2.0]
    valid = engaged_pairs(_observed(), "valid")
    assert valid[["session_id", "listing_id"]].values.tolist() == [[2, 10]]


def test_engaged_pairs_take_the_strongest_stage_of_the_logs(tiny_world):
    logs = tiny_world.observed.logs("train")
    engaged = logs[logs["click"] | logs["cart"] | logs["purchase"]].reset_index(drop=True)
    pairs = engaged_pairs(tiny_world.observed, "train")
    assert len(pairs) == len(engaged) and set(pairs["interaction"]) == set(INTERACTIONS)
    pd.testing.assert_frame_equal(pairs[["session_id", "listing_id"]], engaged[["session_id", "listing_id"]])
    interaction = pairs["interaction"].to_numpy()
    np.testing.assert_array_equal(interaction == "purchase", engaged["purchase"])
    np.testing.assert_array_equal(interaction == "cart", engaged["cart"] & ~engaged["purchase"])
    np.testing.assert_array_equal(interaction == "click", ~engaged["cart"] & ~engaged["purchase"])


def test_validation_pairs_are_a_fixed_sample(tiny_world):
    observed = tiny_world.observed
    every = engaged_pairs(observed, "valid")
    assert len(every) > 100
    torch.manual_seed(1)
    np.random.seed(1)
    first = validation_pairs(observed, max_pairs=100)
    torch.manual_seed(2)  # a different training seed changes nothing
    np.random.seed(2)
    np.random.default_rng(2).random(10)
    again = validation_pairs(observed, max_pairs=100)
    pd.testing.assert_frame_equal(first, again)
    assert len(first) == 100 and first.index.tolist() == list(range(100))
    # a sample of real validation pairs, in log order
    merged = first.merge(every, how="left", indicator=True)
    assert (merged["_merge"] == "both").all()
    assert not validation_pairs(observed, max_pairs=100, seed=1).equals(first)
    pd.testing.assert_frame_equal(validation_pairs(observed, max_pairs=10**6), every)


def test_training_pairs_index_queries_requests_and_interactions():
    frame = engaged_pairs(_observed(), "train")
    pairs = TrainingPairs.of(frame)
    assert len(pairs) == 6
    assert pairs.query_text == ["mug", "ring"]
    assert [pairs.query_text[r] for r in pairs.query_row] == frame["query"].tolist()
    np.testing.assert_array_equal(pairs.listing, [10, 11, 12, 10, 14, 15])
    np.testing.assert_array_equal(pairs.user, [7, 7, 7, 8, 8, 8])
    np.testing.assert_array_equal(pairs.interaction, [0, 1, 2, 1, 2, 2])
    np.testing.assert_array_equal(pairs.day, [1.0, 1.0, 1.0, 2.0, 2.0, 2.0])
    assert len(set(pairs.request)) == 2 and pairs.request[0] == pairs.request[2] != pairs.request[3]
    # same query, another user: another request
    two_users = TrainingPairs.of(frame.assign(query="mug"))
    assert len(two_users.query_text) == 1 and two_users.request[0] != two_users.request[3]


def test_training_pairs_reject_an_unknown_interaction():
    frame = engaged_pairs(_observed(), "train")
    frame["interaction"] = frame["interaction"].astype(str)
    TrainingPairs.of(frame)  # plain strings of known types are fine
    frame.loc[4, "interaction"] = "favourite"
    with pytest.raises(ValueError, match="unknown interaction"):
        TrainingPairs.of(frame)
