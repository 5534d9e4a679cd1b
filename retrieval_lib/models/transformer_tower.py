"""A transformer-only two-tower retriever: heavy listing tower offline, light query tower online.

The listing tower runs the :class:`~retrieval_lib.encoders.transformer.ListingEncoder` over the listing's text
and mean-pools it; the query tower only averages the *same* token embeddings over the query's word
pieces (no attention), because it runs on every request. Each tower has its own projection and
L2-normalises, so scores are cosines. The encoder can start from scratch or from doc2query
pre-training (:mod:`retrieval_lib.training.pretraining`), which is the comparison chapter 5 makes.
"""

from __future__ import annotations

from dataclasses import asdict

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer
from torch import nn

from retrieval_lib.encoders.transformer import (
    Doc2Query,
    ListingEncoder,
    TransformerConfig,
    encode_in_batches,
    masked_mean,
)
from retrieval_lib.evaluation.logged import logged_recall
from retrieval_lib.infra.cache import weights_digest
from retrieval_lib.marketplace import ObservedMarketplace
from retrieval_lib.serving.exact import VectorRetriever
from retrieval_lib.text.wordpiece import TokenizedTexts
from retrieval_lib.text.words import listing_documents
from retrieval_lib.training.loop import TrainConfig, TrainHistory, cached_training
from retrieval_lib.training.losses import Loss, SoftmaxLoss
from retrieval_lib.training.negatives import InBatchNegatives, NegativeSource
from retrieval_lib.training.pairs import TrainingPairs, engaged_pairs, validation_pairs
from retrieval_lib.training.trainer import fit_two_tower, training_parts


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
                              loss: Loss | None = None, negatives: NegativeSource | None = None,
                              progress: bool = True) -> tuple[TransformerTwoTower, TrainHistory]:
    """Train on training-window engagement (default: in-batch softmax), from scratch or from ``pretrained``.

    The same data, seed and schedule either way, so the two runs differ only in the initialisation.
    Early stopping watches recall@100 of a fixed sample of validation-window engaged pairs.
    """
    pairs = TrainingPairs.of(engaged_pairs(observed, "train"))
    valid = validation_pairs(observed)
    listings = TokenizedTexts.of(tokenizer, listing_documents(observed.listings), config.max_len)
    queries = TokenizedTexts.of(tokenizer, pairs.query_text, config.max_len)

    def build() -> TransformerTwoTower:
        model = TransformerTwoTower(config)
        return model.init_from(pretrained) if pretrained is not None else model

    return fit_two_tower(
        build, pairs,
        encode_queries=lambda m, rows: m.encode_queries(*queries.select(pairs.query_row[rows])),
        encode_listings=lambda m, ids: m.encode_listings(*listings.select(ids)),
        validate=lambda m: logged_recall(TransformerRetriever(m, tokenizer, observed.listings, listings), valid),
        config=train_config, loss=loss or SoftmaxLoss(), negatives=negatives or InBatchNegatives("query"),
        progress=progress)


def transformer_two_tower(observed: ObservedMarketplace, fingerprint: str, tokenizer: Tokenizer,
                          config: TransformerConfig, train_config: TrainConfig,
                          pretrained: Doc2Query | None = None, loss: Loss | None = None,
                          negatives: NegativeSource | None = None, progress: bool = True
                          ) -> tuple[TransformerTwoTower, TrainHistory]:
    """Return :func:`fit_transformer_two_tower` through the artifact cache."""
    loss, negatives = loss or SoftmaxLoss(), negatives or InBatchNegatives("query")
    parts = {"data": fingerprint, "tokenizer": tokenizer.to_str(), "model": asdict(config),
             "init": None if pretrained is None else weights_digest(pretrained),
             **training_parts(train_config, loss, negatives)}
    return cached_training(
        "transformer", parts,
        lambda: fit_transformer_two_tower(observed, tokenizer, config, train_config, pretrained, loss, negatives,
                                          progress),
        lambda: TransformerTwoTower(config), code=__name__)
