"""A small transformer for listing text and a doc2query encoder-decoder (chapter 5).

The paper's product tower runs a T5-small encoder over the listing; before two-tower training a small
encoder-decoder learns to *generate the queries that led to purchases* of a listing, and its encoder
then initialises the tower's transformer [reported]. This module provides both, sized for a CPU:
a :class:`ListingEncoder` built on ``nn.TransformerEncoder`` and :class:`Doc2Query` with greedy or
top-k sampled decoding.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from retrieval_lib.infra.validation import positive_ints
from retrieval_lib.text.wordpiece import BOS_ID, EOS_ID, PAD_ID, TokenizedTexts


def masked_mean(vectors: torch.Tensor, pad_mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``(n, L, d)`` vectors over the positions where ``pad_mask`` is ``False`` (zeros if none)."""
    keep = (~pad_mask).unsqueeze(-1).float()
    return (vectors * keep).sum(1) / keep.sum(1).clamp(min=1.0)


@dataclass(frozen=True)
class TransformerConfig:
    """Size of the listing transformer (and of the doc2query decoder)."""

    vocab_size: int = 8000
    dim: int = 64
    heads: int = 4
    layers: int = 2
    ff_dim: int = 128
    max_len: int = 48
    dropout: float = 0.0

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
        for table in (self.tokens, self.positions):  # small enough that tied output logits start near zero
            nn.init.normal_(table.weight, std=c.dim**-0.5)
        self.tokens.weight.data[PAD_ID] = 0.0
        layer = nn.TransformerEncoderLayer(c.dim, c.heads, c.ff_dim, c.dropout, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, c.layers, enable_nested_tensor=False)

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """Token plus position embeddings of ``(n, L)`` ids."""
        if ids.shape[1] > self.config.max_len:
            raise ValueError(f"sequence length {ids.shape[1]} exceeds max_len {self.config.max_len}")
        return self.tokens(ids) + self.positions(torch.arange(ids.shape[1], device=ids.device))

    def forward(self, ids: torch.Tensor, pad_mask: torch.Tensor) -> torch.Tensor:
        """Contextual token vectors ``(n, L, dim)``; ``pad_mask`` is ``True`` at padding.

        An all-padding row (an empty text) attends to its first position, which keeps softmax finite.
        """
        pad_mask = pad_mask.clone()
        pad_mask[pad_mask.all(1), 0] = False
        return self.encoder(self.embed(ids), src_key_padding_mask=pad_mask)

    @torch.no_grad()
    def attention(self, ids: torch.Tensor, pad_mask: torch.Tensor, layer: int = 0) -> torch.Tensor:
        """Attention weights ``(n, heads, L, L)`` of one layer: row ``i`` is where token ``i`` looks.

        Padding columns get exactly zero weight (that is what ``src_key_padding_mask`` guarantees).
        """
        if not 0 <= layer < self.config.layers:
            raise ValueError(f"layer must be in [0, {self.config.layers}), got {layer}")
        x = self.embed(ids)
        for block in self.encoder.layers[:layer]:
            x = block(x, src_key_padding_mask=pad_mask)
        block = self.encoder.layers[layer]
        if block.norm_first:
            x = block.norm1(x)
        _, weights = block.self_attn(x, x, x, key_padding_mask=pad_mask, need_weights=True,
                                     average_attn_weights=False)
        return weights

    def pooled(self, ids: torch.Tensor, pad_mask: torch.Tensor) -> torch.Tensor:
        """One vector per text: the mean of its non-padding token vectors."""
        return masked_mean(self(ids, pad_mask), pad_mask)


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
    def generate(self, src: torch.Tensor, src_pad: torch.Tensor, max_len: int = 12, top_k: int = 1,
                 generator: torch.Generator | None = None) -> list[list[int]]:
        """Decode one query per source text: token ids without ``[BOS]``/``[EOS]``.

        ``top_k=1`` is greedy decoding (the single most likely query); ``top_k > 1`` samples each next
        token among the ``top_k`` most likely ones, as doc2query-T5 did, which shows the *range* of
        queries a listing attracts (pass a seeded ``generator`` for reproducible samples).
        """
        if top_k < 1 or max_len < 1:
            raise ValueError(f"top_k and max_len must be positive, got {top_k}, {max_len}")
        was_training = self.training
        self.eval()
        memory = self.encoder(src, src_pad)
        out = torch.full((src.shape[0], 1), BOS_ID, dtype=torch.long)
        done = torch.zeros(src.shape[0], dtype=torch.bool)
        for _ in range(max_len):
            causal = nn.Transformer.generate_square_subsequent_mask(out.shape[1], dtype=torch.bool)
            hidden = self.decoder(self.encoder.embed(out), memory, tgt_mask=causal,
                                  memory_key_padding_mask=src_pad)
            logits = hidden[:, -1] @ self.encoder.tokens.weight.T
            logits[:, [PAD_ID, BOS_ID]] = float("-inf")
            if top_k == 1:
                nxt = logits.argmax(-1)
            else:
                best, which = logits.topk(top_k, dim=-1)
                pick = torch.multinomial(torch.softmax(best, -1), 1, generator=generator)
                nxt = which.gather(1, pick).squeeze(1)
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


def encode_in_batches(encode: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], texts: TokenizedTexts,
                      batch_size: int = 1024) -> torch.Tensor:
    """Run a tower over every row of ``texts`` without gradients, ``batch_size`` rows at a time."""
    with torch.no_grad():
        return torch.cat([encode(*texts.select(np.arange(s, min(s + batch_size, len(texts)))))
                          for s in range(0, len(texts), batch_size)])
