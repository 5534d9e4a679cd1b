"""A small transformer for listing text, a tokenizer trained on our own corpus, and a doc2query model.

The paper's product tower runs a T5-small encoder over the listing; before two-tower training a small
encoder-decoder learns to *generate the queries that led to purchases* of a listing, and its encoder
then initialises the tower's transformer [reported]. This module provides the pieces, sized for a CPU:
a WordPiece tokenizer (``tokenizers``, trained offline on the training window's text only), a
:class:`ListingEncoder` built on ``nn.TransformerEncoder``, and :class:`Doc2Query` with greedy decoding.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from torch import nn

from retrieval_lib.validation import positive_ints

PAD_TOKEN, UNK_TOKEN, BOS_TOKEN, EOS_TOKEN = "[PAD]", "[UNK]", "[BOS]", "[EOS]"
SPECIAL_TOKENS = (PAD_TOKEN, UNK_TOKEN, BOS_TOKEN, EOS_TOKEN)
PAD_ID, UNK_ID, BOS_ID, EOS_ID = range(4)


def train_tokenizer(texts: Iterable[str], vocab_size: int = 4000) -> Tokenizer:
    """Train a lower-casing WordPiece tokenizer on ``texts`` (no download; special tokens get ids 0-3)."""
    if vocab_size <= len(SPECIAL_TOKENS):
        raise ValueError(f"vocab_size must exceed the {len(SPECIAL_TOKENS)} special tokens, got {vocab_size}")
    tokenizer = Tokenizer(models.WordPiece(unk_token=UNK_TOKEN))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True, strip_accents=True, clean_text=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS),
                                        show_progress=False)
    tokenizer.train_from_iterator(texts, trainer)
    if [tokenizer.token_to_id(t) for t in SPECIAL_TOKENS] != [PAD_ID, UNK_ID, BOS_ID, EOS_ID]:
        raise RuntimeError("special tokens did not get the reserved ids")
    return tokenizer


def encode_batch(tokenizer: Tokenizer, texts: list[str], max_len: int, bos_eos: bool = False
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids ``(n, L)`` padded with ``PAD_ID`` and the padding mask (``True`` where padded).

    ``L`` is the longest text in the batch, capped at ``max_len``; ``bos_eos`` wraps each text in
    ``[BOS] ... [EOS]`` (decoder targets).
    """
    if max_len < (3 if bos_eos else 1):
        raise ValueError(f"max_len too small: {max_len}")
    rows = []
    for encoding in tokenizer.encode_batch(list(texts)):
        ids = encoding.ids
        if bos_eos:
            ids = [BOS_ID, *ids[: max_len - 2], EOS_ID]
        rows.append(ids[:max_len])
    width = max(1, max((len(r) for r in rows), default=1))
    out = torch.full((len(rows), width), PAD_ID, dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, : len(r)] = torch.tensor(r, dtype=torch.long)
    return out, out == PAD_ID


@dataclass(frozen=True)
class TransformerConfig:
    """Size of the listing transformer (and of the doc2query decoder)."""

    vocab_size: int = 4000
    dim: int = 64
    heads: int = 4
    layers: int = 2
    ff_dim: int = 128
    max_len: int = 48
    dropout: float = 0.1

    def __post_init__(self) -> None:
        positive_ints(self, ("vocab_size", "dim", "heads", "layers", "ff_dim", "max_len"))
        if self.dim % self.heads:
            raise ValueError(f"TransformerConfig.dim ({self.dim}) must be divisible by heads ({self.heads})")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"TransformerConfig.dropout must be in [0, 1), got {self.dropout!r}")


