import math

import numpy as np
import pandas as pd
import pytest

from retrieval_lib.baselines.bm25 import BM25Retriever
from retrieval_lib.baselines.popularity import PopularityRetriever
from retrieval_lib.serving.base import PAD
from retrieval_lib.text.words import listing_documents, tokenize

# -- BM25 on a hand-made catalogue -----------------------------------------------------------------------


@pytest.fixture
def listings():
    return pd.DataFrame({
        "listing_id": [101, 205, 37, 480, 52],
        "title": ["Silver necklace", "Gold ring", "Leather wallet", "Silver ring", "Wooden bowl"],
        "tags": [("jewelry", "pendant"), ("jewelry", "wedding"), ("men", "gift"), ("jewelry",), ("kitchen",)],
        "taxonomy": ["jewelry.necklaces", "jewelry.rings", "bags.wallets", "jewelry.rings", "home.kitchen"],
    })


@pytest.fixture
def bm25(listings):
    return BM25Retriever().fit(listings)


def test_exact_match_ranks_first(bm25):
    ids, scores = bm25.search(["silver necklace", "leather wallet", "wooden bowl", "gold ring"], k=3)
    np.testing.assert_array_equal(ids[:, 0], [101, 37, 52, 205])
    assert ids.shape == scores.shape == (4, 3)
    assert (scores[:, 0] > 0).all()
    assert (np.diff(scores, axis=1) <= 0).all()


def test_only_matching_listings_are_returned(bm25):
    ids, scores = bm25.search(["silver"], k=5)
    assert set(ids[0, :2]) == {101, 480}
    np.testing.assert_array_equal(ids[0, 2:], [PAD] * 3)
    assert (scores[0, :2] > 0).all() and (scores[0, 2:] == 0).all()


@pytest.mark.parametrize("query", ["", "   ", "for the", "zzzz", "zzzz qqqq", "!!!"])
def test_queries_without_known_words_get_only_padding(bm25, query):
    ids, scores = bm25.search([query, "silver necklace"], k=4)
    np.testing.assert_array_equal(ids[0], [PAD] * 4)
    np.testing.assert_array_equal(scores[0], [0.0] * 4)
    assert ids[1, 0] == 101  # the other query in the batch is unaffected


def test_all_queries_unknown(bm25):
    ids, scores = bm25.search(["", "zzzz"], k=3)
    assert ids.shape == (2, 3) and (ids == PAD).all() and (scores == 0).all()


def test_empty_batch(bm25):
    ids, scores = bm25.search([], k=3)
    assert ids.shape == scores.shape == (0, 3)


def test_unknown_words_do_not_change_scores(bm25):
    plain = bm25.search(["silver necklace"], k=5)
    noisy = bm25.search(["zzzz silver the necklace qqqq"], k=5)
    np.testing.assert_array_equal(plain[0], noisy[0])
    np.testing.assert_allclose(plain[1], noisy[1])


def test_k_larger_than_the_catalogue_pads(bm25):
    ids, scores = bm25.search(["jewelry"], k=8)
    assert ids.shape == (1, 8)
    assert set(ids[0, :3]) == {101, 205, 480}
    np.testing.assert_array_equal(ids[0, 3:], [PAD] * 5)
    np.testing.assert_array_equal(scores[0, 3:], [0.0] * 5)


def test_search_before_fit_raises():
    with pytest.raises(RuntimeError, match="fit"):
        BM25Retriever().search(["silver"], k=3)
    with pytest.raises(RuntimeError, match="fit"):
        BM25Retriever().n_matches(["silver"])


@pytest.mark.parametrize("k", [0, -3])
def test_non_positive_k_raises(bm25, k):
    with pytest.raises(ValueError, match="k must be positive"):
        bm25.search(["silver"], k=k)


def test_bare_string_query_raises(bm25):
    with pytest.raises(TypeError, match="list"):
        bm25.search("silver necklace", k=3)


@pytest.mark.parametrize("k1, b", [(-0.1, 0.75), (1.2, -0.01), (1.2, 1.01)])
def test_invalid_parameters_raise(k1, b):
    with pytest.raises(ValueError, match="k1"):
        BM25Retriever(k1=k1, b=b)


