"""The semantic-gap slice: test sessions whose query shares no word with the wanted listing."""

import types

import numpy as np
import pandas as pd
import pytest

from retrieval_lib.evaluation.offline import EvaluationSet
from retrieval_lib.evaluation.semantic_gap import GAP_SLICES, gap_slices, query_listing_overlap
from retrieval_lib.text.words import listing_documents, word_overlap


@pytest.fixture(scope="module")
def test_set(tiny_world) -> EvaluationSet:
    return EvaluationSet.build(tiny_world, "test")


def test_overlap_is_one_share_per_session(test_set):
    overlap = query_listing_overlap(test_set)
    assert overlap.shape == (len(test_set.sessions),)
    known = overlap[~np.isnan(overlap)]
    assert ((known >= 0) & (known <= 1)).all()


def test_overlap_is_the_word_overlap_with_the_wanted_listings_text(test_set):
    overlap = query_listing_overlap(test_set)
    docs = listing_documents(test_set.world.observed.listings)
    queries = test_set.sessions["query"].to_numpy()
    # a few rows by hand, and one of each kind: no shared word, a partial share, every word shared
    rows = [0, 1, 2, int(np.flatnonzero(overlap == 0)[0]), int(np.flatnonzero((overlap > 0) & (overlap < 1))[0]),
            int(np.flatnonzero(overlap == 1)[0])]
    for row in rows:
        expected = word_overlap(queries[row], docs[test_set.targets[row]])
        assert overlap[row] == pytest.approx(expected, nan_ok=True), (row, queries[row])


def test_gap_slices_are_disjoint_boolean_masks_covering_every_query_with_words(test_set):
    overlap = query_listing_overlap(test_set)
    slices = gap_slices(test_set)
    assert tuple(slices) == GAP_SLICES == ("no shared word", "shared word")
    gap, shared = slices["no shared word"], slices["shared word"]
    for mask in (gap, shared):
        assert mask.dtype == bool and mask.shape == (len(test_set.sessions),)
    assert not (gap & shared).any()
    np.testing.assert_array_equal(gap | shared, ~np.isnan(overlap))
    np.testing.assert_array_equal(gap, overlap == 0)
    assert gap.sum() >= 1 and shared.sum() >= 1  # the tiny world has sessions on both sides of the gap


def _stand_in(queries: list[str], targets: list[int]) -> types.SimpleNamespace:
    listings = pd.DataFrame({"title": ["silver necklace", "blue ceramic mug"],
                             "tags": [("pendant", "gift"), ("coffee", "kitchen")],
                             "taxonomy": ["jewelry > necklace", "kitchen > mug"]})
    return types.SimpleNamespace(world=types.SimpleNamespace(observed=types.SimpleNamespace(listings=listings)),
                                 sessions=pd.DataFrame({"query": queries}), targets=np.array(targets))


def test_overlap_and_slices_by_hand():
    # no shared word with the necklace; "silver" of "silver ring" is in it (1 of 2 words); stop words only
    eval_set = _stand_in(["choker for mom", "silver ring", "for the"], [0, 0, 1])
    overlap = query_listing_overlap(eval_set)
    assert overlap[0] == 0.0 and overlap[1] == 0.5 and np.isnan(overlap[2])
    slices = gap_slices(eval_set)
    np.testing.assert_array_equal(slices["no shared word"], [True, False, False])
    np.testing.assert_array_equal(slices["shared word"], [False, True, False])


def test_overlap_reads_the_target_listings_tags_and_taxonomy():
    eval_set = _stand_in(["coffee kitchen", "pendant jewelry", "pendant jewelry"], [1, 0, 1])
    np.testing.assert_array_equal(query_listing_overlap(eval_set), [1.0, 1.0, 0.0])
    np.testing.assert_array_equal(gap_slices(eval_set)["no shared word"], [False, False, True])
