import numpy as np
import pandas as pd
import pytest
from scipy import stats

from retrieval_lib.evaluation.offline import EvaluationResult
from retrieval_lib.evaluation.uncertainty import (
    buyer_bootstrap,
    buyer_sums,
    multi_bootstrap,
    multi_bootstrap_sums,
    paired_bootstrap,
    seed_runs,
    seeds_needed,
)


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


# --- the multi-bootstrap over seeds and buyers --------------------------------------------------------

def _runs(diff_by_seed, users=None, segments=None):
    """Paired runs: arm a's per-session values are ``diff`` above arm b's zeros, seed by seed."""
    diff_by_seed = np.atleast_2d(np.asarray(diff_by_seed, dtype=float))
    a = [_result(row, users, segments) for row in diff_by_seed]
    b = [_result(np.zeros(diff_by_seed.shape[1]), users, segments) for _ in diff_by_seed]
    return a, b


def test_a_constant_difference_at_every_seed_and_buyer_has_a_degenerate_interval():
    a, b = _runs(np.full((4, 50), 0.03))
    d = multi_bootstrap(a, b, n_boot=200)
    assert d.mean == pytest.approx(0.03) and d.ci_low == pytest.approx(0.03) and d.ci_high == pytest.approx(0.03)
    assert d.share_at_most_zero == 0 and d.excludes_zero
    assert d.t_low == d.t_high == pytest.approx(0.03)
    assert (d.n_seeds, d.n_buyers) == (4, 50)


def test_a_difference_that_only_the_seed_moves_is_resampled_over_seeds():
    # two seeds, differences 0 and 1 at every buyer: a replicate draws seeds (0,0), (0,1)/(1,0) or (1,1),
    # so its mean is 0, 0.5 or 1 with probabilities 1/4, 1/2, 1/4
    a, b = _runs(np.repeat([[0.0], [1.0]], 40, axis=1))
    d = multi_bootstrap(a, b, n_boot=4000, seed=1)
    assert d.mean == pytest.approx(0.5) and d.per_seed == (0.0, 1.0)
    assert (d.ci_low, d.ci_high) == (0.0, 1.0)
    assert d.share_at_most_zero == pytest.approx(0.25, abs=0.03)


def test_a_difference_that_only_the_buyer_moves_matches_the_buyers_only_bootstrap():
    rng = np.random.default_rng(5)
    users = np.repeat(np.arange(300), 2)
    diff = rng.normal(0.02, 0.2, 300)[users]  # the same at every seed
    a, b = _runs(np.tile(diff, (3, 1)), users=users)
    multi = multi_bootstrap(a, b, n_boot=3000, seed=2)
    buyers_only = paired_bootstrap(a[0], b[0], n_boot=3000, seed=3)
    assert multi.ci_low == pytest.approx(buyers_only.ci_low, abs=0.004)
    assert multi.ci_high == pytest.approx(buyers_only.ci_high, abs=0.004)
    assert multi.t_low == multi.t_high == pytest.approx(diff.mean())  # no seed noise at all


def test_the_t_interval_over_seeds_is_the_textbook_one():
    # per-seed differences 0.01, 0.03, 0.02: mean 0.02, sd 0.01, so 0.02 +- t(0.975, 2) * 0.01 / sqrt(3)
    a, b = _runs(np.array([[0.01], [0.03], [0.02]]) * np.ones((3, 30)))
    d = multi_bootstrap(a, b, n_boot=200)
    half = 4.302653 * 0.01 / np.sqrt(3)
    assert d.t_low == pytest.approx(0.02 - half, abs=1e-6) and d.t_high == pytest.approx(0.02 + half, abs=1e-6)


def test_a_segment_resamples_only_its_own_buyers():
    segments = ["head"] * 20 + ["tail"] * 20
    diff = np.r_[np.full(20, 0.1), np.full(20, -0.5)]
    a, b = _runs(np.tile(diff, (3, 1)), segments=segments)
    head = multi_bootstrap(a, b, group="head", n_boot=200)
    assert head.mean == pytest.approx(0.1) and head.ci_low == pytest.approx(0.1) and head.n_buyers == 20


