"""The simulated A/B test: page fusion, common random numbers, the lift and its interval."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from retrieval_lib.evaluation.seed_study import BOOK_DATA
from retrieval_lib.infra.cache import source_digest
from retrieval_lib.marketplace.policy import fuse_rankings, keyed_uniform, show_pages, simulate_funnel
from retrieval_lib.serving.base import PAD
from retrieval_lib.simulation.abtest import (
    CALIBRATION_MODULES,
    AACalibration,
    aa_calibration,
    lift_by,
    purchase_lift,
    sessions_needed,
    simulate_arm,
    split_test,
)


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


def _arms(purchases_control, purchases_treatment, users):
    n = len(users)
    frame = pd.DataFrame({"session_id": np.arange(n), "user_id": users, "segment": "head", "history": "long",
                          "clicks": 0})
    return frame.assign(purchase=purchases_control), frame.assign(purchase=purchases_treatment)


def test_split_test_reads_each_arm_on_its_own_half_by_hand():
    # buyer 0..3, two sessions each; the treatment doubles every purchase rate it can
    users = np.repeat(np.arange(4), 2)
    control, treatment = _arms([1, 0, 1, 0, 1, 0, 1, 0], [1, 1, 1, 1, 1, 1, 1, 1], users)
    lift = split_test(control, treatment, seed=0, n_boot=200)
    treated = np.random.default_rng(0).permutation(np.arange(4))[:2]
    assert lift.treatment_rate == 1.0 and lift.control_rate == 0.5 and lift.lift == pytest.approx(1.0)
    assert lift.n_buyers == 4 and lift.n_sessions == 8
    # the same arms, any split: the treatment half's rate is read from the treatment frame only
    in_t = np.isin(users, treated)
    assert lift.treatment_rate == treatment["purchase"][in_t].mean()
    with pytest.raises(ValueError, match="same requests"):
        split_test(control, treatment.iloc[:-1])
    with pytest.raises(ValueError, match="two buyers"):
        split_test(*_arms([1, 1], [1, 1], np.array([7, 7])))
    with pytest.raises(ValueError, match="no purchases"):
        split_test(control.assign(purchase=0), treatment)


def test_a_split_test_is_wider_than_the_paired_comparison(tiny_world, control):
    wanted = tiny_world.latent.labels[control["session_id"].to_numpy()][:, None]
    better = simulate_arm(tiny_world, np.where(wanted >= 0, wanted, PAD), seed=0)
    paired, split = purchase_lift(control, better), split_test(control, better)
    assert split.ci_high - split.ci_low > paired.ci_high - paired.ci_low
    assert split.ci_low < split.lift < split.ci_high


def test_aa_calibration_runs_independent_aa_tests_on_a_subsample(tiny_world):
    runs = aa_calibration(tiny_world, runs=6, share=0.5, n_boot=200, progress=False)
    assert len(runs) == 6 and list(runs.columns) == ["lift", "ci_low", "ci_high", "covers_zero"]
    assert (runs["ci_low"] <= runs["lift"]).all() and (runs["lift"] <= runs["ci_high"]).all()
    assert runs["covers_zero"].equals((runs["ci_low"] <= 0) & (runs["ci_high"] >= 0))
    assert runs["lift"].nunique() == 6  # fresh random numbers in every run
    pd.testing.assert_frame_equal(runs, aa_calibration(tiny_world, runs=6, share=0.5, n_boot=200, progress=False))
    with pytest.raises(ValueError, match="runs"):
        aa_calibration(tiny_world, runs=0)
    with pytest.raises(ValueError, match="share"):
        aa_calibration(tiny_world, share=0)


def test_an_aa_calibration_round_trips_and_its_first_runs_reproduce_it(tiny_world, tmp_path):
    runs = aa_calibration(tiny_world, runs=4, share=0.5, n_boot=200, progress=False)
    calibration = AACalibration("benchmarks/aa_calibration.py --preset tiny", "tiny", 0.5, 200,
                                source_digest(CALIBRATION_MODULES), runs)
    assert calibration.is_current() and calibration.coverage == runs["covers_zero"].mean()
    path = tmp_path / "aa.json"
    calibration.save(path)
    loaded = AACalibration.load(path)
    assert (loaded.command, loaded.preset, loaded.share, loaded.n_boot, loaded.digest) == (
        calibration.command, "tiny", 0.5, 200, calibration.digest)
    np.testing.assert_allclose(loaded.runs[["lift", "ci_low", "ci_high"]], runs[["lift", "ci_low", "ci_high"]],
                               atol=1e-6)
    first = aa_calibration(tiny_world, runs=2, share=0.5, n_boot=200, progress=False)
    assert loaded.reproduces(first)
    assert not loaded.reproduces(first.assign(lift=first["lift"] + 1e-3))
    assert not loaded.reproduces(first.iloc[:0])
    assert not loaded.reproduces(aa_calibration(tiny_world, runs=2, share=0.5, seed=1, n_boot=200, progress=False))
    data = path.read_text().replace(calibration.digest, "0" * 16)
    path.write_text(data)
    assert not AACalibration.load(path).is_current()
    with pytest.raises(FileNotFoundError, match="aa_calibration.py"):
        AACalibration.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text('{"command": "x"}')
    with pytest.raises(ValueError, match="not an A/A calibration"):
        AACalibration.load(tmp_path / "bad.json")


def test_the_committed_aa_calibration_is_current_and_large_enough():
    calibration = AACalibration.load(BOOK_DATA / "aa_calibration.json")
    assert calibration.is_current(), f"the A/A calibration's code changed: rerun {calibration.command}"
    assert calibration.command.startswith("benchmarks/aa_calibration.py") and calibration.preset == "book"
    assert len(calibration.runs) >= 100


def test_simulate_arm_keeps_only_the_chosen_buyers(tiny_world, control):
    buyers = control["user_id"].unique()[:5]
    some = simulate_arm(tiny_world, None, seed=0, buyers=buyers)
    assert set(some["user_id"]) == set(buyers)
    assert len(some) == control["user_id"].isin(buyers).sum()
    with pytest.raises(ValueError, match="from these buyers"):
        simulate_arm(tiny_world, None, buyers=np.array([-5]))


def test_sessions_needed_by_hand():
    assert sessions_needed(0.1, 0.05) == 57_600  # 16 x 0.1 x 0.9 / 0.005^2
    assert sessions_needed(0.1, -0.05) == 57_600
    for rate, lift in ((0.0, 0.1), (1.0, 0.1), (0.1, 0.0)):
        with pytest.raises(ValueError):
            sessions_needed(rate, lift)
