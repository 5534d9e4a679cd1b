"""Two-tower losses: the softmax over a positive and masked negatives."""

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from retrieval_lib.training.losses import SoftmaxLoss, softmax_loss
from retrieval_lib.training.negatives import Batch, InBatchNegatives
from retrieval_lib.training.pairs import TrainingPairs


def test_softmax_loss_by_hand():
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    v = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    t = 0.5
    expected = -np.log(np.exp(2) / (np.exp(2) + np.exp(0)))
    positive = (q * v).sum(1)
    negative = q @ v.T
    own = torch.eye(2, dtype=torch.bool)
    assert softmax_loss(positive, negative, t, own).item() == pytest.approx(expected, rel=1e-6)
    masked = softmax_loss(positive, negative, t, torch.ones(2, 2, dtype=torch.bool))
    assert masked.item() == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError):
        softmax_loss(positive, negative[:1], t)


def _old_in_batch_softmax(q, v, temperature, mask):
    """The in-batch softmax of chapters 4 to 6 before the loss was split from its negatives."""
    logits = (q @ v.T / temperature).masked_fill(mask, float("-inf"))
    return F.cross_entropy(logits, torch.arange(len(logits)))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_softmax_loss_equals_the_old_in_batch_softmax(seed):
    generator = torch.Generator().manual_seed(seed)
    b, d, t = 16, 8, 0.07
    q = F.normalize(torch.randn(b, d, generator=generator), dim=1).requires_grad_(True)
    v = F.normalize(torch.randn(b, d, generator=generator), dim=1).requires_grad_(True)
    hits = torch.rand(b, b, generator=generator) < 0.2
    hits = (hits | hits.T).fill_diagonal_(False)  # accidental hits, off the diagonal
    old = _old_in_batch_softmax(q, v, t, hits)
    new = softmax_loss((q * v).sum(1), q @ v.T, t, hits | torch.eye(b, dtype=torch.bool))
    torch.testing.assert_close(new, old)
    old_grad = torch.autograd.grad(old, (q, v))
    new_grad = torch.autograd.grad(new, (q, v))
    for a, c in zip(new_grad, old_grad, strict=True):
        torch.testing.assert_close(a, c)


def test_softmax_loss_with_in_batch_negatives_equals_the_old_loss():
    rng = np.random.default_rng(0)
    n = 12
    frame = pd.DataFrame({"session_id": np.arange(n), "user_id": rng.integers(0, 3, n),
                          "query": rng.choice(["a", "b", "c", "d"], n), "day": np.arange(n, dtype=float),
                          "listing_id": rng.integers(0, 6, n), "interaction": ["click"] * n})
    pairs = TrainingPairs.of(frame)
    generator = torch.Generator().manual_seed(0)
    q = torch.randn(n, 4, generator=generator)
    v = torch.randn(n, 4, generator=generator)
    rows = np.arange(n)
    negatives = InBatchNegatives("query")(Batch(rows, pairs, q, v, lambda ids: v[ids]))
    off_diagonal = negatives.mask & ~torch.eye(n, dtype=torch.bool)
    assert off_diagonal.any()
    loss = SoftmaxLoss(temperature=0.2)((q * v).sum(1), negatives, torch.zeros(n, dtype=torch.long))
    torch.testing.assert_close(loss, _old_in_batch_softmax(q, v, 0.2, off_diagonal))


@pytest.mark.parametrize("temperature", [0, -0.1, float("nan")])
def test_softmax_temperature_must_be_positive(temperature):
    with pytest.raises(ValueError, match="temperature"):
        SoftmaxLoss(temperature=temperature)
