"""Inputs, training and retrieval for the unified model of :mod:`retrieval_lib.towers`.

:class:`UnifiedFeatures` turns the observable marketplace plus the frozen artifacts of earlier
chapters (graph embeddings, the doc2query encoder and its tokenizer) into tensors for both towers;
:func:`fit_unified` trains any :class:`~retrieval_lib.towers.UnifiedConfig` with the shared trainer;
:class:`UnifiedRetriever` serves it to the evaluation code, one query vector per session (the
history and location differ per session even when the query text is the same).
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
import torch
from tokenizers import Tokenizer

from retrieval_lib.features import (
    NumericFeatures,
    UserHistory,
    listing_locations,
    user_histories,
    user_locations,
)
from retrieval_lib.graph import GraphEmbeddings
from retrieval_lib.knn import exact_top_k
from retrieval_lib.marketplace import ObservedMarketplace
from retrieval_lib.term import HashedTexts, engaged_pairs
from retrieval_lib.text import listing_documents
from retrieval_lib.towers import UnifiedConfig, UnifiedModel
from retrieval_lib.train import (
    TrainConfig,
    TrainHistory,
    accidental_hits,
    cached_training,
    in_batch_softmax_loss,
    train,
)
from retrieval_lib.transformer import ListingEncoder, TokenizedTexts, masked_mean
from retrieval_lib.transformer_tower import encode_in_batches, weights_digest

#: Bump when the model, its inputs or its training change, so cached models are retrained.
CODE_VERSION = "unified-2"


def _tensors(blocks: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)) for k, v in blocks.items()}


@dataclass
class UnifiedFeatures:
    """Everything both towers read, computed once per marketplace.

    Frozen blocks per listing: ``transformer`` (pooled pre-trained encoder), ``graph`` (node2vec vector
    plus in-graph flag), ``numeric`` and ``location``. Per query text: ``transformer`` (mean of the
    frozen token embeddings) and ``graph``; per user: ``location``. Histories cover every session plus
    each user's current history for serving; a history item's text is embedded by the same frozen token
    means (precomputed once: running the trainable term encoder over 16 items per request made a
    training step ten times slower).
    """

    observed: ObservedMarketplace
    tokenizer: Tokenizer
    encoder: ListingEncoder
    graph: GraphEmbeddings
    n_buckets: int
    listing_bags: HashedTexts
    listing_blocks: dict[str, torch.Tensor]
    user_location: torch.Tensor
    history: UserHistory
    history_vectors: torch.Tensor

    @classmethod
    def build(cls, observed: ObservedMarketplace, tokenizer: Tokenizer, encoder: ListingEncoder,
              graph: GraphEmbeddings, n_buckets: int = 2**18, max_history: int = 16) -> UnifiedFeatures:
        """Compute the listing blocks, user locations and histories."""
        encoder = encoder.eval().requires_grad_(False)
        docs = listing_documents(observed.listings)
        tokens = TokenizedTexts.of(tokenizer, docs, encoder.config.max_len)
        vectors, known = graph.listings(observed.listings["listing_id"].to_numpy())
        numeric = NumericFeatures().fit(observed).transform(observed)
        blocks = {"transformer": encode_in_batches(encoder.pooled, tokens).numpy(),
                  "graph": np.concatenate([vectors, known[:, None]], axis=1),
                  "numeric": numeric, "location": listing_locations(observed)}
        history = user_histories(observed, max_history, current=True)
        features = cls(observed, tokenizer, encoder, graph, n_buckets, HashedTexts.of(docs, n_buckets),
                       _tensors(blocks), torch.from_numpy(user_locations(observed)), history, torch.empty(0))
        features.history_vectors = features.token_means(history.texts)
        return features

    @property
    def dims(self) -> dict[str, int]:
        """Width of every frozen block (the same on both sides), and of a history item's text vector."""
        return {**{k: v.shape[1] for k, v in self.listing_blocks.items()}, "history": self.encoder.config.dim}

    def digest(self) -> str:
        """A short hash of the frozen inputs (identifies them in cache keys)."""
        h = hashlib.sha256(weights_digest(self.encoder).encode())
        h.update(self.tokenizer.to_str().encode())
        for block in self.listing_blocks.values():
            h.update(block.numpy().tobytes())
        h.update(str(self.n_buckets).encode())
        return h.hexdigest()[:16]

    def listings(self, rows: np.ndarray) -> tuple[tuple[torch.Tensor, torch.Tensor], dict[str, torch.Tensor]]:
        """Product-tower inputs of listing rows: term bags and frozen blocks."""
        rows = np.asarray(rows, dtype=np.int64)
        return self.listing_bags.select(rows), {k: v[rows] for k, v in self.listing_blocks.items()}

    def token_means(self, texts: list[str], batch_size: int = 4096) -> torch.Tensor:
        """Mean of the frozen transformer's token embeddings over each text (zeros for an empty text)."""
        tokens = TokenizedTexts.of(self.tokenizer, list(texts), self.encoder.config.max_len)
        out = [torch.zeros((0, self.encoder.config.dim))]
        with torch.no_grad():
            for start in range(0, len(tokens), batch_size):
                ids, pad = tokens.select(np.arange(start, min(start + batch_size, len(tokens))))
                out.append(masked_mean(self.encoder.tokens(ids), pad))
        return torch.cat(out)

    def query_blocks(self, texts: list[str]) -> dict[str, torch.Tensor]:
        """Frozen query blocks: mean frozen token embedding and graph vector plus flag (no location)."""
        vectors, known = self.graph.queries(list(texts))
        return {"transformer": self.token_means(texts),
                **_tensors({"graph": np.concatenate([vectors, known[:, None]], axis=1)})}

    def locations(self, user_ids: np.ndarray) -> torch.Tensor:
        """User location blocks; ``-1`` (anonymous) gives zeros. Unknown ids raise ``ValueError``."""
        user_ids = np.asarray(user_ids, dtype=np.int64)
        bad = (user_ids < -1) | (user_ids >= len(self.user_location))
        if bad.any():
            raise ValueError(f"unknown user id {user_ids[bad][0]}")
        out = torch.zeros((len(user_ids), self.user_location.shape[1]))
        known = user_ids >= 0
        out[torch.from_numpy(known)] = self.user_location[user_ids[known]]
        return out

    def histories(self, rows: np.ndarray) -> dict[str, torch.Tensor]:
        """History inputs of history rows (``-1`` = no history at all)."""
        rows = np.asarray(rows, dtype=np.int64)
        h = self.history.item.shape[1]
        item = np.where(rows[:, None] >= 0, self.history.item[rows.clip(0)], -1)
        kind = np.where(rows[:, None] >= 0, self.history.kind[rows.clip(0)], 0)
        listing = np.where(rows[:, None] >= 0, self.history.listing[rows.clip(0)], -1)
        vectors, known = self.graph.listings(listing.ravel())
        graph = np.concatenate([vectors, known[:, None]], axis=1).reshape(len(rows), h, -1)
        return {"items": self.history_vectors[torch.from_numpy(item.clip(0))], "kind": torch.from_numpy(kind),
                "pad": torch.from_numpy(item < 0), **_tensors({"graph": graph})}

    def session_rows(self, session_ids: np.ndarray) -> np.ndarray:
        """History rows of logged sessions."""
        return self.history.rows(np.asarray(session_ids, dtype=np.int64))

    def current_rows(self, user_ids: np.ndarray) -> np.ndarray:
        """History rows holding each user's history as of the end of the logs (``-1`` for anonymous)."""
        user_ids = np.asarray(user_ids, dtype=np.int64)
        rows = np.full(len(user_ids), -1, dtype=np.int64)
        known = user_ids >= 0
        rows[known] = self.history.rows(-1 - user_ids[known])
        return rows

    def queries(self, texts: list[str], user_ids: np.ndarray, history_rows: np.ndarray, config: UnifiedConfig,
                blocks: dict[str, torch.Tensor] | None = None
                ) -> tuple[tuple[torch.Tensor, torch.Tensor], dict[str, torch.Tensor], dict[str, torch.Tensor] | None]:
        """Query-tower inputs: term bags, frozen blocks (``blocks`` if precomputed) plus location, history."""
        bags = HashedTexts.of(list(texts), self.n_buckets).select(np.arange(len(texts)))
        blocks = dict(blocks if blocks is not None else self.query_blocks(texts))
        blocks["location"] = self.locations(user_ids)
        history = self.histories(history_rows) if config.history else None
        return bags, blocks, history


