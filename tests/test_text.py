import math

import pandas as pd
import pytest

from retrieval_lib.text.words import (
    STOPWORDS,
    listing_documents,
    missing_words,
    new_word_shares,
    new_words,
    normalize,
    tokenize,
    tokenize_many,
    vocabulary,
    word_overlap,
)


@pytest.mark.parametrize("text, expected", [
    ("Silver NECKLACE", "silver necklace"),
    ("Café Crème Brûlée", "cafe creme brulee"),
    ("  many \t spaces\n\nhere  ", "many spaces here"),
    ("Ångström Ñandú", "angstrom nandu"),
    ("", ""),
])
def test_normalize_lowercases_strips_accents_and_collapses_space(text, expected):
    assert normalize(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("T-Shirt for Mom!", ["t", "shirt", "mom"]),
    ("Hand-made, 14k GOLD ring.", ["hand", "made", "14k", "gold", "ring"]),
    ("Crème brûlée set", ["creme", "brulee", "set"]),
    ("the and of", []),
    ("   ", []),
    ("", []),
])
def test_tokenize_splits_on_punctuation_and_drops_stopwords(text, expected):
    assert tokenize(text) == expected


def test_tokenize_can_keep_stopwords():
    assert tokenize("T-Shirt for Mom!", drop_stopwords=False) == ["t", "shirt", "for", "mom"]
    assert tokenize("the and of", drop_stopwords=False) == ["the", "and", "of"]


def test_stopwords_are_lower_case_tokens():
    assert "for" in STOPWORDS and "the" in STOPWORDS
    assert all(tokenize(w, drop_stopwords=False) == [w] for w in STOPWORDS)


@pytest.mark.parametrize("bad", [None, 3, 2.5, b"bytes", ["a", "b"]])
def test_non_strings_raise_type_error(bad):
    with pytest.raises(TypeError, match="expected a string"):
        normalize(bad)
    with pytest.raises(TypeError):
        tokenize(bad)


def test_tokenize_many_and_vocabulary():
    batch = tokenize_many(["Red hat", "a red scarf", ""])
    assert batch == [["red", "hat"], ["red", "scarf"], []]
    assert tokenize_many(["a red scarf"], drop_stopwords=False) == [["a", "red", "scarf"]]
    assert vocabulary(batch) == {"red", "hat", "scarf"}
    assert vocabulary([]) == set()


@pytest.fixture
def listings():
    return pd.DataFrame({
        "listing_id": [1, 2],
        "title": ["Silver necklace", "Leather wallet"],
        "tags": [("jewelry", "gift for her"), ()],
        "taxonomy": ["jewelry.necklaces", "bags.wallets"],
    })


def test_listing_documents_joins_title_tags_and_taxonomy(listings):
    docs = listing_documents(listings)
    assert docs == [
        "Silver necklace | jewelry | gift for her | jewelry.necklaces",
        "Leather wallet |  | bags.wallets",
    ]
    assert tokenize(docs[0]) == ["silver", "necklace", "jewelry", "gift", "her", "jewelry", "necklaces"]


@pytest.mark.parametrize("drop", [["title"], ["tags"], ["taxonomy"], ["title", "taxonomy"]])
def test_listing_documents_requires_text_columns(listings, drop):
    with pytest.raises(ValueError, match="lack the text columns") as err:
        listing_documents(listings.drop(columns=drop))
    assert str(sorted(drop)) in str(err.value)


@pytest.mark.parametrize("query, document, missing", [
    ("silver necklace for mom", "Silver ring | jewelry", ["necklace", "mom"]),
    ("Silver RING", "silver ring", []),
    ("red red hat", "a hat", ["red", "red"]),
    ("tshirt", "T-Shirt", ["tshirt"]),
    ("for the", "anything", []),
    ("", "anything", []),
])
def test_missing_words(query, document, missing):
    assert missing_words(query, document) == missing


@pytest.mark.parametrize("query, document, overlap", [
    ("silver necklace for mom", "Silver ring | jewelry", 1 / 3),
    ("silver ring", "Ring, silver!", 1.0),
    ("wooden bowl", "ceramic mug", 0.0),
    ("red red hat", "a hat", 1 / 3),
    ("Crème", "creme brulee", 1.0),
])
def test_word_overlap(query, document, overlap):
    assert word_overlap(query, document) == pytest.approx(overlap)


@pytest.mark.parametrize("query", ["", "   ", "for the", "!!!"])
def test_word_overlap_of_a_query_without_tokens_is_nan(query):
    assert math.isnan(word_overlap(query, "silver ring"))


def test_new_words_and_their_shares_by_hand():
    doc = "Silver Necklace | boho | Jewelry > Necklaces"
    assert new_words("boho silver choker for mom", doc) == ["choker", "for", "mom"]
    share, with_new = new_word_shares(["boho silver choker for mom", "silver necklace"], [doc, doc])
    assert share == pytest.approx(3 / 7) and with_new == pytest.approx(0.5)
    with pytest.raises(ValueError):
        new_word_shares(["a"], [])
