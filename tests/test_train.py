import numpy as np
import pytest
import torch
from torch import nn

from retrieval_lib.train import (
    Optimizer,
    TrainConfig,
    accidental_hits,
    batches,
    in_batch_softmax_loss,
    train,
)


def test_accidental_hits_mask_same_listing_or_query_off_the_diagonal():
    mask = accidental_hits(np.array([0, 0, 1, 2]), np.array([5, 6, 5, 7])).numpy()
    expected = np.zeros((4, 4), bool)
    expected[0, 1] = expected[1, 0] = True  # same query
    expected[0, 2] = expected[2, 0] = True  # same listing
    np.testing.assert_array_equal(mask, expected)


def test_softmax_loss_by_hand():
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    v = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    t = 0.5
    expected = -np.log(np.exp(2) / (np.exp(2) + np.exp(0)))
    assert in_batch_softmax_loss(q, v, t).item() == pytest.approx(expected, rel=1e-6)
    masked = in_batch_softmax_loss(q, v, t, torch.tensor([[False, True], [True, False]]))
    assert masked.item() == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError):
        in_batch_softmax_loss(q, v[:1], t)


def test_batches_cover_every_example_once():
    seen = np.concatenate(list(batches(10, 4, torch.Generator().manual_seed(0))))
    assert sorted(seen.tolist()) == list(range(10))
    assert [b.size for b in batches(9, 4, torch.Generator().manual_seed(0))] == [4, 4]  # size-1 tail dropped


def test_config_validation():
    with pytest.raises(ValueError, match="batch_size"):
        TrainConfig(batch_size=0)
    with pytest.raises(ValueError, match="temperature"):
        TrainConfig(temperature=0)


def test_optimizer_splits_sparse_and_dense_parameters():
    model = nn.Sequential(nn.EmbeddingBag(10, 3, sparse=True), nn.Linear(3, 3))
    kinds = sorted(type(o).__name__ for o in Optimizer(model, 1e-3).optimizers)
    assert kinds == ["Adam", "SparseAdam"]


def test_train_learns_and_restores_the_best_epoch():
    torch.manual_seed(0)
    x = torch.randn(64, 4)
    y = x @ torch.tensor([1.0, -2.0, 0.5, 0.0])
    model = nn.Linear(4, 1)
    scores = []

    def step(m, idx):
        return ((m(x[idx]).squeeze(1) - y[idx]) ** 2).mean()

    def validate(m):
        scores.append(-((m(x).squeeze(1) - y) ** 2).mean().item())
        return scores[-1]

    history = train(model, 64, step, validate, TrainConfig(epochs=30, batch_size=16, lr=0.05, patience=30),
                    progress=False)
    assert history.train_loss[-1] < history.train_loss[0] / 10
    assert history.best_score == max(history.valid_score)
    assert validate(model) == pytest.approx(history.best_score, abs=1e-6)


def test_train_is_reproducible():
    def run():
        torch.manual_seed(123)
        model = nn.Linear(3, 1)
        x = torch.arange(30.0).reshape(10, 3) / 30
        train(model, 10, lambda m, i: m(x[i]).pow(2).mean(), lambda m: 0.0,
              TrainConfig(epochs=3, batch_size=4, seed=1), progress=False)
        return model.weight.detach().clone()

    torch.testing.assert_close(run(), run())