@pytest.mark.parametrize("k1, b", [(0.0, 0.0), (1.2, 1.0)])
def test_boundary_parameters_are_accepted(k1, b):
    assert BM25Retriever(k1=k1, b=b).k1 == k1


def test_empty_catalogue_cannot_be_indexed(listings):
    with pytest.raises(ValueError, match="empty"):
        BM25Retriever().fit(listings.iloc[:0])


def test_retrieve_maps_each_session_query(bm25):
    queries = ["silver necklace", "gold ring", "silver necklace", "zzzz", "leather wallet", "gold ring"]
    sessions = pd.DataFrame({"session_id": range(len(queries)), "user_id": 1, "query": queries})
    got = bm25.retrieve(sessions, k=3)
    assert got.shape == (len(queries), 3)
    for row, query in zip(got, queries, strict=True):
        np.testing.assert_array_equal(row, bm25.search([query], k=3)[0][0])
    np.testing.assert_array_equal(got[0], got[2])
    np.testing.assert_array_equal(got[3], [PAD] * 3)
    assert got[0, 0] == 101 and got[1, 0] == 205 and got[4, 0] == 37


def test_n_matches_counts_listings_sharing_a_word(bm25):
    got = bm25.n_matches(["silver", "jewelry", "silver wallet", "zzzz", "", "for the", "rings"])
    np.testing.assert_array_equal(got, [2, 3, 3, 0, 0, 0, 2])


# -- BM25 scores against an independent Lucene BM25 -------------------------------------------------------

WORDS = ("silver gold ring necklace leather wallet wooden bowl ceramic mug linen scarf "
         "vintage handmade boho candle").split()


def _random_listings(seed: int, n: int = 30) -> pd.DataFrame:
    rng = np.random.default_rng(seed)

    def words(lo, hi):
        return list(rng.choice(WORDS, size=rng.integers(lo, hi + 1)))

    return pd.DataFrame({
        "listing_id": rng.permutation(np.arange(1000, 1000 + 7 * n, 7)),
        "title": [" ".join(words(1, 5)).title() for _ in range(n)],
        "tags": [tuple(words(0, 3)) for _ in range(n)],
        "taxonomy": [".".join(words(1, 2)) for _ in range(n)],
    })


def _lucene_bm25(query_tokens, doc_tokens, k1, b):
    # Lucene >= 8 (and bm25s "lucene") drop the constant (k1 + 1) factor from the numerator of the
    # classic formula: it rescales every score alike and leaves the ranking unchanged.
    n_docs = len(doc_tokens)
    avgdl = sum(map(len, doc_tokens)) / n_docs
    scores = np.zeros(n_docs)
    for term in query_tokens:
        df = sum(term in doc for doc in doc_tokens)
        if df == 0:
            continue
        idf = math.log(1 + (n_docs - df + 0.5) / (df + 0.5))
        for j, doc in enumerate(doc_tokens):
            tf = doc.count(term)
            if tf:
                scores[j] += idf * tf / (tf + k1 * (1 - b + b * len(doc) / avgdl))
    return scores


QUERIES = ["silver ring", "handmade leather wallet", "vintage", "ceramic mug for the kitchen",
           "boho linen scarf candle", "gold necklace zzzz", "wooden bowl"]


@pytest.mark.parametrize("seed, k1, b", [(0, 1.2, 0.75), (1, 2.0, 0.3), (2, 0.9, 1.0), (3, 1.5, 0.0)])
@pytest.mark.parametrize("k", [5, 40])
def test_scores_match_a_reference_lucene_bm25(seed, k1, b, k):
    listings = _random_listings(seed)
    doc_tokens = [tokenize(doc) for doc in listing_documents(listings)]
    ids, scores = BM25Retriever(k1=k1, b=b).fit(listings).search(QUERIES, k=k)
    position = {lid: j for j, lid in enumerate(listings["listing_id"])}
    for query, row_ids, row_scores in zip(QUERIES, ids, scores, strict=True):
        tokens = tokenize(query)
        assert len(set(tokens)) == len(tokens)
        ref = _lucene_bm25(tokens, doc_tokens, k1, b)
        n_hit = min(k, int((ref > 0).sum()))
        assert n_hit > 0
        # listings beyond the match set are padding
        np.testing.assert_array_equal(row_ids[n_hit:], PAD)
        np.testing.assert_array_equal(row_scores[n_hit:], 0.0)
        returned = row_ids[:n_hit]
        assert len(set(returned)) == n_hit
        # each listing carries its own reference score, and together they are the top of the ranking
        np.testing.assert_allclose(row_scores[:n_hit], ref[[position[i] for i in returned]], rtol=1e-4)
        np.testing.assert_allclose(row_scores[:n_hit], np.sort(ref)[::-1][:n_hit], rtol=1e-4)


