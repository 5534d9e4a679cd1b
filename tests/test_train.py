import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from retrieval_lib.training.curriculum import NegativeCurriculum
from retrieval_lib.training.loop import (
    Optimizer,
    TrainConfig,
    batches,
    ema_decay,
    lr_factor,
    steps_per_epoch,
    train,
)
from retrieval_lib.training.losses import HingeLoss, PairwiseLoss, SoftmaxLoss
from retrieval_lib.training.mining import MinedNegatives
from retrieval_lib.training.negatives import Catalogue, InBatchNegatives, Negatives, UniformNegatives
from retrieval_lib.training.pairs import TrainingPairs
from retrieval_lib.training.trainer import fit_two_tower


def test_batches_cover_every_example_once():
    seen = np.concatenate(list(batches(10, 4, torch.Generator().manual_seed(0))))
    assert sorted(seen.tolist()) == list(range(10))
    assert [b.size for b in batches(9, 4, torch.Generator().manual_seed(0))] == [4, 4]  # size-1 tail dropped


@pytest.mark.parametrize("n, size", [(60, 16), (33, 16), (32, 16), (1_000, 512), (5, 16)])
def test_steps_per_epoch_counts_the_batches_that_run(n, size):
    generator = torch.Generator().manual_seed(0)
    assert steps_per_epoch(n, size) == sum(1 for _ in batches(n, size, generator))


def test_config_validation():
    with pytest.raises(ValueError, match="batch_size"):
        TrainConfig(batch_size=0)
    for bad in (1.0, -0.1, True):
        with pytest.raises(ValueError, match="ema_decay"):
            TrainConfig(ema_decay=bad)
    with pytest.raises(ValueError, match="lr_decay"):
        TrainConfig(lr_decay="linear")


def test_cosine_decay_runs_from_the_full_rate_to_zero():
    config = TrainConfig(lr_decay="cosine")
    assert [lr_factor(config, s, 100) for s in (0, 50, 100, 150)] == pytest.approx([1.0, 0.5, 0.0, 0.0])
    assert lr_factor(TrainConfig(), 73, 100) == 1.0


def _linear_problem():
    x = torch.arange(40.0).reshape(20, 2) / 40
    return x, x @ torch.tensor([1.0, -1.0])


def test_cosine_decay_sets_each_step_learning_rate():
    x, y = _linear_problem()
    seen = []

    def step(m, idx):
        seen.append(m.opt_lr)  # read back below through the hook
        return ((m(x[idx]).squeeze(1) - y[idx]) ** 2).mean()

    model = nn.Linear(2, 1)
    original = Optimizer.set_lr_factor
    factors = []

    def spy(self, factor):
        factors.append(factor)
        original(self, factor)
        model.opt_lr = self.optimizers[0].param_groups[0]["lr"]

    Optimizer.set_lr_factor = spy
    try:
        train(model, 20, step, lambda m: 0.0, TrainConfig(epochs=2, batch_size=10, lr=0.1, patience=5,
                                                           lr_decay="cosine"), progress=False)
    finally:
        Optimizer.set_lr_factor = original
    assert factors == pytest.approx([1.0, 0.5 * (1 + np.cos(np.pi / 4)), 0.5, 0.5 * (1 + np.cos(3 * np.pi / 4))])
    assert seen == pytest.approx([0.1 * f for f in factors])


@pytest.mark.parametrize(("asked", "decay"), [(0.5, 0.5), (0.99, 0.75)])
def test_ema_keeps_the_moving_average_of_the_weights(asked, decay):
    """Hand-computed: with SGD-free updates replaced by a fixed walk, the kept weights are the EMA.

    Two steps an epoch cap the decay at 1 - 1/4 = 0.75, so asking for 0.99 averages with 0.75.
    """
    x, y = _linear_problem()
    torch.manual_seed(0)
    model = nn.Linear(2, 1, bias=False)
    walk = []

    def step(m, idx):
        walk.append(m.weight.detach().clone())
        return ((m(x[idx]).squeeze(1) - y[idx]) ** 2).mean()

    def validate(m):
        return 0.0  # every epoch ties, so the first epoch's weights are kept

    train(model, 20, step, validate, TrainConfig(epochs=1, batch_size=10, lr=0.1, ema_decay=asked),
          progress=False)
    # walk[i] is the weight before step i; the weight after the last step is not in walk: recompute it.
    torch.manual_seed(0)
    plain = nn.Linear(2, 1, bias=False)
    train(plain, 20, step, validate, TrainConfig(epochs=1, batch_size=10, lr=0.1), progress=False)
    after = [walk[1], plain.weight.detach()]  # weights after step 1 and step 2 of the same walk
    expected = decay * after[0] + (1 - decay) * after[1]  # the first update copies, the second averages
    torch.testing.assert_close(model.weight.detach(), expected)


