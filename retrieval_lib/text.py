"""Text normalisation, tokenisation and hashed n-gram features shared by every text model in the book.

One tokenizer for the lexical baseline and the learned models keeps comparisons fair: BM25 and
the term encoder see exactly the same words.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Iterable, Sequence
from functools import lru_cache

import numpy as np
import pandas as pd

#: A deliberately small stop list: words that carry no product meaning in a query or a title.
STOPWORDS: frozenset[str] = frozenset(
    "a an and the for of with in on to by at from or is are my your this that".split()
)

_TOKEN = re.compile(r"[a-z0-9]+")


def normalize(text: str) -> str:
    """Lower-case, strip accents and collapse white space."""
    if not isinstance(text, str):
        raise TypeError(f"expected a string, got {type(text).__name__}")
    text = unicodedata.normalize("NFKD", text)
    text = "".join(ch for ch in text if not unicodedata.combining(ch))
    return " ".join(text.lower().split())


def tokenize(text: str, drop_stopwords: bool = True) -> list[str]:
    """Split normalised text into alphanumeric tokens (``"T-Shirt for Mom"`` -> ``['t', 'shirt', 'mom']``)."""
    tokens = _TOKEN.findall(normalize(text))
    if drop_stopwords:
        tokens = [t for t in tokens if t not in STOPWORDS]
    return tokens


def tokenize_many(texts: Iterable[str], drop_stopwords: bool = True) -> list[list[str]]:
    """Tokenise a batch of texts."""
    return [tokenize(t, drop_stopwords) for t in texts]


def listing_documents(listings: pd.DataFrame) -> list[str]:
    """The searchable text of each listing: title, tags and taxonomy path, as one string."""
    missing = {"title", "tags", "taxonomy"} - set(listings.columns)
    if missing:
        raise ValueError(f"listings lack the text columns {sorted(missing)}")
    return [f"{title} | {' | '.join(tags)} | {taxonomy}"
            for title, tags, taxonomy in zip(listings["title"], listings["tags"], listings["taxonomy"],
                                             strict=True)]


def vocabulary(token_lists: Sequence[Sequence[str]]) -> set[str]:
    """All distinct tokens of a tokenised corpus."""
    return {t for tokens in token_lists for t in tokens}


def missing_words(query: str, document: str) -> list[str]:
    """Query tokens that do not occur in the document: the words a lexical matcher cannot use."""
    doc = set(tokenize(document))
    return [t for t in tokenize(query) if t not in doc]


def word_overlap(query: str, document: str) -> float:
    """Share of the query's tokens that occur in the document (``nan`` for a query with no tokens)."""
    tokens = tokenize(query)
    if not tokens:
        return float("nan")
    return 1.0 - len(missing_words(query, document)) / len(tokens)


# --- hashed n-gram features (chapter 4) ------------------------------------------------------------

#: Kinds of hashed feature: word unigrams, word bigrams, character trigrams.
FEATURE_KINDS: tuple[str, ...] = ("unigram", "bigram", "trigram")


def ngram_features(text: str, kinds: tuple[str, ...] = FEATURE_KINDS) -> list[str]:
    """Word unigrams, word bigrams and character trigrams of a text, each tagged with its kind.

    Character trigrams are taken over each token padded with ``#`` (``"ring"`` -> ``#ri, rin, ing, ng#``),
    so a misspelt word still shares most of its trigrams with the right one.
    """
    unknown = set(kinds) - set(FEATURE_KINDS)
    if unknown:
        raise ValueError(f"unknown feature kinds {sorted(unknown)}; choose from {FEATURE_KINDS}")
    tokens = tokenize(text)
    out: list[str] = []
    if "unigram" in kinds:
        out += [f"u:{t}" for t in tokens]
    if "bigram" in kinds:
        out += [f"b:{a}_{b}" for a, b in zip(tokens, tokens[1:], strict=False)]
    if "trigram" in kinds:
        for t in tokens:
            padded = f"#{t}#"
            out += [f"c:{padded[i:i + 3]}" for i in range(len(padded) - 2)]
    return out


@lru_cache(maxsize=1_000_000)
def hash_bucket(feature: str, n_buckets: int) -> int:
    """Stable bucket of a feature string: BLAKE2b, so it is the same in every process and Python run."""
    if n_buckets <= 0:
        raise ValueError(f"n_buckets must be positive, got {n_buckets}")
    digest = hashlib.blake2b(feature.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little") % n_buckets


def hash_texts(texts: Sequence[str], n_buckets: int, kinds: tuple[str, ...] = FEATURE_KINDS
               ) -> tuple[np.ndarray, np.ndarray]:
    """Hashed features of a batch in ``nn.EmbeddingBag`` layout: flat bucket ids and per-text offsets.

    A text without any feature (empty, or only stop words) gets an empty bag, which ``EmbeddingBag``
    turns into a zero vector.
    """
    if isinstance(texts, str):
        raise TypeError("hash_texts() takes a sequence of texts; wrap a single text in a list")
    ids: list[int] = []
    offsets = np.empty(len(texts), dtype=np.int64)
    for i, text in enumerate(texts):
        offsets[i] = len(ids)
        ids.extend(hash_bucket(f, n_buckets) for f in ngram_features(text, kinds))
    return np.asarray(ids, dtype=np.int64), offsets


def collision_rate(features: Iterable[str], n_buckets: int) -> float:
    """Share of distinct features that share their bucket with at least one other distinct feature."""
    distinct = sorted(set(features))
    if not distinct:
        return 0.0
    buckets = np.array([hash_bucket(f, n_buckets) for f in distinct])
    _, inverse, counts = np.unique(buckets, return_inverse=True, return_counts=True)
    return float((counts[inverse] > 1).mean())