def test_the_multi_bootstrap_refuses_unpaired_or_single_seed_input():
    a, b = _runs(np.zeros((3, 10)))
    with pytest.raises(ValueError, match="paired seeds"):
        multi_bootstrap(a, b[:2])
    with pytest.raises(ValueError, match="at least 2 paired seeds"):
        multi_bootstrap(a[:1], b[:1])
    other = [_result(np.zeros(11)) for _ in range(3)]
    with pytest.raises(ValueError, match="same sessions"):
        multi_bootstrap(a, other)
    with pytest.raises(ValueError, match="no sessions"):
        multi_bootstrap(a, b, group="torso")
    with pytest.raises(ValueError, match="level"):
        multi_bootstrap(a, b, level=1.5)


def _simulated_study(rng, n_seeds=10, n_buyers=300, sd_seed=0.02, sd_buyer=0.05, sd_session=0.3, delta=0.02):
    """One study of two procedures whose true expected difference is ``delta``.

    Each seed shifts the difference by its own draw (training randomness), each buyer by theirs (who the
    test window holds), each session by a draw that is the same at every seed.
    """
    per = rng.integers(1, 4, size=n_buyers)
    buyers = np.repeat(np.arange(n_buyers), per)
    buyer_effect = rng.normal(0, sd_buyer, n_buyers)[buyers] + rng.normal(0, sd_session, buyers.size)
    diff = delta + rng.normal(0, sd_seed, n_seeds)[:, None] + buyer_effect[None, :]
    return diff, buyers


def test_the_multi_bootstrap_covers_the_true_difference_and_a_buyers_only_interval_does_not():
    rng = np.random.default_rng(1)
    delta, studies = 0.02, 400
    multi = buyers_only = 0
    for i in range(studies):
        diff, buyers = _simulated_study(rng, delta=delta)
        sums, counts = buyer_sums(diff, buyers)
        low, high, _ = multi_bootstrap_sums(sums, counts, n_boot=1000, seed=i)
        multi += low <= delta <= high
        # the common practice: one training seed, buyers resampled
        low, high = buyer_bootstrap(buyers, [diff[0], np.ones(buyers.size)], lambda s: s[0] / s[1], 500, seed=i)
        buyers_only += low <= delta <= high
    assert 0.93 <= multi / studies <= 0.97
    assert buyers_only / studies < 0.85


def test_seeds_needed_is_the_first_count_whose_t_half_width_is_below_the_effect():
    # by hand: t(0.975, 5) / sqrt(6) = 2.571 / 2.449 = 1.050 > 1; t(0.975, 6) / sqrt(7) = 2.447 / 2.646 = 0.925
    assert stats.t.ppf(0.975, 5) / np.sqrt(6) > 1 > stats.t.ppf(0.975, 6) / np.sqrt(7)
    assert seeds_needed(1.0, 1.0) == 7
    assert seeds_needed(1.0, -1.0) == 7  # the sign of the effect does not matter
    assert seeds_needed(0.5, 1.0) < seeds_needed(1.0, 1.0) < seeds_needed(2.0, 1.0)
    assert seeds_needed(0.0, 0.01) == 2  # no seed noise: two seeds show any difference
    # a large sample: the normal approximation (1.96 sd / effect)^2
    assert abs(seeds_needed(0.01, 0.001) - (1.96 * 10) ** 2) <= 3


def test_seeds_needed_refuses_meaningless_input():
    for sd, effect in ((-1.0, 1.0), (np.nan, 1.0), (1.0, 0.0), (1.0, np.inf)):
        with pytest.raises(ValueError):
            seeds_needed(sd, effect)
    with pytest.raises(ValueError, match="more than 50 seeds"):
        seeds_needed(1.0, 0.01, max_seeds=50)