def test_ema_decay_is_capped_at_two_epochs_of_steps():
    config = TrainConfig(ema_decay=0.99)
    assert ema_decay(config, 1) == 0.5
    assert ema_decay(config, 2) == 0.75
    assert ema_decay(config, 10) == pytest.approx(0.95)
    assert ema_decay(config, 50) == 0.99  # the cap reaches the asked decay: exactly it, not a rounding
    assert ema_decay(config, 10_000) == 0.99
    assert ema_decay(TrainConfig(ema_decay=0.0), 10) == 0.0
    with pytest.raises(ValueError, match="step"):
        ema_decay(config, 0)


def test_ema_validates_the_averaged_weights_and_leaves_the_model_with_them():
    x, y = _linear_problem()
    validated = []

    def validate(m):
        validated.append(m)
        return -((m(x).squeeze(1) - y) ** 2).mean().item()

    model = nn.Linear(2, 1)
    history = train(model, 20, lambda m, i: ((m(x[i]).squeeze(1) - y[i]) ** 2).mean(), validate,
                    TrainConfig(epochs=5, batch_size=10, lr=0.05, patience=5, ema_decay=0.9), progress=False)
    assert all(m is not model for m in validated)  # the average is scored, not the raw weights
    assert validate(model) == pytest.approx(history.best_score, abs=1e-6)


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


N_LISTINGS = 20


def _synthetic_pairs(n=60, seed=0):
    """``n`` engaged pairs over 10 queries and 20 listings; query ``qi`` engages listing 2i or 2i + 1."""
    rng = np.random.default_rng(seed)
    query = rng.integers(0, 10, n)
    return TrainingPairs.of(pd.DataFrame({
        "session_id": np.arange(n), "user_id": rng.integers(0, 5, n), "query": [f"q{i}" for i in query],
        "day": np.arange(n, dtype=float), "listing_id": 2 * query + rng.integers(0, 2, n),
        "interaction": rng.choice(["click", "cart", "purchase"], n)}))


class Towers(nn.Module):
    def __init__(self, n_queries):
        super().__init__()
        self.queries = nn.Embedding(n_queries, 8)
        self.listings = nn.Embedding(N_LISTINGS, 8)


def _fit(pairs, config, negatives=None, schedule=None, loss=None, validate=None, catalogue=None):
    def encode_queries(m, rows):
        return nn.functional.normalize(m.queries(torch.from_numpy(pairs.query_row[rows])), dim=1)

    def encode_listings(m, ids):
        return nn.functional.normalize(m.listings(torch.from_numpy(np.asarray(ids))), dim=1)

    def top2_hit_rate(m):
        scores = encode_queries(m, np.arange(len(pairs))) @ encode_listings(m, np.arange(N_LISTINGS)).T
        top = scores.topk(2, dim=1).indices.numpy()
        return float((top == pairs.listing[:, None]).any(axis=1).mean())

    return fit_two_tower(lambda: Towers(len(pairs.query_text)), pairs, encode_queries, encode_listings,
                         validate or top2_hit_rate, config, loss or SoftmaxLoss(0.1),
                         negatives if negatives is not None else InBatchNegatives("query"), schedule,
                         catalogue=catalogue, progress=False)


CONFIG = TrainConfig(epochs=15, batch_size=16, lr=0.05, patience=15, seed=0)


def test_fit_two_tower_learns_the_engaged_listings():
    pairs = _synthetic_pairs()
    model, history = _fit(pairs, CONFIG)
    assert history.train_loss[-1] < 0.7 * history.train_loss[0]
    assert history.best_score > 0.9 and history.valid_score[0] < history.best_score
    assert isinstance(model, Towers) and not model.training


@pytest.mark.parametrize("loss", [PairwiseLoss(0.3), HingeLoss(e_click=0.5, e_cart=0.6, e_purchase=0.7, e_neg=0.2)],
                         ids=["pairwise", "hinge"])
