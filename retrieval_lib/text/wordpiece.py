"""A WordPiece tokenizer trained on our own corpus, deterministically, and batch tokenization.

The listing transformer (chapter 5) reads word pieces; the vocabulary is chosen from the training
window's text by a deterministic rule, so the same world always gives the same tokenizer.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers

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
