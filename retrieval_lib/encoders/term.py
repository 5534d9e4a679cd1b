"""The term encoder: the mean of a text's hashed n-gram embeddings (``nn.EmbeddingBag``).

It is shared by both towers (the paper's term-based embeddings [reported]): the query and the
listing text are hashed into the same buckets, so a word means the same on both sides.
"""

from __future__ import annotations

import torch
from torch import nn


class TermEncoder(nn.Module):
    """Mean of the embeddings of a text's hashed unigrams, bigrams and character trigrams."""

    def __init__(self, n_buckets: int = 2**18, dim: int = 64) -> None:
        super().__init__()
        if n_buckets <= 0 or dim <= 0:
            raise ValueError(f"n_buckets and dim must be positive, got {n_buckets}, {dim}")
        self.bag = nn.EmbeddingBag(n_buckets, dim, mode="mean", sparse=True)
        nn.init.normal_(self.bag.weight, std=0.1)

    def forward(self, ids: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        """``(n_texts, dim)`` pooled vectors; a text with no feature gets zeros."""
        return self.bag(ids, offsets)