def test_fit_two_tower_learns_with_chapter_8_losses(loss):
    pairs = _synthetic_pairs()
    model, history = _fit(pairs, CONFIG, loss=loss)
    assert history.train_loss[-1] < 0.5 * history.train_loss[0]
    assert history.best_score > 0.9


def test_the_hinge_anchors_scores_to_its_thresholds():
    """After hinge training, engaged pairs score above e_click and other listings mostly below e_neg."""
    pairs = _synthetic_pairs()
    loss = HingeLoss(e_click=0.5, e_cart=0.6, e_purchase=0.7, e_neg=0.0)
    model, _ = _fit(pairs, TrainConfig(epochs=40, batch_size=16, lr=0.05, patience=40, seed=0), loss=loss)
    with torch.no_grad():
        q = nn.functional.normalize(model.queries.weight, dim=1)
        v = nn.functional.normalize(model.listings.weight, dim=1)
        scores = (q @ v.T).numpy()
    engaged = np.zeros_like(scores, dtype=bool)
    engaged[pairs.query_row, pairs.listing] = True
    assert np.median(scores[engaged]) > loss.e_click
    assert np.median(scores[~engaged]) < loss.e_click


def test_fit_two_tower_is_reproducible():
    pairs = _synthetic_pairs()
    short = TrainConfig(epochs=3, batch_size=16, lr=0.05, seed=4)
    first, history = _fit(pairs, short)
    second, again = _fit(pairs, short)
    assert again.train_loss == history.train_loss
    for (name, a), (_, b) in zip(first.state_dict().items(), second.state_dict().items(), strict=True):
        torch.testing.assert_close(a, b, msg=name)
    other, _ = _fit(pairs, TrainConfig(epochs=3, batch_size=16, lr=0.05, seed=5))
    assert not torch.allclose(other.listings.weight, first.listings.weight)


class Counting:
    """A negative source that counts its calls and gives every score the same value."""

    def __init__(self, value):
        self.value, self.calls = value, 0

    def __call__(self, batch):
        self.calls += 1
        scores = torch.full((len(batch.rows), 3), float(self.value)) + 0 * batch.query_vectors.sum()
        return Negatives(scores, torch.zeros(len(batch.rows), 3, dtype=torch.bool))


def mean_score(positive, negatives, interaction):
    """A loss equal to the source's constant score, so the weighted sum can be checked by hand."""
    return negatives.scores.mean()


def test_fit_two_tower_weights_sources_by_the_schedule():
    pairs = _synthetic_pairs()  # 60 pairs in batches of 16: 4 steps per epoch (16, 16, 16, 12)
    config = TrainConfig(epochs=3, batch_size=16, lr=0.01, patience=5)
    total = 4 * 3
    calls = []

    def schedule(step, total_steps):
        calls.append((step, total_steps))
        return {"one": 1.0, "two": step / total_steps, "never": 0.0}

    sources = {"one": Counting(1), "two": Counting(2), "never": Counting(100)}
    _, history = _fit(pairs, config, negatives=sources, schedule=schedule, loss=mean_score,
                      validate=lambda m: 0.0)
    assert calls == [(step, total) for step in range(total)]
    assert sources["one"].calls == total
    assert sources["two"].calls == total - 1  # weight 0 at step 0: not called
    assert sources["never"].calls == 0
    # each step's loss is 1 * 1 + (step / total) * 2; the history keeps the mean per epoch
    expected = [np.mean([1 + 2 * s / total for s in range(e * 4, e * 4 + 4)]) for e in range(3)]
    np.testing.assert_allclose(history.train_loss, expected, rtol=1e-6)


def test_fit_two_tower_without_a_schedule_weights_every_source_one():
    sources = {"a": Counting(1), "b": Counting(3)}
    _, history = _fit(_synthetic_pairs(), TrainConfig(epochs=2, batch_size=16), negatives=sources,
                      loss=mean_score, validate=lambda m: 0.0)
    assert sources["a"].calls == sources["b"].calls == 8
    np.testing.assert_allclose(history.train_loss, [4.0, 4.0], rtol=1e-6)