# -- popularity ------------------------------------------------------------------------------------------


def _impressions(rows):
    """rows: (listing_id, click, cart, purchase)."""
    frame = pd.DataFrame(rows, columns=["listing_id", "click", "cart", "purchase"])
    frame.insert(0, "session_id", np.arange(len(frame)) // 3)
    frame.insert(2, "position", np.arange(len(frame)) % 3)
    return frame.astype({"click": bool, "cart": bool, "purchase": bool})


def test_popularity_ranks_by_weighted_engagement():
    rows = ([(1, 0, 0, 1)]                 # one purchase alone: 10
            + [(2, 0, 1, 0)] * 3           # three carts: 9
            + [(3, 0, 1, 0)] * 2           # two carts: 6
            + [(4, 1, 0, 0)] * 5           # five clicks: 5
            + [(5, 1, 0, 0)] * 4           # four clicks: 4
            + [(6, 0, 1, 0)]               # one cart: 3
            + [(7, 0, 0, 0)] * 9)          # impressions only: never ranked
    ranking = PopularityRetriever().fit(_impressions(rows)).ranking
    np.testing.assert_array_equal(ranking, [1, 2, 3, 4, 5, 6])
    assert ranking.dtype == np.int64


def test_popularity_breaks_ties_by_listing_id():
    rows = [(30, 1, 1, 1), (10, 1, 1, 1), (20, 1, 0, 0), (40, 1, 1, 1), (15, 1, 0, 0)]
    ranking = PopularityRetriever().fit(_impressions(rows)).ranking
    np.testing.assert_array_equal(ranking, [10, 30, 40, 15, 20])
    again = PopularityRetriever().fit(_impressions(rows[::-1])).ranking
    np.testing.assert_array_equal(again, ranking)


def test_popularity_ties_across_interaction_types_are_exact():
    # three clicks weigh exactly one cart; ten clicks exactly one purchase: ties fall back to the id
    rows = [(5, 1, 0, 0)] * 3 + [(3, 0, 1, 0)] + [(9, 1, 0, 0)] * 10 + [(2, 0, 0, 1)]
    ranking = PopularityRetriever().fit(_impressions(rows)).ranking
    np.testing.assert_array_equal(ranking, [2, 9, 3, 5])


def test_popularity_tie_break_on_a_larger_catalogue():
    rng = np.random.default_rng(3)
    ids = rng.permutation(np.arange(500, 600))
    purchases = rng.integers(1, 4, size=ids.size)  # whole purchases: exact scores, many ties
    rows = [(lid, 1, 1, 1) for lid, n in zip(ids, purchases, strict=True) for _ in range(n)]
    ranking = PopularityRetriever().fit(_impressions(rows)).ranking
    expected = [lid for _, lid in sorted(zip(-purchases, ids, strict=True))]
    np.testing.assert_array_equal(ranking, expected)


def test_popularity_gives_every_session_the_same_padded_list():
    rows = [(8, 1, 1, 1), (3, 1, 0, 0), (3, 1, 0, 0), (5, 0, 0, 0)]
    model = PopularityRetriever().fit(_impressions(rows))
    sessions = pd.DataFrame({"session_id": [11, 12, 13], "query": ["silver ring", "", "bowl"]})
    got = model.retrieve(sessions, k=4)
    assert got.shape == (3, 4) and got.dtype == np.int64
    np.testing.assert_array_equal(got, [[8, 3, PAD, PAD]] * 3)
    np.testing.assert_array_equal(model.retrieve(sessions, k=1), [[8]] * 3)


def test_popularity_before_fit_returns_only_padding():
    got = PopularityRetriever().retrieve(pd.DataFrame({"session_id": [1, 2]}), k=3)
    np.testing.assert_array_equal(got, np.full((2, 3), PAD))
