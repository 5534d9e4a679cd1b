"""Term embeddings: hashed n-grams pooled by ``nn.EmbeddingBag``, and a first neural retriever.

The term encoder is shared by both towers (the paper's term-based embeddings [reported]): the query
and the listing text are hashed into the same buckets, so a word means the same on both sides. A
two-tower model trained on engagement learns to pull buyer words towards the listings buyers chose.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from retrieval_lib.marketplace import ObservedMarketplace
from retrieval_lib.serving import VectorRetriever, logged_recall
from retrieval_lib.text import FEATURE_KINDS, hash_texts, listing_documents
from retrieval_lib.train import (
    TrainConfig,
    TrainHistory,
    accidental_hits,
    cached_training,
    in_batch_softmax_loss,
    train,
)
from retrieval_lib.validation import positive_ints

#: Bump when the model or training code changes, so cached models are retrained.
CODE_VERSION = "term-1"


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


def engaged_pairs(observed: ObservedMarketplace, split: str = "train") -> pd.DataFrame:
    """``session_id, user_id, query, listing_id`` of every engaged (clicked, carted or bought) impression.

    Query-only models read ``query`` and ``listing_id``; personalized ones also need the session's context.
    """
    logs = observed.logs(split)
    engaged = logs[logs["click"] | logs["cart"] | logs["purchase"]]
    return engaged[["session_id", "user_id", "query", "listing_id"]].reset_index(drop=True)


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
                   train_config: TrainConfig | None = None, max_valid_pairs: int = 3_000,
                   progress: bool = True) -> tuple[TermTwoTower, TrainHistory]:
    """Train a term two-tower model on training-window engagement with in-batch negatives.

    Accidental hits (the same listing or query twice in a batch) are masked; early stopping watches
    recall@100 of validation-window engaged pairs (observable logs only).
    """
    config = config or TermConfig()
    train_config = train_config or TrainConfig()
    pairs = engaged_pairs(observed, "train")
    valid = engaged_pairs(observed, "valid")
    if len(valid) > max_valid_pairs:
        valid = valid.sample(n=max_valid_pairs, random_state=train_config.seed)
    listings = HashedTexts.of(listing_documents(observed.listings), config.n_buckets, config.kinds)
    query_text, query_row = np.unique(pairs["query"].to_numpy(dtype=object).astype(str), return_inverse=True)
    queries = HashedTexts.of(list(query_text), config.n_buckets, config.kinds)
    listing_row = pairs["listing_id"].to_numpy(dtype=np.int64)
    torch.manual_seed(train_config.seed)
    model = TermTwoTower(config)

    def step(m: TermTwoTower, idx: np.ndarray) -> torch.Tensor:
        q = m.encode_queries(*queries.select(query_row[idx]))
        v = m.encode_listings(*listings.select(listing_row[idx]))
        return in_batch_softmax_loss(q, v, train_config.temperature, accidental_hits(query_row[idx], listing_row[idx]))

    def validate(m: TermTwoTower) -> float:
        return logged_recall(TermRetriever(m, observed.listings, listings), valid, k=100)

    history = train(model, len(pairs), step, validate, train_config, progress=progress)
    return model, history


def term_model(observed: ObservedMarketplace, fingerprint: str, config: TermConfig | None = None,
               train_config: TrainConfig | None = None, progress: bool = True) -> tuple[TermTwoTower, TrainHistory]:
    """Return :func:`fit_term_model` through the artifact cache."""
    config = config or TermConfig()
    train_config = train_config or TrainConfig()
    parts = {"data": fingerprint, "model": asdict(config), "train": asdict(train_config), "code": CODE_VERSION}
    return cached_training("term", parts, lambda: fit_term_model(observed, config, train_config, progress=progress),
                           lambda: TermTwoTower(config))
