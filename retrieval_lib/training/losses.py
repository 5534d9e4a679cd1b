"""Losses for two-tower training: each turns positive and negative scores into one number.

A loss is called as ``loss(positive, negatives, interaction)``: ``positive`` ``(B,)`` holds each row's
score with its engaged listing, ``negatives`` a :class:`~retrieval_lib.training.negatives.Negatives`
(scores ``(B, N)`` with a mask), and ``interaction`` ``(B,)`` each pair's interaction type (an index of
:data:`~retrieval_lib.training.pairs.INTERACTIONS`), which losses such as chapter 8's hinge use.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F

from retrieval_lib.training.negatives import Negatives


class Loss(Protocol):
    """Anything the two-tower trainer can minimise."""

    def __call__(self, positive: torch.Tensor, negatives: Negatives, interaction: torch.Tensor
                 ) -> torch.Tensor:  # pragma: no cover - protocol
        """A scalar loss for one batch."""
        ...


def softmax_loss(positive: torch.Tensor, negative: torch.Tensor, temperature: float,
                 mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean softmax cross-entropy of each row's positive score against its negatives' scores.

    Scores (cosines when both towers L2-normalise) are divided by ``temperature``; ``mask`` (``True``:
    ignore) removes accidental hits from the negatives.
    """
    if positive.ndim != 1 or negative.ndim != 2 or negative.shape[0] != positive.shape[0]:
        raise ValueError(f"need positive (B,) and negative (B, N) scores, got {tuple(positive.shape)} and "
                         f"{tuple(negative.shape)}")
    if mask is not None:
        negative = negative.masked_fill(mask, float("-inf"))
    logits = torch.cat([positive[:, None], negative], dim=1) / temperature
    return F.cross_entropy(logits, torch.zeros(len(logits), dtype=torch.long))


@dataclass(frozen=True)
class SoftmaxLoss:
    """Sampled softmax over the positive and the negatives, at a temperature (chapters 4 to 6)."""

    temperature: float = 0.05

    def __post_init__(self) -> None:
        if not self.temperature > 0:
            raise ValueError(f"SoftmaxLoss.temperature must be positive, got {self.temperature!r}")

    def __call__(self, positive: torch.Tensor, negatives: Negatives, interaction: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of the positive against the unmasked negatives."""
        return softmax_loss(positive, negatives.scores, self.temperature, negatives.mask)
