"""A small transformer for listing text, a tokenizer trained on our own corpus, and a doc2query model.

The paper's product tower runs a T5-small encoder over the listing; before two-tower training a small
encoder-decoder learns to *generate the queries that led to purchases* of a listing, and its encoder
then initialises the tower's transformer [reported]. This module provides the pieces, sized for a CPU:
a WordPiece tokenizer (``tokenizers``, with a vocabulary chosen from the training window's text), a
:class:`ListingEncoder` built on ``nn.TransformerEncoder``, and :class:`Doc2Query` with greedy or
top-k sampled decoding.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers
from torch import nn

from retrieval_lib.validation import positive_ints

PAD_TOKEN, UNK_TOKEN, BOS_TOKEN, EOS_TOKEN = "[PAD]", "[UNK]", "[BOS]", "[EOS]"
SPECIAL_TOKENS = (PAD_TOKEN, UNK_TOKEN, BOS_TOKEN, EOS_TOKEN)
PAD_ID, UNK_ID, BOS_ID, EOS_ID = range(4)


def _normalizer() -> normalizers.Normalizer:
    """Lower-case, strip accents, clean control characters (BERT's normalisation)."""
    return normalizers.BertNormalizer(lowercase=True, strip_accents=True, clean_text=True)


def wordpiece_vocabulary(texts: Iterable[str], vocab_size: int = 8000, max_piece: int = 6) -> list[str]:
    """Choose a WordPiece vocabulary by frequency, deterministically.

    Every character seen (alone and as a ``##`` continuation) is kept, so any word can be spelt out;
    the rest of the budget goes to the word-initial prefixes (whole words included) and ``##`` inner
    pieces of up to ``max_piece`` characters that save the most characters over spelling words out
    (occurrences times length minus one), ties broken alphabetically. (The ``tokenizers`` trainer
    breaks ties differently on every run, which would make the book irreproducible.)
    """
    if vocab_size <= len(SPECIAL_TOKENS):
        raise ValueError(f"vocab_size must exceed the {len(SPECIAL_TOKENS)} special tokens, got {vocab_size}")
    normalizer, pre_tokenizer = _normalizer(), pre_tokenizers.BertPreTokenizer()
    words = Counter(w for text in texts for w, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text)))
    alphabet = sorted({ch for w in words for ch in w})
    required = [*SPECIAL_TOKENS, *alphabet, *(f"##{ch}" for ch in alphabet)]
    pieces: Counter[str] = Counter()
    for word, count in words.items():  # score = occurrences x characters saved over spelling out
        for end in range(2, len(word) + 1):
            pieces[word[:end]] += count * (end - 1)
        for start in range(1, len(word)):
            for end in range(start + 2, min(len(word), start + max_piece) + 1):
                pieces[f"##{word[start:end]}"] += count * (end - start - 1)
    budget = max(0, vocab_size - len(required))
    taken = set(required)
    ranked = sorted((p for p in pieces if p not in taken), key=lambda p: (-pieces[p], p))
    return required[:vocab_size] + ranked[:budget]


def train_tokenizer(texts: Iterable[str], vocab_size: int = 8000) -> Tokenizer:
    """A lower-casing WordPiece tokenizer over :func:`wordpiece_vocabulary` (special tokens get ids 0-3)."""
    vocab = {token: i for i, token in enumerate(wordpiece_vocabulary(texts, vocab_size))}
    tokenizer = Tokenizer(models.WordPiece(vocab, unk_token=UNK_TOKEN, max_input_chars_per_word=100))
    tokenizer.normalizer = _normalizer()
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
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


def masked_mean(vectors: torch.Tensor, pad_mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``(n, L, d)`` vectors over the positions where ``pad_mask`` is ``False`` (zeros if none)."""
    keep = (~pad_mask).unsqueeze(-1).float()
    return (vectors * keep).sum(1) / keep.sum(1).clamp(min=1.0)


@dataclass(frozen=True)
class TokenizedTexts:
    """Many texts tokenized once, padded to a common width; rows are selected and trimmed per batch."""

    ids: torch.Tensor
    lengths: torch.Tensor

    @classmethod
    def of(cls, tokenizer: Tokenizer, texts: list[str], max_len: int, bos_eos: bool = False) -> TokenizedTexts:
        """Tokenize every text (see :func:`encode_batch`)."""
        ids, pad = encode_batch(tokenizer, texts, max_len, bos_eos)
        return cls(ids, (~pad).sum(1))

    def __len__(self) -> int:
        return len(self.ids)

    def select(self, rows: np.ndarray | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(ids, pad_mask)`` of ``rows``, trimmed to the longest of them (at least one column)."""
        rows = torch.as_tensor(np.asarray(rows), dtype=torch.long)
        width = max(1, int(self.lengths[rows].max())) if len(rows) else 1
        ids = self.ids[rows, :width]
        return ids, ids == PAD_ID


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
