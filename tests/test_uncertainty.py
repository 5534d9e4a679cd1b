import numpy as np
import pandas as pd
import pytest
from scipy import stats

from retrieval_lib.evaluation.offline import EvaluationResult
from retrieval_lib.evaluation.uncertainty import paired_bootstrap, seed_runs


def _result(values, users=None, segments=None, metric="recall@100"):
    n = len(values)
    return EvaluationResult(pd.DataFrame({
        "session_id": np.arange(n), "user_id": np.arange(n) if users is None else users,
        "segment": ["head"] * n if segments is None else segments, "history": ["short"] * n,
        metric: np.asarray(values, dtype=float)}))


def test_identical_results_differ_by_exactly_zero():
    a = _result(np.random.default_rng(0).random(200))
    d = paired_bootstrap(a, a, n_boot=200)
    assert d.diff == d.ci_low == d.ci_high == 0 and not d.excludes_zero


def test_a_constant_shift_has_a_degenerate_interval():
    base = np.random.default_rng(1).random(300)
    d = paired_bootstrap(_result(base + 0.1), _result(base), n_boot=200)
    assert d.diff == pytest.approx(0.1) and d.ci_low == pytest.approx(0.1) and d.ci_high == pytest.approx(0.1)
    assert d.excludes_zero


def test_matches_scipy_bootstrap_when_every_buyer_has_one_session():
    rng = np.random.default_rng(2)
    a, b = rng.binomial(1, 0.45, 2000).astype(float), rng.binomial(1, 0.40, 2000).astype(float)
    ours = paired_bootstrap(_result(a), _result(b), n_boot=4000, seed=3)
    ref = stats.bootstrap((a - b,), np.mean, n_resamples=4000, method="percentile", random_state=4,
                          confidence_level=0.95).confidence_interval
    assert ours.diff == pytest.approx((a - b).mean())
    assert ours.ci_low == pytest.approx(ref.low, abs=0.006) and ours.ci_high == pytest.approx(ref.high, abs=0.006)


def test_resampling_buyers_widens_the_interval_when_sessions_are_correlated():
    rng = np.random.default_rng(5)
    users = np.repeat(np.arange(50), 20)  # 50 buyers, 20 sessions each
    effect = rng.normal(0, 0.3, 50)[users]  # the difference depends on the buyer
    a, b = _result(effect, users), _result(np.zeros(1000), users)
    clustered = paired_bootstrap(a, b, n_boot=1000)
    independent = paired_bootstrap(_result(effect), _result(np.zeros(1000)), n_boot=1000)
    assert clustered.n_buyers == 50 and independent.n_buyers == 1000
    assert (clustered.ci_high - clustered.ci_low) > 2 * (independent.ci_high - independent.ci_low)


def test_groups_and_bad_input():
    seg = ["head"] * 100 + ["tail"] * 100
    a = _result(np.r_[np.ones(100), np.zeros(100)], segments=seg)
    b = _result(np.zeros(200), segments=seg)
    assert paired_bootstrap(a, b, group="head", n_boot=100).diff == 1.0
    assert paired_bootstrap(a, b, group="tail", n_boot=100).diff == 0.0
    with pytest.raises(ValueError, match="same sessions"):
        paired_bootstrap(a, _result(np.zeros(150)), n_boot=100)
    with pytest.raises(ValueError, match="no sessions"):
        paired_bootstrap(a, b, group="torso", n_boot=100)
    with pytest.raises(KeyError):
        paired_bootstrap(a, b, metric="recall@7", n_boot=100)
    with pytest.raises(ValueError, match="level"):
        paired_bootstrap(a, b, level=1.5)


def test_seed_runs_collects_one_row_per_seed():
    table = seed_runs(lambda seed: _result(np.full(10, seed / 10)), seeds=(0, 1, 2), groups=("all", "head"))
    assert list(table.index) == [0, 1, 2]
    np.testing.assert_allclose(table["all"], [0.0, 0.1, 0.2])
    assert table["head"].max() - table["head"].min() == pytest.approx(0.2)
    with pytest.raises(ValueError):
        seed_runs(lambda seed: _result([0.0]), seeds=())
