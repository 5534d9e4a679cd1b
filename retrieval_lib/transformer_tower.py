"""A transformer-only two-tower retriever: heavy listing tower offline, light query tower online.

The listing tower runs the :class:`~retrieval_lib.transformer.ListingEncoder` over the listing's text
and mean-pools it; the query tower only averages the *same* token embeddings over the query's word
pieces (no attention), because it runs on every request. Each tower has its own projection and
L2-normalises, so scores are cosines. The encoder can start from scratch or from doc2query
pre-training (:mod:`retrieval_lib.pretraining`), which is the comparison chapter 5 makes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import asdict

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer
from torch import nn

from retrieval_lib.marketplace import ObservedMarketplace
from retrieval_lib.serving import VectorRetriever, logged_recall
from retrieval_lib.term import engaged_pairs
from retrieval_lib.text import listing_documents
from retrieval_lib.train import (
    TrainConfig,
    TrainHistory,
    accidental_hits,
    cached_training,
    in_batch_softmax_loss,
    train,
)
from retrieval_lib.transformer import Doc2Query, ListingEncoder, TokenizedTexts, TransformerConfig, masked_mean

#: Bump when the model or training code changes, so cached models are retrained.
CODE_VERSION = "transformer-tower-1"


class TransformerTwoTower(nn.Module):
    """Listing tower = transformer + mean pooling; query tower = mean of the shared token embeddings."""

    def __init__(self, config: TransformerConfig | None = None, out_dim: int = 64) -> None:
        super().__init__()
        if out_dim <= 0:
            raise ValueError(f"out_dim must be positive, got {out_dim}")
        self.encoder = ListingEncoder(config)
        dim = self.encoder.config.dim
        self.query_proj = nn.Linear(dim, out_dim)
        self.listing_proj = nn.Linear(dim, out_dim)

    @property
    def config(self) -> TransformerConfig:
        """The encoder's configuration."""
        return self.encoder.config

    def init_from(self, pretrained: Doc2Query) -> TransformerTwoTower:
        """Copy a doc2query model's encoder (token embeddings included) into this model's encoder."""
        if pretrained.encoder.config != self.config:
            raise ValueError("the pre-trained encoder's config differs from this model's")
        self.encoder.load_state_dict(pretrained.encoder.state_dict())
        return self

    def encode_queries(self, ids: torch.Tensor, pad_mask: torch.Tensor) -> torch.Tensor:
        """Unit-norm query vectors; an empty query gets the projection's bias only."""
        return F.normalize(self.query_proj(masked_mean(self.encoder.tokens(ids), pad_mask)), dim=-1)

    def encode_listings(self, ids: torch.Tensor, pad_mask: torch.Tensor) -> torch.Tensor:
        """Unit-norm listing vectors."""
        return F.normalize(self.listing_proj(self.encoder.pooled(ids, pad_mask)), dim=-1)


def encode_in_batches(encode: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], texts: TokenizedTexts,
                      batch_size: int = 1024) -> torch.Tensor:
    """Run a tower over every row of ``texts`` without gradients, ``batch_size`` rows at a time."""
    with torch.no_grad():
        return torch.cat([encode(*texts.select(np.arange(s, min(s + batch_size, len(texts)))))
                          for s in range(0, len(texts), batch_size)])


class TransformerRetriever(VectorRetriever):
    """Serve a :class:`TransformerTwoTower`: the catalogue through the heavy tower once, queries on demand."""

    def __init__(self, model: TransformerTwoTower, tokenizer: Tokenizer, listings: pd.DataFrame,
                 tokens: TokenizedTexts | None = None) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.listing_ids = listings["listing_id"].to_numpy(dtype=np.int64)
        if tokens is None:
            tokens = TokenizedTexts.of(tokenizer, listing_documents(listings), model.config.max_len)
        elif len(tokens) != len(listings):
            raise ValueError(f"{len(tokens)} tokenized texts for {len(listings)} listings")
        self.listing_vectors = encode_in_batches(model.encode_listings, tokens)

    def encode_queries(self, queries: list[str]) -> torch.Tensor:
        """Unit-norm vectors of query texts (the light tower: one embedding lookup and a mean)."""
        tokens = TokenizedTexts.of(self.tokenizer, list(queries), self.model.config.max_len)
        return encode_in_batches(self.model.encode_queries, tokens, batch_size=4096)


def fit_transformer_two_tower(observed: ObservedMarketplace, tokenizer: Tokenizer, config: TransformerConfig,
                              train_config: TrainConfig, pretrained: Doc2Query | None = None,
                              max_valid_pairs: int = 3_000, progress: bool = True
                              ) -> tuple[TransformerTwoTower, TrainHistory]:
    """Train on training-window engagement with in-batch negatives, from scratch or from ``pretrained``.

    The same data, seed and schedule either way, so the two runs differ only in the initialisation.
    Early stopping watches recall@100 of validation-window engaged pairs (observable logs only).
    """
    pairs = engaged_pairs(observed, "train")
    valid = engaged_pairs(observed, "valid")
    if len(valid) > max_valid_pairs:
        valid = valid.sample(n=max_valid_pairs, random_state=train_config.seed)
    listings = TokenizedTexts.of(tokenizer, listing_documents(observed.listings), config.max_len)
    query_text, query_row = np.unique(pairs["query"].to_numpy(dtype=object).astype(str), return_inverse=True)
    queries = TokenizedTexts.of(tokenizer, list(query_text), config.max_len)
    listing_row = pairs["listing_id"].to_numpy(dtype=np.int64)
    torch.manual_seed(train_config.seed)
    model = TransformerTwoTower(config)
    if pretrained is not None:
        model.init_from(pretrained)

    def step(m: TransformerTwoTower, idx: np.ndarray) -> torch.Tensor:
        q = m.encode_queries(*queries.select(query_row[idx]))
        v = m.encode_listings(*listings.select(listing_row[idx]))
        return in_batch_softmax_loss(q, v, train_config.temperature, accidental_hits(query_row[idx], listing_row[idx]))

    def validate(m: TransformerTwoTower) -> float:
        return logged_recall(TransformerRetriever(m, tokenizer, observed.listings, listings), valid, k=100)

    history = train(model, len(pairs), step, validate, train_config, progress=progress)
    return model, history


def weights_digest(model: nn.Module) -> str:
    """A short hash of a model's weights (identifies a pre-trained initialisation in cache keys)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def transformer_two_tower(observed: ObservedMarketplace, fingerprint: str, tokenizer: Tokenizer,
                          config: TransformerConfig, train_config: TrainConfig,
                          pretrained: Doc2Query | None = None, progress: bool = True
                          ) -> tuple[TransformerTwoTower, TrainHistory]:
    """Return :func:`fit_transformer_two_tower` through the artifact cache."""
    parts = {"data": fingerprint, "tokenizer": tokenizer.to_str(), "model": asdict(config),
             "train": asdict(train_config), "init": None if pretrained is None else weights_digest(pretrained),
             "code": CODE_VERSION}
    return cached_training(
        "transformer", parts,
        lambda: fit_transformer_two_tower(observed, tokenizer, config, train_config, pretrained, progress=progress),
        lambda: TransformerTwoTower(config))