def _check_buckets(config: UnifiedConfig, features: UnifiedFeatures) -> None:
    if config.n_buckets != features.n_buckets:
        raise ValueError(f"the model hashes into {config.n_buckets} buckets, the features into {features.n_buckets}")


class UnifiedRetriever:
    """Exact search with a trained :class:`UnifiedModel`: one query vector per session."""

    def __init__(self, model: UnifiedModel, features: UnifiedFeatures, batch_size: int = 2048) -> None:
        _check_buckets(model.config, features)
        self.model = model.eval()
        self.features = features
        self.batch_size = batch_size
        self.listing_ids = features.observed.listings["listing_id"].to_numpy(dtype=np.int64)
        with torch.no_grad():
            self.listing_vectors = torch.cat([
                model.encode_listings(*features.listings(np.arange(s, min(s + batch_size, len(self.listing_ids)))))
                for s in range(0, len(self.listing_ids), batch_size)])

    def encode_sessions(self, sessions: pd.DataFrame) -> torch.Tensor:
        """Query vectors of logged sessions (``session_id``, ``user_id``, ``query``)."""
        rows = self.features.session_rows(sessions["session_id"].to_numpy())
        return self._encode(sessions["query"].astype(str).tolist(), sessions["user_id"].to_numpy(), rows)

    def _encode(self, texts: list[str], users: np.ndarray, rows: np.ndarray) -> torch.Tensor:
        out = []
        with torch.no_grad():
            for s in range(0, len(texts), self.batch_size):
                part = slice(s, s + self.batch_size)
                out.append(self.model.encode_queries(*self.features.queries(texts[part], users[part], rows[part],
                                                                            self.model.config)))
        return torch.cat(out) if out else torch.zeros((0, self.model.config.out_dim))

    def retrieve(self, sessions: pd.DataFrame, k: int) -> np.ndarray:
        """Retriever interface: top-``k`` listing ids per session."""
        return exact_top_k(self.encode_sessions(sessions), self.listing_vectors, k, item_ids=self.listing_ids)[0]