def test_fit_two_tower_rejects_bad_sources_and_schedules():
    pairs = _synthetic_pairs()
    config = TrainConfig(epochs=1, batch_size=16)
    with pytest.raises(ValueError, match="the negative sources are"):
        _fit(pairs, config, negatives={"in-batch": InBatchNegatives()},
             schedule=lambda step, total: {"in-batch": 1.0, "hard": 0.5})
    with pytest.raises(ValueError, match="the negative sources are"):  # a source left out of the schedule
        _fit(pairs, config, negatives={"in-batch": InBatchNegatives(), "other": InBatchNegatives("request")},
             schedule=lambda step, total: {"in-batch": 1.0})
    with pytest.raises(ValueError, match="at least one negative source"):
        _fit(pairs, config, negatives={})


def test_fit_two_tower_refuses_a_step_where_every_weight_is_zero():
    with pytest.raises(ValueError, match="every negative source weight 0"):
        _fit(_synthetic_pairs(), TrainConfig(epochs=1, batch_size=16), negatives={"in-batch": InBatchNegatives()},
             schedule=lambda step, total: {"in-batch": 0.0})


def _curriculum_sources():
    return ({"inbatch": InBatchNegatives("query"), "uniform": UniformNegatives(4),
             "mined": MinedNegatives(window=(1, 6), n=3, refresh_every=4, ef=50, ef_construction=50)},
            NegativeCurriculum(warmup_steps=4, ramp_steps=8))


def test_fit_two_tower_trains_with_the_negative_curriculum():
    pairs = _synthetic_pairs()
    catalogue = Catalogue(np.arange(N_LISTINGS), np.full(N_LISTINGS, -1.0))
    negatives, schedule = _curriculum_sources()
    model, history = _fit(pairs, CONFIG, negatives=negatives, schedule=schedule, catalogue=catalogue)
    assert history.best_score > 0.9
    assert history.steps == 4 * CONFIG.epochs
    mined = history.sources["mined"]
    # the miner is first called at step 5 (weight 0 before), then refreshes every 4 steps
    assert mined["refreshes"] == len(range(5, history.steps, 4))
    assert mined["refresh_seconds"] > 0 and mined["search_seconds"] > 0
    assert "inbatch" not in history.sources  # stateless sources report nothing
    again, rerun = _fit(pairs, CONFIG, negatives=_curriculum_sources()[0], schedule=schedule, catalogue=catalogue)
    assert rerun.train_loss == history.train_loss
    torch.testing.assert_close(again.listings.weight, model.listings.weight)


def test_fit_two_tower_resets_a_reused_miner():
    pairs = _synthetic_pairs()
    catalogue = Catalogue(np.arange(N_LISTINGS), np.full(N_LISTINGS, -1.0))
    negatives, schedule = _curriculum_sources()
    short = TrainConfig(epochs=2, batch_size=16, lr=0.05)
    first = _fit(pairs, short, negatives=negatives, schedule=schedule, catalogue=catalogue)[1]
    second = _fit(pairs, short, negatives=negatives, schedule=schedule, catalogue=catalogue)[1]
    assert first.sources["mined"]["refreshes"] == second.sources["mined"]["refreshes"] > 0
    assert second.train_loss == first.train_loss  # the second run did not start from the first's index


def test_catalogue_sources_need_the_catalogue():
    with pytest.raises(ValueError, match="catalogue"):
        _fit(_synthetic_pairs(), TrainConfig(epochs=1, batch_size=16),
             negatives={"inbatch": InBatchNegatives(), "uniform": UniformNegatives(2)})


def test_training_code_names_the_library_modules_of_a_run():
    from retrieval_lib.training.trainer import training_code

    negatives, schedule = _curriculum_sources()
    assert training_code(SoftmaxLoss(), negatives, schedule) == [
        "retrieval_lib.training.curriculum", "retrieval_lib.training.losses", "retrieval_lib.training.mining",
        "retrieval_lib.training.negatives"]
    # a reader's own loss or source (defined outside the package) has no source file to hash
    assert training_code(mean_score, Counting(1)) == []


def test_the_recipe_stays_outside_the_code_digest_of_every_trained_model():
    """Choosing another setting in ``training/recipes.py`` must reuse cached runs of that setting."""
    from retrieval_lib.infra.cache import _imported_modules, _module_file

    for root in ("retrieval_lib.models.unified", "retrieval_lib.models.term_tower",
                 "retrieval_lib.training.pretraining", "retrieval_lib.training.mining"):
        seen, todo = set(), [root]
        while todo:
            module = todo.pop()
            if module not in seen:
                seen.add(module)
                todo += sorted(_imported_modules(module, _module_file(module)))
        assert "retrieval_lib.training.recipes" not in seen, root
