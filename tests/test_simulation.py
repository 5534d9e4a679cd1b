"""The simulated A/B test: page fusion, common random numbers, the lift and its interval."""

import dataclasses

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from retrieval_lib.baselines.bm25 import BM25Retriever
from retrieval_lib.evaluation.seed_study import BOOK_DATA
from retrieval_lib.infra.cache import source_digest
from retrieval_lib.marketplace.policy import _EXPLORE as EXPLORE_STREAM
from retrieval_lib.marketplace.policy import fuse_rankings, keyed_uniform, show_pages, simulate_funnel
from retrieval_lib.serving.base import PAD
from retrieval_lib.simulation.abtest import (
    CALIBRATION_MODULES,
    AACalibration,
    aa_calibration,
    lift_by,
    purchase_lift,
    ranked_pages,
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


def test_fused_pages_keep_common_random_numbers_when_another_page_has_other_empty_slots(tiny_world):
    """With ``common``, a request's exploration does not depend on how many empty slots earlier pages had.

    ``rng``'s exploration draws are handed out slot by slot over the exploration and empty slots, so
    when one arm fills a slot the other leaves empty, every later request explores other listings;
    keyed draws (per request and slot) leave the other requests' pages unchanged.
    """
    cfg, latent, listings = tiny_world.config, tiny_world.latent, tiny_world.observed.listings
    queries = tiny_world.observed.sessions["query"].tolist()[:3000]
    lat = dataclasses.replace(latent, intents={k: v[:3000] for k, v in latent.intents.items()})
    ids = np.arange(3000) + 7
    rng = np.random.default_rng
    base = show_pages(cfg, lat, listings, queries, rng(3), common=4, session_ids=ids)
    extra = np.full((3000, 5), PAD)
    extra[:300] = np.arange(5)  # the first 300 requests get other candidates: only their pages change
    other = show_pages(cfg, lat, listings, queries, rng(99), extra=extra, common=4, session_ids=ids)
    assert (other[:300] != base[:300]).any(axis=1).mean() > 0.5
    np.testing.assert_array_equal(other[300:], base[300:])
    # rng's draws shift after a changed request fills empty slots (the bug keyed draws avoid)
    plain = show_pages(cfg, lat, listings, queries, rng(3))
    shifted = show_pages(cfg, lat, listings, queries, rng(3), extra=extra)
    assert (plain[300:] != shifted[300:]).any(axis=1).mean() > 0.3
    # the keys are the sessions' ids, not the row numbers
    assert not np.array_equal(show_pages(cfg, lat, listings, queries, rng(3), common=4), base)
    with pytest.raises(ValueError, match="one id per session"):
        show_pages(cfg, lat, listings, queries, rng(3), common=4, session_ids=ids[:5])


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


# --- ranked arms: a ranking stage's lists, exploration slots keyed per (request, slot) ----------------


@pytest.fixture(scope="module")
def bm25_lists(tiny_world):
    """Any ranked lists for the test requests: BM25's top 30 (some rows padded)."""
    test = tiny_world.observed.split("test").reset_index(drop=True)
    return BM25Retriever().fit(tiny_world.observed.listings).retrieve(test, 30)


def _split_latent(world, split="test"):
    """The split's session ids and the latent truth restricted to them, as ``simulate_arm`` restricts it."""
    rows = world.observed.split(split)["session_id"].to_numpy()
    latent = world.latent
    return rows, dataclasses.replace(latent, intents={k: v[rows] for k, v in latent.intents.items()},
                                     labels=latent.labels[rows])


def _cut(world, latent, ranked):
    """The first page_size listings of each ranked list that exist at the request (PAD padded)."""
    size = world.config.page_size
    out = np.full((len(ranked), size), PAD)
    for i, row in enumerate(ranked):
        real = row[(row >= 0) & (world.latent.listings["created_day"][row.clip(0)] <= latent.intents["day"][i])]
        out[i, : min(size, real.size)] = real[:size]
    return out


def _no_repeats(pages):
    return all(np.unique(p[p >= 0]).size == (p >= 0).sum() for p in pages)


def test_ranked_arms_keep_common_random_numbers_request_by_request(tiny_world, bm25_lists):
    """Changing some requests' lists leaves every other request's page, clicks and purchase as they were."""
    base = simulate_arm(tiny_world, ranked=bm25_lists, seed=0)
    pd.testing.assert_frame_equal(base, simulate_arm(tiny_world, ranked=bm25_lists, seed=0))
    assert list(base.columns) == ["session_id", "user_id", "segment", "history", "clicks", "purchase"]
    assert base["purchase"].sum() > 0 and base["clicks"].sum() > 0
    rows, latent = _split_latent(tiny_world)
    pages = ranked_pages(tiny_world.config, latent, bm25_lists, rows, 0)
    n = len(rows)
    # one request's list reversed
    i = int(np.flatnonzero((bm25_lists >= 0).sum(axis=1) == bm25_lists.shape[1])[0])
    one = bm25_lists.copy()
    one[i] = one[i][::-1]
    one_pages = ranked_pages(tiny_world.config, latent, one, rows, 0)
    others = np.arange(n) != i
    np.testing.assert_array_equal(one_pages[others], pages[others])
    assert not np.array_equal(one_pages[i], pages[i])
    one_arm = simulate_arm(tiny_world, ranked=one, seed=0)
    pd.testing.assert_frame_equal(one_arm[others].reset_index(drop=True), base[others].reset_index(drop=True))
    # every other request's list reversed: the untouched half is unchanged row for row
    half = bm25_lists.copy()
    half[::2] = half[::2, ::-1]
    half_pages = ranked_pages(tiny_world.config, latent, half, rows, 0)
    np.testing.assert_array_equal(half_pages[1::2], pages[1::2])
    assert (half_pages[::2] != pages[::2]).any(axis=1).mean() > 0.5
    half_arm = simulate_arm(tiny_world, ranked=half, seed=0)
    pd.testing.assert_frame_equal(half_arm.iloc[1::2], base.iloc[1::2])
    # another seed: other random numbers
    assert not np.array_equal(ranked_pages(tiny_world.config, latent, bm25_lists, rows, 1), pages)


def test_ranked_pages_explore_the_same_slots_with_the_same_listings(tiny_world, bm25_lists):
    cfg = tiny_world.config
    rows, latent = _split_latent(tiny_world)
    n, size = len(rows), cfg.page_size
    explore = keyed_uniform(0, EXPLORE_STREAM, np.repeat(rows, size).reshape(n, size),
                            np.broadcast_to(np.arange(size), (n, size))) < cfg.explore_rate
    assert abs(explore.mean() - cfg.explore_rate) < 0.02
    # an empty list explores every slot: its page is each slot's exploration pick (PAD where not yet listed)
    picks = ranked_pages(cfg, latent, np.full((n, 3), PAD), rows, 0)
    assert (picks >= 0).mean() > 0.75  # PAD: a pick not listed yet, or a repeat of a pick above it
    # two different ranked inputs: the lexical lists and random catalogue listings
    random_lists = np.random.default_rng(0).integers(len(tiny_world.observed.listings), size=(n, 40))
    pages = []
    for lists in (bm25_lists, random_lists, bm25_lists[:, :3]):
        page, cut = ranked_pages(cfg, latent, lists, rows, 0), _cut(tiny_world, latent, lists)
        deduped = page == PAD  # a slot emptied because its listing is already higher on the page
        # explored slots (and empty ones) show the same pick whatever the list, where the pick exists
        picked = (explore | (cut == PAD)) & (picks >= 0)
        np.testing.assert_array_equal(page[picked & ~deduped], picks[picked & ~deduped])
        # every other slot shows the list's own listing, in rank order
        ranked_slot = ~explore & (cut >= 0)
        np.testing.assert_array_equal(page[ranked_slot & ~deduped], cut[ranked_slot & ~deduped])
        for r, c in zip(*np.nonzero(deduped & (picked | ranked_slot)), strict=True):
            shown = picks[r, c] if picked[r, c] else cut[r, c]
            assert shown in page[r, :c], (r, c)  # emptied only as a repeat of a listing above it
        assert (deduped & (picked | ranked_slot)).mean() < 0.05
        assert (explore & (picks >= 0) & ~deduped & (page != cut)).mean() > 0.15  # exploration changes pages
        assert _no_repeats(page)
        pages.append(page)
    # so two arms agree on every explored slot whose pick is listed at the request (unless emptied as a repeat)
    a, b = pages[0], pages[1]
    both = explore & (picks >= 0) & (a >= 0) & (b >= 0)
    assert both.mean() > 0.15
    np.testing.assert_array_equal(a[both], b[both])


def test_ranked_pages_never_repeat_a_listing(tiny_world, bm25_lists):
    rows, latent = _split_latent(tiny_world)
    twice = np.concatenate([bm25_lists[:, :8], bm25_lists[:, :8], bm25_lists[:, :8]], axis=1)
    pages = ranked_pages(tiny_world.config, latent, twice, rows, 0)
    assert _no_repeats(pages) and (pages >= 0).sum(axis=1).mean() > 8
    assert _no_repeats(ranked_pages(tiny_world.config, latent, bm25_lists, rows, 0))
    assert _no_repeats(ranked_pages(tiny_world.config, latent, bm25_lists, rows, 7))


def test_ranked_arms_reject_bad_input(tiny_world, bm25_lists):
    with pytest.raises(ValueError, match="not both"):
        simulate_arm(tiny_world, bm25_lists, ranked=bm25_lists)
    with pytest.raises(ValueError, match="ranked must have one row per test request"):
        simulate_arm(tiny_world, ranked=bm25_lists[:-1])
    with pytest.raises(ValueError, match="ranked must have one row per test request"):
        simulate_arm(tiny_world, ranked=bm25_lists[:, 0])
    rows, latent = _split_latent(tiny_world)
    with pytest.raises(ValueError, match="one row per request"):
        ranked_pages(tiny_world.config, latent, bm25_lists[:-1], rows, 0)
    with pytest.raises(ValueError, match="one row per request"):
        ranked_pages(tiny_world.config, latent, bm25_lists[:, 0], rows, 0)
    n_listings = len(tiny_world.observed.listings)
    for bad in (n_listings, -2):  # past the catalogue; a negative id that is not padding
        lists = bm25_lists.copy()
        lists[0, 0] = bad
        with pytest.raises(ValueError, match="outside the catalogue"):
            ranked_pages(tiny_world.config, latent, lists, rows, 0)
