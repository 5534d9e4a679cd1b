"""The simulated A/B test: page fusion, common random numbers, the lift and its interval."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from retrieval_lib.marketplace.policy import fuse_rankings, keyed_uniform, show_pages, simulate_funnel
from retrieval_lib.serving.base import PAD
from retrieval_lib.simulation.abtest import lift_by, purchase_lift, sessions_needed, simulate_arm


@pytest.fixture(scope="module")
def control(tiny_world):
    return simulate_arm(tiny_world, None, seed=0)


def test_fuse_rankings_by_hand():
    a = np.array([[1, 2, 3]])
    b = np.array([[3, 4, PAD]])
    # 1: 1/61, 2: 1/62, 3: 1/63 + 1/61, 4: 1/62 (ties go to the smaller id)
    np.testing.assert_array_equal(fuse_rankings([a, b], 4), [[3, 1, 2, 4]])
    np.testing.assert_array_equal(fuse_rankings([a, b], 3), [[3, 1, 2]])
    np.testing.assert_array_equal(fuse_rankings([a, b], 6), [[3, 1, 2, 4, PAD, PAD]])


def test_one_ranking_comes_back_unchanged():
    rng = np.random.default_rng(0)
    ranking = np.stack([rng.permutation(50)[:20] for _ in range(30)])
    ranking[3, 15:] = PAD
    np.testing.assert_array_equal(fuse_rankings([ranking], 20), ranking)
    np.testing.assert_array_equal(fuse_rankings([ranking, np.full((30, 5), PAD)], 10), ranking[:, :10])


def test_fuse_rankings_rejects_bad_shapes():
    with pytest.raises(ValueError, match="at least one"):
        fuse_rankings([], 3)
    with pytest.raises(ValueError, match="rows"):
        fuse_rankings([np.zeros((2, 3), int), np.zeros((3, 3), int)], 3)


def test_keyed_uniform_depends_only_on_its_key():
    a, b = np.arange(20_000) // 100, np.arange(20_000) % 100
    u = keyed_uniform(7, 0, a, b)
    assert ((u > 0) & (u < 1)).all()
    assert stats.kstest(u, "uniform").pvalue > 0.01
    np.testing.assert_array_equal(keyed_uniform(7, 0, a[::-1], b[::-1]), u[::-1])  # order does not matter
    np.testing.assert_array_equal(keyed_uniform(7, 0, a[5:9], b[5:9]), u[5:9])  # nor what else is drawn
    assert not np.array_equal(keyed_uniform(8, 0, a, b), u)
    assert not np.array_equal(keyed_uniform(7, 1, a, b), u)
    assert abs(np.corrcoef(u, keyed_uniform(7, 1, a, b))[0, 1]) < 0.03
    with pytest.raises(ValueError, match="non-negative"):
        keyed_uniform(-1, 0, a, b)


def test_empty_extra_candidates_leave_the_pages_unchanged(tiny_world):
    cfg, latent, listings = tiny_world.config, tiny_world.latent, tiny_world.observed.listings
    queries = tiny_world.observed.sessions["query"].tolist()
    pages = show_pages(cfg, latent, listings, queries, np.random.default_rng(3))
    same = show_pages(cfg, latent, listings, queries, np.random.default_rng(3),
                      extra=np.full((len(queries), 10), PAD))
    np.testing.assert_array_equal(pages, same)
    with pytest.raises(ValueError, match="one row per session"):
        show_pages(cfg, latent, listings, queries, np.random.default_rng(3), extra=np.zeros((3, 10), int))


def test_common_random_numbers_follow_the_listing(tiny_world):
    """Changing one slot of a page leaves every other impression's draws, hence clicks, unchanged."""
    cfg, latent = tiny_world.config, tiny_world.latent
    pages = show_pages(cfg, latent, tiny_world.observed.listings, tiny_world.observed.sessions["query"].tolist(),
                       np.random.default_rng(0))[:2000]
    changed = pages.copy()
    changed[:, -1] = (changed[:, -1] + 1) % len(tiny_world.observed.listings)
    a = simulate_funnel(cfg, latent, pages, np.random.default_rng(0), common=5)
    b = simulate_funnel(cfg, latent, changed, np.random.default_rng(99), common=5)
    rest_a, rest_b = a[a["position"] < cfg.page_size - 1], b[b["position"] < cfg.page_size - 1]
    np.testing.assert_array_equal(rest_a["click"].to_numpy(), rest_b["click"].to_numpy())
    assert not a["click"].equals(simulate_funnel(cfg, latent, pages, np.random.default_rng(0), common=6)["click"])


def test_simulate_arm_shapes_and_determinism(tiny_world, control):
    test = tiny_world.observed.split("test")
    assert len(control) == len(test)
    assert list(control.columns) == ["session_id", "user_id", "segment", "history", "clicks", "purchase"]
    assert set(control["purchase"].unique()) <= {0, 1} and control["purchase"].sum() > 0
    assert set(control["segment"]) <= {"head", "torso", "tail"}
    pd.testing.assert_frame_equal(control, simulate_arm(tiny_world, None, seed=0))
    with pytest.raises(ValueError, match="one row per test request"):
        simulate_arm(tiny_world, np.zeros((5, 10), int))


def test_a_treatment_that_adds_nothing_has_no_lift(tiny_world, control):
    nothing = simulate_arm(tiny_world, np.full((len(control), 20), PAD), seed=0)
    lift = purchase_lift(control, nothing)
    assert lift.lift == 0 and lift.ci_low == 0 == lift.ci_high


def test_a_treatment_that_adds_what_buyers_want_wins(tiny_world, control):
    """Add each buyer's own latent choice as a candidate: a large lift, its interval above 0 (the test has power)."""
    wanted = tiny_world.latent.labels[control["session_id"].to_numpy()][:, None]
    better = simulate_arm(tiny_world, np.where(wanted >= 0, wanted, PAD), seed=0)
    lift = purchase_lift(control, better)
    assert lift.ci_low > 0 and lift.lift > 0.05
    assert lift.treatment_rate > lift.control_rate
    by_segment = lift_by(control, better, "segment")
    assert set(by_segment["segment"]) == set(control["segment"])
    assert (by_segment["n_sessions"].sum()) == len(control)


def test_an_aa_test_covers_zero(tiny_world, control):
    other = simulate_arm(tiny_world, None, seed=1)
    lift = purchase_lift(control, other)
    assert lift.covers_zero
    assert lift.ci_high - lift.ci_low > 0


def test_purchase_lift_rejects_mismatched_arms(control):
    with pytest.raises(ValueError, match="same requests"):
        purchase_lift(control, control.iloc[:-1])
    with pytest.raises(ValueError, match="no purchases"):
        purchase_lift(control.assign(purchase=0), control)


def test_sessions_needed_by_hand():
    assert sessions_needed(0.1, 0.05) == 57_600  # 16 x 0.1 x 0.9 / 0.005^2
    assert sessions_needed(0.1, -0.05) == 57_600
    for rate, lift in ((0.0, 0.1), (1.0, 0.1), (0.1, 0.0)):
        with pytest.raises(ValueError):
            sessions_needed(rate, lift)
