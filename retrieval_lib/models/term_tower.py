"""A first neural retriever (chapter 4): a two-tower model over the shared term encoder.

A two-tower model trained on engagement learns to pull buyer words towards the listings buyers
chose; both towers read hashed n-grams through one :class:`~retrieval_lib.encoders.term.TermEncoder`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from retrieval_lib.encoders.term import TermEncoder
from retrieval_lib.evaluation.logged import logged_recall
from retrieval_lib.infra.validation import positive_ints
from retrieval_lib.marketplace import ObservedMarketplace
from retrieval_lib.serving.exact import VectorRetriever
from retrieval_lib.text.hashing import FEATURE_KINDS, HashedTexts
from retrieval_lib.text.words import listing_documents
from retrieval_lib.training.loop import TrainConfig, TrainHistory, cached_training
from retrieval_lib.training.losses import Loss, SoftmaxLoss
from retrieval_lib.training.negatives import InBatchNegatives, NegativeSource
from retrieval_lib.training.pairs import TrainingPairs, engaged_pairs, validation_pairs
from retrieval_lib.training.trainer import fit_two_tower, training_parts


@dataclass(frozen=True)
class TermConfig:
    """Size of the term two-tower model."""

    n_buckets: int = 2**18
    dim: int = 64
    out_dim: int = 64
    kinds: tuple[str, ...] = FEATURE_KINDS

    def __post_init__(self) -> None:
        positive_ints(self, ("n_buckets", "dim", "out_dim"))
        if not self.kinds or set(self.kinds) - set(FEATURE_KINDS):
            raise ValueError(f"TermConfig.kinds must be a non-empty subset of {FEATURE_KINDS}")


#: Chapter 4's training schedule for the term two-tower (chapter 5 compares against the same model).
TERM_TRAIN_CONFIG = TrainConfig(epochs=20, batch_size=256, lr=3e-3, patience=3)


class TermTwoTower(nn.Module):
    """Query tower and listing tower over one shared :class:`TermEncoder`, each with its own projection.

    Both towers L2-normalise their output, so the score of a (query, listing) pair is a cosine.
    """

    def __init__(self, config: TermConfig | None = None) -> None:
        super().__init__()
        self.config = config or TermConfig()
        self.encoder = TermEncoder(self.config.n_buckets, self.config.dim)
        self.query_proj = nn.Linear(self.config.dim, self.config.out_dim)
        self.listing_proj = nn.Linear(self.config.dim, self.config.out_dim)

    def encode_queries(self, ids: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        """Unit-norm query vectors."""
        return F.normalize(self.query_proj(self.encoder(ids, offsets)), dim=-1)

    def encode_listings(self, ids: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        """Unit-norm listing vectors."""
        return F.normalize(self.listing_proj(self.encoder(ids, offsets)), dim=-1)


class TermRetriever(VectorRetriever):
    """Serve a trained :class:`TermTwoTower`: encode the catalogue once, then exact inner-product search."""

    def __init__(self, model: TermTwoTower, listings: pd.DataFrame, bags: HashedTexts | None = None) -> None:
        self.model = model.eval()
        self.listing_ids = listings["listing_id"].to_numpy(dtype=np.int64)
        if bags is None:
            bags = HashedTexts.of(listing_documents(listings), model.config.n_buckets, model.config.kinds)
        elif len(bags) != len(listings):
            raise ValueError(f"{len(bags)} hashed bags for {len(listings)} listings")
        with torch.no_grad():
            self.listing_vectors = model.encode_listings(*bags.select(np.arange(len(bags))))

    def encode_queries(self, queries: list[str]) -> torch.Tensor:
        """Unit-norm vectors of query texts (an empty or unknown query gets the projection's bias only)."""
        bags = HashedTexts.of(list(queries), self.model.config.n_buckets, self.model.config.kinds)
        with torch.no_grad():
            return self.model.encode_queries(*bags.select(np.arange(len(bags))))


def fit_term_model(observed: ObservedMarketplace, config: TermConfig | None = None,
                   train_config: TrainConfig | None = None, loss: Loss | None = None,
                   negatives: NegativeSource | None = None, progress: bool = True
                   ) -> tuple[TermTwoTower, TrainHistory]:
    """Train a term two-tower model on training-window engagement (default: in-batch softmax).

    By default in-batch negatives with the same listing or query are masked as accidental hits; early
    stopping watches recall@100 of a fixed sample of validation-window engaged pairs (observable logs).
    """
    config = config or TermConfig()
    pairs = TrainingPairs.of(engaged_pairs(observed, "train"))
    valid = validation_pairs(observed)
    listings = HashedTexts.of(listing_documents(observed.listings), config.n_buckets, config.kinds)
    queries = HashedTexts.of(pairs.query_text, config.n_buckets, config.kinds)
    return fit_two_tower(
        lambda: TermTwoTower(config), pairs,
        encode_queries=lambda m, rows: m.encode_queries(*queries.select(pairs.query_row[rows])),
        encode_listings=lambda m, ids: m.encode_listings(*listings.select(ids)),
        validate=lambda m: logged_recall(TermRetriever(m, observed.listings, listings), valid),
        config=train_config or TrainConfig(), loss=loss or SoftmaxLoss(),
        negatives=negatives or InBatchNegatives("query"), progress=progress)


def term_model(observed: ObservedMarketplace, fingerprint: str, config: TermConfig | None = None,
               train_config: TrainConfig | None = None, loss: Loss | None = None,
               negatives: NegativeSource | None = None, progress: bool = True
               ) -> tuple[TermTwoTower, TrainHistory]:
    """Return :func:`fit_term_model` through the artifact cache."""
    config, train_config = config or TermConfig(), train_config or TrainConfig()
    loss, negatives = loss or SoftmaxLoss(), negatives or InBatchNegatives("query")
    parts = {"data": fingerprint, "model": asdict(config), **training_parts(train_config, loss, negatives)}
    return cached_training("term", parts,
                           lambda: fit_term_model(observed, config, train_config, loss, negatives, progress),
                           lambda: TermTwoTower(config), code=__name__)
