"""The inputs of the unified model: every frozen block both towers read, computed once per world.

:class:`UnifiedFeatures` turns the observable marketplace plus the frozen artifacts of earlier
chapters (graph embeddings, the doc2query encoder and its tokenizer) into tensors for both towers.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch
from tokenizers import Tokenizer

from retrieval_lib.encoders.graph import GraphEmbeddings
from retrieval_lib.encoders.transformer import ListingEncoder, encode_in_batches, masked_mean
from retrieval_lib.features.history import UserHistory, user_histories
from retrieval_lib.features.location import listing_locations, user_locations
from retrieval_lib.features.numeric import NumericFeatures
from retrieval_lib.infra.cache import weights_digest
from retrieval_lib.marketplace import ObservedMarketplace
from retrieval_lib.text.hashing import HashedTexts
from retrieval_lib.text.wordpiece import TokenizedTexts
from retrieval_lib.text.words import listing_documents

if TYPE_CHECKING:  # the model module imports this one
    from retrieval_lib.models.unified import UnifiedConfig


#: Query batches whose text inputs :meth:`UnifiedFeatures.queries` keeps (a test window's 20,000
#: sessions are ten batches of 2,048; one batch's inputs take about 2 MB).
QUERY_MEMO = 32


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
    #: The text inputs of recent query batches (:meth:`queries`), by their texts: every model evaluated on
    #: the same sessions, and every epoch's validation, reads the same batches again.
    _query_memo: OrderedDict = field(default_factory=OrderedDict, init=False, repr=False, compare=False)
    _memo_lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False, compare=False)

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
        """A short hash of every input a model trained on these features reads (its cache key part).

        Covers the frozen encoder and tokenizer, every listing block, the graph's query vectors, user
        locations, the histories (their length limit included) and the history items' vectors.
        """
        h = hashlib.sha256(weights_digest(self.encoder).encode())
        h.update(self.tokenizer.to_str().encode())
        h.update(str(self.n_buckets).encode())
        for name, block in sorted(self.listing_blocks.items()):
            h.update(name.encode())
            h.update(block.numpy().tobytes())
        h.update(self.graph.query_vectors.tobytes())
        h.update("\n".join(sorted(self.graph.query_index)).encode())
        h.update(self.user_location.numpy().tobytes())
        for array in (self.history.session_ids, self.history.item, self.history.kind, self.history.listing):
            h.update(str(array.shape).encode())
            h.update(np.ascontiguousarray(array).tobytes())
        h.update("\n".join(self.history.texts).encode())
        h.update(self.history_vectors.numpy().tobytes())
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
        """Query-tower inputs: term bags, frozen blocks (``blocks`` if precomputed) plus location, history.

        The text inputs of the last :data:`QUERY_MEMO` batches are kept (the same texts give the same
        tensors; nothing downstream writes into them).
        """
        key = tuple(texts)
        with self._memo_lock:
            kept = self._query_memo.get(key)
            if kept is not None:
                self._query_memo.move_to_end(key)
        if kept is None:
            kept = (HashedTexts.of(list(texts), self.n_buckets).select(np.arange(len(texts))), {})
        bags, text_blocks = kept
        if blocks is None:
            if not text_blocks:
                text_blocks.update(self.query_blocks(texts))
            blocks = text_blocks
        with self._memo_lock:
            self._query_memo[key] = kept
            while len(self._query_memo) > QUERY_MEMO:
                self._query_memo.popitem(last=False)
        blocks = dict(blocks)
        blocks["location"] = self.locations(user_ids)
        history = self.histories(history_rows) if config.history else None
        return bags, blocks, history