def session_recall(retriever: UnifiedRetriever, pairs: pd.DataFrame, k: int = 100) -> float:
    """Share of engaged (session, listing) pairs whose listing is in the session's top ``k`` (logs only)."""
    if len(pairs) == 0:
        return float("nan")
    ids = retriever.retrieve(pairs, k)
    return float((ids == pairs["listing_id"].to_numpy()[:, None]).any(axis=1).mean())


def request_keys(query_rows: np.ndarray, user_ids: np.ndarray) -> np.ndarray:
    """One integer per distinct (query, user) request, the key of the accidental-hit mask.

    A listing another buyer engaged with under the same query is a positive for *that* buyer, not for
    this one: masking it as an accidental hit (as the query-only models of chapters 4 and 5 must) would
    remove exactly the negatives that teach the model to tell two buyers of ``necklace`` apart.
    """
    pairs = np.stack([np.asarray(query_rows, dtype=np.int64), np.asarray(user_ids, dtype=np.int64)], axis=1)
    return np.unique(pairs, axis=0, return_inverse=True)[1].reshape(-1)


def fit_unified(features: UnifiedFeatures, config: UnifiedConfig, train_config: TrainConfig,
                max_valid_pairs: int = 3_000, progress: bool = True) -> tuple[UnifiedModel, TrainHistory]:
    """Train a unified model on training-window engagement (in-batch negatives, softmax loss).

    In-batch negatives are masked only when they share the listing or the whole request (query and
    user; see :func:`request_keys`). Early stopping watches recall@100 of validation-window engaged
    pairs in their own session context.
    """
    _check_buckets(config, features)
    observed = features.observed
    pairs = engaged_pairs(observed, "train")
    valid = engaged_pairs(observed, "valid")
    if len(valid) > max_valid_pairs:
        valid = valid.sample(n=max_valid_pairs, random_state=train_config.seed)
    query_text, query_row = np.unique(pairs["query"].to_numpy(dtype=object).astype(str), return_inverse=True)
    query_bags = HashedTexts.of(list(query_text), features.n_buckets)
    query_blocks = features.query_blocks(list(query_text))
    users = pairs["user_id"].to_numpy(dtype=np.int64)
    history_rows = features.session_rows(pairs["session_id"].to_numpy())
    listing_row = pairs["listing_id"].to_numpy(dtype=np.int64)
    request = request_keys(query_row, users)
    torch.manual_seed(train_config.seed)
    model = UnifiedModel(config, features.dims)

    def step(m: UnifiedModel, idx: np.ndarray) -> torch.Tensor:
        q_rows = query_row[idx]
        blocks = {k: v[q_rows] for k, v in query_blocks.items()}
        blocks["location"] = features.locations(users[idx])
        history = features.histories(history_rows[idx]) if config.history else None
        q = m.encode_queries(query_bags.select(q_rows), blocks, history)
        v = m.encode_listings(*features.listings(listing_row[idx]))
        return in_batch_softmax_loss(q, v, train_config.temperature, accidental_hits(request[idx], listing_row[idx]))

    def validate(m: UnifiedModel) -> float:
        return session_recall(UnifiedRetriever(m, features), valid, k=100)

    history = train(model, len(pairs), step, validate, train_config, progress=progress)
    return model, history


def unified_model(features: UnifiedFeatures, fingerprint: str, config: UnifiedConfig | None = None,
                  train_config: TrainConfig | None = None, progress: bool = True
                  ) -> tuple[UnifiedModel, TrainHistory]:
    """Return :func:`fit_unified` through the artifact cache."""
    config = config or UnifiedConfig()
    train_config = train_config or TrainConfig()
    parts = {"data": fingerprint, "features": features.digest(), "model": asdict(config),
             "train": asdict(train_config), "code": CODE_VERSION}
    return cached_training("unified", parts, lambda: fit_unified(features, config, train_config, progress=progress),
                           lambda: UnifiedModel(config, features.dims))
