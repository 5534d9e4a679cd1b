"""doc2query pre-training: teach the listing transformer the words buyers use.

Before two-tower training, an encoder-decoder reads a listing's text and learns to *write the queries
that led to its purchases* [reported]; its encoder then initialises the listing tower's transformer.
The training pairs are the purchases of the marketplace's *archive* (an older, longer window that
production keeps) and of the training window; the tokenizer learns from the same text, and early
stopping watches the loss on the validation window's purchases. Two-tower training sees only the
recent training window.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tokenizers import Tokenizer

from retrieval_lib.encoders.transformer import Doc2Query, TransformerConfig
from retrieval_lib.infra.cache import cached
from retrieval_lib.marketplace import ObservedMarketplace
from retrieval_lib.text.wordpiece import TokenizedTexts, train_tokenizer
from retrieval_lib.text.words import listing_documents
from retrieval_lib.training.loop import TrainConfig, TrainHistory, cached_training, train

#: The book's listing transformer (chapters 5 and 6): one layer, width 64, sized for a laptop CPU.
ENCODER_CONFIG = TransformerConfig(vocab_size=8000, dim=64, heads=4, layers=1, ff_dim=128, max_len=48)
#: The book's pre-training schedule; the validation loss decides when to stop.
PRETRAIN_CONFIG = TrainConfig(epochs=15, batch_size=128, lr=3e-3, patience=2)


def purchase_pairs(observed: ObservedMarketplace, split: str = "train") -> pd.DataFrame:
    """``(query, listing_id)`` of every purchase in a window's logs: what doc2query learns to generate.

    ``split`` is a logged window (``"train"``, ``"valid"``, ``"test"``) or ``"archive"``, the older
    purchase logs before day 0.
    """
    if split == "archive":
        archive = observed.archive
        return archive.loc[archive["purchase"], ["query", "listing_id"]].reset_index(drop=True)
    logs = observed.logs(split)
    return logs.loc[logs["purchase"], ["query", "listing_id"]].reset_index(drop=True)


def pretraining_pairs(observed: ObservedMarketplace) -> pd.DataFrame:
    """doc2query's training pairs: the archive's purchases, then the training window's."""
    return pd.concat([purchase_pairs(observed, "archive"), purchase_pairs(observed, "train")], ignore_index=True)


def tokenizer_corpus(observed: ObservedMarketplace) -> list[str]:
    """The text a tokenizer may learn from.

    Listings created before the validation window, then the purchase queries of the archive and the
    queries of the training window.
    """
    known = observed.listings[observed.listings["created_day"] < observed.train_end]
    return (listing_documents(known) + purchase_pairs(observed, "archive")["query"].astype(str).tolist()
            + observed.split("train")["query"].astype(str).tolist())


def listing_tokenizer(observed: ObservedMarketplace, fingerprint: str, vocab_size: int = 8000) -> Tokenizer:
    """A WordPiece tokenizer trained on :func:`tokenizer_corpus`, through the artifact cache."""
    parts = {"data": fingerprint, "vocab_size": vocab_size}

    def save(tokenizer: Tokenizer, folder: Path) -> None:
        tokenizer.save(str(folder / "tokenizer.json"))

    def load(folder: Path) -> Tokenizer:
        tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        if tokenizer.get_vocab_size() > vocab_size:
            raise ValueError("tokenizer vocabulary larger than configured")
        return tokenizer

    return cached("tokenizer", parts, lambda: train_tokenizer(tokenizer_corpus(observed), vocab_size), save, load,
                  code=__name__)


@dataclass(frozen=True)
class Doc2QueryData:
    """Tokenized listings and (source listing row, target query) pairs of one window."""

    listings: TokenizedTexts
    listing_rows: np.ndarray
    queries: TokenizedTexts

    @classmethod
    def of(cls, tokenizer: Tokenizer, pairs: pd.DataFrame, listings: TokenizedTexts, max_len: int
           ) -> Doc2QueryData:
        """Tokenize ``(query, listing_id)`` pairs; ``listings`` holds the whole catalogue in ``listing_id`` order."""
        queries = TokenizedTexts.of(tokenizer, pairs["query"].astype(str).tolist(), max_len, bos_eos=True)
        return cls(listings, pairs["listing_id"].to_numpy(dtype=np.int64), queries)

    def __len__(self) -> int:
        return len(self.listing_rows)

    def loss(self, model: Doc2Query, idx: np.ndarray) -> torch.Tensor:
        """Mean next-token cross-entropy of the pairs ``idx``."""
        src, src_pad = self.listings.select(self.listing_rows[idx])
        tgt, tgt_pad = self.queries.select(idx)
        return model.loss(src, src_pad, tgt, tgt_pad)


def mean_loss(model: Doc2Query, data: Doc2QueryData, batch_size: int = 512) -> float:
    """Pair-weighted mean loss over a whole window (no gradient)."""
    total = 0.0
    with torch.no_grad():
        for start in range(0, len(data), batch_size):
            idx = np.arange(start, min(start + batch_size, len(data)))
            total += float(data.loss(model, idx)) * len(idx)
    return total / max(1, len(data))


def fit_doc2query(observed: ObservedMarketplace, tokenizer: Tokenizer, config: TransformerConfig,
                  train_config: TrainConfig = PRETRAIN_CONFIG, progress: bool = True
                  ) -> tuple[Doc2Query, TrainHistory]:
    """Train :class:`Doc2Query` on the archive's and the training window's purchases.

    Training stops on the validation window's purchase loss.

    The history's ``valid_score`` is the *negated* validation loss (the training loop maximises it).
    """
    if tokenizer.get_vocab_size() > config.vocab_size:
        raise ValueError(f"tokenizer has {tokenizer.get_vocab_size()} tokens, config.vocab_size is {config.vocab_size}")
    listings = TokenizedTexts.of(tokenizer, listing_documents(observed.listings), config.max_len)
    train_data = Doc2QueryData.of(tokenizer, pretraining_pairs(observed), listings, config.max_len)
    valid_data = Doc2QueryData.of(tokenizer, purchase_pairs(observed, "valid"), listings, config.max_len)
    torch.manual_seed(train_config.seed)
    model = Doc2Query(config)
    history = train(model, len(train_data), train_data.loss, lambda m: -mean_loss(m, valid_data), train_config,
                    progress=progress)
    return model, history


def doc2query_model(observed: ObservedMarketplace, fingerprint: str, tokenizer: Tokenizer,
                    config: TransformerConfig, train_config: TrainConfig = PRETRAIN_CONFIG,
                    progress: bool = True) -> tuple[Doc2Query, TrainHistory]:
    """Return :func:`fit_doc2query` through the artifact cache."""
    parts = {"data": fingerprint, "tokenizer": tokenizer.to_str(), "model": asdict(config),
             "train": asdict(train_config)}
    return cached_training("doc2query", parts,
                           lambda: fit_doc2query(observed, tokenizer, config, train_config, progress),
                           lambda: Doc2Query(config), code=__name__)


def generate_queries(model: Doc2Query, tokenizer: Tokenizer, texts: list[str], max_len: int = 12, top_k: int = 1,
                     seed: int = 0) -> list[str]:
    """doc2query output for listing texts, decoded to strings (greedy, or top-``k`` sampling with ``seed``)."""
    src, src_pad = TokenizedTexts.of(tokenizer, texts, model.encoder.config.max_len).select(np.arange(len(texts)))
    ids = model.generate(src, src_pad, max_len, top_k, torch.Generator().manual_seed(seed))
    return [tokenizer.decode(row) for row in ids]
