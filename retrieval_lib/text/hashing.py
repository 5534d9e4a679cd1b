"""Hashed n-gram features (chapter 4): word unigrams, bigrams and character trigrams in stable buckets.

The term encoder reads a text as a bag of hashed features, so any word, even a misspelt or unseen
one, maps to buckets that training has seen.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from retrieval_lib.text.words import tokenize

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


@dataclass(frozen=True)
class HashedTexts:
    """Hashed n-gram bags of many texts in ``EmbeddingBag`` layout, with fast row selection."""

    ids: np.ndarray
    offsets: np.ndarray

    @classmethod
    def of(cls, texts: list[str], n_buckets: int, kinds: tuple[str, ...] = FEATURE_KINDS) -> HashedTexts:
        """Hash every text once."""
        ids, offsets = hash_texts(texts, n_buckets, kinds)
        return cls(ids, offsets)

    def __len__(self) -> int:
        return len(self.offsets)

    def select(self, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """The bags of ``rows`` as ``(ids, offsets)`` tensors for ``EmbeddingBag``."""
        rows = np.asarray(rows, dtype=np.int64)
        ends = np.append(self.offsets[1:], len(self.ids))
        starts, lengths = self.offsets[rows], ends[rows] - self.offsets[rows]
        new_offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        gather = np.repeat(starts - new_offsets, lengths) + np.arange(lengths.sum())
        return torch.from_numpy(self.ids[gather]), torch.from_numpy(new_offsets)
