"""Losses for two-tower training: each turns positive and negative scores into one number.

Three are built: the sampled softmax of chapters 4 to 7 (:class:`SoftmaxLoss`), a pairwise margin
(triplet) loss (:class:`PairwiseLoss`) and the paper's multi-part hinge (:class:`HingeLoss`, chapter
8). The first two only rank a query's listings against each other; the hinge also anchors scores to
fixed thresholds, so that one global threshold can prune candidates.

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
from retrieval_lib.training.pairs import INTERACTIONS


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
    _check_scores(positive, negative, mask)
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


def pairwise_margin_loss(positive: torch.Tensor, negative: torch.Tensor, margin: float,
                         mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean triplet hinge ``max(0, margin - positive + negative)`` over every unmasked (row, negative) pair.

    Only the difference between a positive and a negative score matters, as in Facebook's embedding-based
    retrieval: adding a constant to all of a query's scores changes nothing.
    """
    _check_scores(positive, negative, mask)
    violation = F.relu(margin - positive[:, None] + negative)
    return _masked_mean(violation, mask)


def multipart_hinge_loss(positive: torch.Tensor, interaction: torch.Tensor, negative: torch.Tensor,
                         thresholds: torch.Tensor, negative_threshold: float, mask: torch.Tensor | None = None,
                         negative_weight: float = 1.0) -> torch.Tensor:
    """The paper's multi-part hinge: positives above their type's threshold, negatives below ``e_neg``.

    ``max(0, e_t - s)`` for a positive of interaction type ``t`` (``thresholds[t]``, indexed like
    :data:`~retrieval_lib.training.pairs.INTERACTIONS`) and ``max(0, s - e_neg)`` for a negative. The
    positive part is averaged over rows and the negative part over unmasked negatives, then added with
    weight ``negative_weight``: a batch has about as many negatives per row as rows, and summing the
    paper's per-pair terms would let the negatives outweigh the positives by that factor.
    """
    _check_scores(positive, negative, mask)
    if interaction.shape != positive.shape:
        raise ValueError(f"need one interaction type per row, got {tuple(interaction.shape)} for "
                         f"{tuple(positive.shape)} positives")
    below = F.relu(thresholds[interaction] - positive).mean()
    above = _masked_mean(F.relu(negative - negative_threshold), mask)
    return below + negative_weight * above


def _check_scores(positive: torch.Tensor, negative: torch.Tensor, mask: torch.Tensor | None) -> None:
    if positive.ndim != 1 or negative.ndim != 2 or negative.shape[0] != positive.shape[0]:
        raise ValueError(f"need positive (B,) and negative (B, N) scores, got {tuple(positive.shape)} and "
                         f"{tuple(negative.shape)}")
    if mask is not None and mask.shape != negative.shape:
        raise ValueError(f"mask {tuple(mask.shape)} and negative scores {tuple(negative.shape)} differ in shape")


def _masked_mean(values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean of the unmasked entries (``mask`` True: ignore); 0 when there are none (no negatives, or all masked)."""
    if values.numel() == 0:
        return values.sum()
    if mask is None:
        return values.mean()
    kept = ~mask
    return values.masked_fill(mask, 0.0).sum() / kept.sum().clamp(min=1)


@dataclass(frozen=True)
class PairwiseLoss:
    """Triplet margin loss: every positive above each of its negatives by ``margin`` (cosine units)."""

    margin: float = 0.3

    def __post_init__(self) -> None:
        if not 0 < self.margin <= 2:
            raise ValueError(f"PairwiseLoss.margin must be in (0, 2] (cosines differ by at most 2), "
                             f"got {self.margin!r}")

    def __call__(self, positive: torch.Tensor, negatives: Negatives, interaction: torch.Tensor) -> torch.Tensor:
        """Mean margin violation over the unmasked (positive, negative) pairs."""
        return pairwise_margin_loss(positive, negatives.scores, self.margin, negatives.mask)


@dataclass(frozen=True)
class HingeLoss:
    """The paper's multi-part hinge: one threshold per interaction type, one for negatives (cosine units).

    More valuable interactions get higher thresholds [paper]: ``e_purchase >= e_cart >= e_click > e_neg``,
    all within ``[-1, 1]``, or a ``ValueError``. ``negative_weight`` scales the negative part (see
    :func:`multipart_hinge_loss`).
    """

    e_click: float = 0.5
    e_cart: float = 0.6
    e_purchase: float = 0.7
    e_neg: float = 0.2
    negative_weight: float = 1.0

    def __post_init__(self) -> None:
        values = self.thresholds()
        if not all(-1 <= v <= 1 for v in values.values()):
            raise ValueError(f"HingeLoss thresholds are cosines and must lie in [-1, 1], got {values}")
        if not self.e_purchase >= self.e_cart >= self.e_click > self.e_neg:
            raise ValueError(f"HingeLoss thresholds must be ordered e_purchase >= e_cart >= e_click > e_neg, "
                             f"got {values}")
        if not self.negative_weight > 0:
            raise ValueError(f"HingeLoss.negative_weight must be positive, got {self.negative_weight!r}")

    def thresholds(self) -> dict[str, float]:
        """``{interaction type or 'negative': threshold}``."""
        return {"click": self.e_click, "cart": self.e_cart, "purchase": self.e_purchase, "negative": self.e_neg}

    def __call__(self, positive: torch.Tensor, negatives: Negatives, interaction: torch.Tensor) -> torch.Tensor:
        """Positives below their type's threshold plus negatives above ``e_neg``."""
        by_type = self.thresholds()
        thresholds = torch.tensor([by_type[t] for t in INTERACTIONS], dtype=positive.dtype)
        return multipart_hinge_loss(positive, interaction, negatives.scores, thresholds, self.e_neg,
                                    negatives.mask, self.negative_weight)


#: Chapter 8's settings, chosen on the validation window's logged purchases (``benchmarks/loss_choices.py``,
#: the one-standard-error rule of docs/decisions.md).
BOOK_PAIRWISE = PairwiseLoss(margin=0.1)
BOOK_HINGE = HingeLoss(e_click=0.5, e_cart=0.65, e_purchase=0.8, e_neg=0.4)