class ListingEncoder(nn.Module):
    """Token + learned position embeddings, then ``nn.TransformerEncoder``; padding is never attended."""

    def __init__(self, config: TransformerConfig | None = None) -> None:
        super().__init__()
        self.config = config or TransformerConfig()
        c = self.config
        self.tokens = nn.Embedding(c.vocab_size, c.dim, padding_idx=PAD_ID)
        self.positions = nn.Embedding(c.max_len, c.dim)
        layer = nn.TransformerEncoderLayer(c.dim, c.heads, c.ff_dim, c.dropout, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, c.layers, enable_nested_tensor=False)

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """Token plus position embeddings of ``(n, L)`` ids."""
        if ids.shape[1] > self.config.max_len:
            raise ValueError(f"sequence length {ids.shape[1]} exceeds max_len {self.config.max_len}")
        return self.tokens(ids) + self.positions(torch.arange(ids.shape[1], device=ids.device))

    def forward(self, ids: torch.Tensor, pad_mask: torch.Tensor) -> torch.Tensor:
        """Contextual token vectors ``(n, L, dim)``; ``pad_mask`` is ``True`` at padding."""
        return self.encoder(self.embed(ids), src_key_padding_mask=pad_mask)

    def pooled(self, ids: torch.Tensor, pad_mask: torch.Tensor) -> torch.Tensor:
        """One vector per text: the mean of its non-padding token vectors."""
        hidden = self(ids, pad_mask)
        keep = (~pad_mask).unsqueeze(-1).float()
        return (hidden * keep).sum(1) / keep.sum(1).clamp(min=1.0)


class Doc2Query(nn.Module):
    """Encoder-decoder that generates queries from listing text (doc2query pre-training).

    The decoder reuses the encoder's token embeddings for its inputs and its output layer (tied
    weights), so what it learns about buyer words lands in the embeddings the listing tower inherits.
    """

    def __init__(self, config: TransformerConfig | None = None) -> None:
        super().__init__()
        self.encoder = ListingEncoder(config)
        c = self.encoder.config
        layer = nn.TransformerDecoderLayer(c.dim, c.heads, c.ff_dim, c.dropout, batch_first=True)
        self.decoder = nn.TransformerDecoder(layer, c.layers)

    def forward(self, src: torch.Tensor, src_pad: torch.Tensor, tgt_in: torch.Tensor, tgt_pad: torch.Tensor
                ) -> torch.Tensor:
        """Next-token logits ``(n, T, vocab)`` for teacher-forced decoder inputs ``tgt_in``."""
        memory = self.encoder(src, src_pad)
        causal = nn.Transformer.generate_square_subsequent_mask(tgt_in.shape[1], dtype=torch.bool)
        hidden = self.decoder(self.encoder.embed(tgt_in), memory, tgt_mask=causal,
                              tgt_key_padding_mask=tgt_pad, memory_key_padding_mask=src_pad,
                              tgt_is_causal=True)
        return hidden @ self.encoder.tokens.weight.T

    def loss(self, src: torch.Tensor, src_pad: torch.Tensor, tgt: torch.Tensor, tgt_pad: torch.Tensor
             ) -> torch.Tensor:
        """Cross-entropy of predicting ``tgt[:, 1:]`` from ``tgt[:, :-1]`` (``[BOS] q [EOS]`` targets)."""
        logits = self(src, src_pad, tgt[:, :-1], tgt_pad[:, :-1])
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt[:, 1:].reshape(-1), ignore_index=PAD_ID)

    @torch.no_grad()
    def generate(self, src: torch.Tensor, src_pad: torch.Tensor, max_len: int = 12) -> list[list[int]]:
        """Greedy decoding: token ids of one query per source text (without ``[BOS]``/``[EOS]``)."""
        was_training = self.training
        self.eval()
        memory = self.encoder(src, src_pad)
        out = torch.full((src.shape[0], 1), BOS_ID, dtype=torch.long)
        done = torch.zeros(src.shape[0], dtype=torch.bool)
        for _ in range(max_len):
            causal = nn.Transformer.generate_square_subsequent_mask(out.shape[1], dtype=torch.bool)
            hidden = self.decoder(self.encoder.embed(out), memory, tgt_mask=causal,
                                  memory_key_padding_mask=src_pad)
            nxt = (hidden[:, -1] @ self.encoder.tokens.weight.T).argmax(-1)
            nxt = torch.where(done, torch.full_like(nxt, PAD_ID), nxt)
            out = torch.cat([out, nxt[:, None]], dim=1)
            done |= nxt == EOS_ID
            if done.all():
                break
        self.train(was_training)
        return [[t for t in row[1:].tolist() if t not in (PAD_ID, EOS_ID)] for row in _cut_at_eos(out)]


def _cut_at_eos(out: torch.Tensor) -> torch.Tensor:
    """Replace everything after the first ``[EOS]`` of each row with padding."""
    seen = (out == EOS_ID).long().cumsum(1)
    after = (seen - (out == EOS_ID).long()) > 0
    return out.masked_fill(after, PAD_ID)
