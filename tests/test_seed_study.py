"""Seed studies on disk: collected from evaluations, saved and loaded unchanged, stamped with the code digest."""

import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from retrieval_lib.evaluation.offline import EvaluationResult
from retrieval_lib.evaluation.seed_study import SeedStudy
from retrieval_lib.evaluation.uncertainty import paired_bootstrap
from retrieval_lib.infra import numerics
from retrieval_lib.infra.cache import source_digest

MODULES = ("retrieval_lib.evaluation.metrics",)


def _result(values, sessions=(10, 11, 12, 13)) -> EvaluationResult:
    return EvaluationResult(pd.DataFrame({
        "session_id": list(sessions), "user_id": [1, 1, 2, 3], "segment": ["head", "tail", "head", "torso"],
        "history": ["none", "short", "long", "long"], "recall@100": values, "mrr": [0.5] * len(sessions)}))


def _study() -> SeedStudy:
    results = {"a": {0: _result([1.0, 0.0, 1.0, 1.0]), 1: _result([0.0, 0.0, 1.0, 0.5])},
               "b": {0: _result([0.0, 0.0, 1.0, 0.0]), 1: _result([1.0, 1.0, 0.0, 0.25])}}
    return SeedStudy.collect("toy", "benchmarks/toy.py --seeds 0 1", "tiny", MODULES, results,
                             extra={"note": "hand-made"})


def test_collect_keeps_per_session_values_and_the_digest():
    study = _study()
    assert study.arms == ["a", "b"] and study.seeds == [0, 1]
    assert study.digest == source_digest(MODULES) and study.is_current()
    table = study.table("head")
    assert table.loc[0, "a"] == 1.0 and table.loc[1, "b"] == 0.5
    assert study.table().loc[1, "a"] == pytest.approx(1.5 / 4)
    # a run read back is an EvaluationResult: the paired bootstrap works on it
    d = paired_bootstrap(study.result("a", 0), study.result("b", 0), "recall@100", "all", n_boot=200)
    assert d.diff == pytest.approx(0.5)
    with pytest.raises(KeyError, match="no run"):
        study.result("a", 7)


def test_table_reads_each_runs_summary_once_and_agrees_with_its_value():
    study = _study()
    for group in ("all", "head", "torso", "tail", "history=long"):
        table = study.table(group)
        for arm in study.arms:
            for seed in study.seeds:
                expected = study.result(arm, seed).value("recall@100", group)
                assert table.loc[seed, arm] == expected or (np.isnan(expected) and np.isnan(table.loc[seed, arm]))
    assert study.summary("a", 0) is study.summary("a", 0)  # kept, not recomputed
    with pytest.raises(KeyError, match="no group 'nope'"):
        study.table("nope")


def test_save_and_load_round_trip_exactly(tmp_path):
    study = _study()
    path = tmp_path / "data" / "toy.json"
    study.save(path)
    loaded = SeedStudy.load(path)
    assert (loaded.name, loaded.command, loaded.preset, loaded.digest, loaded.extra, loaded.made_on) == (
        study.name, study.command, study.preset, study.digest, study.extra, study.made_on)
    assert loaded.made_on["cpu"] == numerics.cpu() and loaded.made_here()
    pd.testing.assert_frame_equal(loaded.sessions, study.sessions)
    for arm in study.arms:
        for seed in study.seeds:
            np.testing.assert_array_equal(loaded.values[arm][seed], study.values[arm][seed])
    assert '"1,0,1,1"' not in path.read_text() and "[1,0,1,1]" in path.read_text()  # 0/1 stay short


def test_a_stale_digest_is_detected(tmp_path):
    path = tmp_path / "toy.json"
    _study().save(path)
    data = json.loads(path.read_text())
    data["digest"] = "0" * 16
    path.write_text(json.dumps(data))
    assert not SeedStudy.load(path).is_current()


def test_bad_studies_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="benchmark"):
        SeedStudy.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text('{"name": "x"}')
    with pytest.raises(ValueError, match="not a seed study"):
        SeedStudy.load(tmp_path / "bad.json")
    with pytest.raises(ValueError, match="same, non-empty seeds"):
        SeedStudy.collect("x", "c", "tiny", MODULES, {"a": {0: _result([1.0] * 4)}, "b": {1: _result([1.0] * 4)}})
    with pytest.raises(ValueError, match="other sessions"):
        SeedStudy.collect("x", "c", "tiny", MODULES,
                          {"a": {0: _result([1.0] * 4)}, "b": {0: _result([1.0] * 4, sessions=(1, 2, 3, 4))}})
    with pytest.raises(ValueError, match="at least one arm"):
        SeedStudy("x", "c", "tiny", "recall@100", MODULES, "d", pd.DataFrame(), {})


def test_the_committed_seed_studies_ran_the_code_on_disk():
    """A study under book/data is stale once the library code it ran changes: rerun its command."""
    from pathlib import Path

    data = Path(__file__).resolve().parents[1] / "book" / "data"
    # every digest-stamped file with per-session values is a seed study (the A/A calibration has its own test)
    studies = [SeedStudy.load(p) for p in sorted(data.glob("*.json"))
               if all(f'"{key}"' in p.read_text() for key in ("digest", "sessions", "values"))]
    assert len(studies) >= 7, [s.name for s in studies]
    assert studies, "chapter 6's seed study (book/data/unified_seeds.json) is missing"
    for study in studies:
        assert study.is_current(), f"{study.name} is stale: rerun `.venv/bin/python {study.command}`"
        assert study.preset == "book" and len(study.seeds) >= 5, study.name
        assert study.made_on.get("cpu", "unknown") != "unknown", f"{study.name} does not say which CPU made it"
        script = data.parents[1] / study.command.split()[0]
        assert script.is_file() and script.parent.name == "benchmarks", study.command


def test_compare_is_the_multi_bootstrap_over_the_studys_seeds():
    study = _study()
    d = study.compare("a", "b", n_boot=500)
    # per seed, a - b over the four sessions: seed 0 (1 + 0 + 0 + 1) / 4, seed 1 (-1 - 1 + 1 + 0.25) / 4
    assert d.per_seed == pytest.approx((0.5, -0.1875)) and d.mean == pytest.approx(0.15625)
    assert d.n_seeds == 2 and d.n_buyers == 3
    assert d.ci_low <= d.mean <= d.ci_high
    with pytest.raises(KeyError, match="no run"):
        study.compare("a", "c")


def test_per_seed_is_each_seeds_own_buyers_only_bootstrap():
    study = _study()
    table = study.per_seed("a", "b", "all", n_boot=500)
    assert list(table.index) == [0, 1]
    assert table["diff"].tolist() == pytest.approx([0.5, -0.1875])
    for seed in (0, 1):
        d = paired_bootstrap(study.result("a", seed), study.result("b", seed), "recall@100", "all", n_boot=500)
        assert (table.loc[seed, "ci_low"], table.loc[seed, "ci_high"]) == (d.ci_low, d.ci_high)
    # head sessions are rows 0 and 2: seed 0 (1 - 0 + 1 - 1) / 2, seed 1 (0 - 1 + 1 - 0) / 2
    assert study.per_seed("a", "b", "head", n_boot=500)["diff"].tolist() == pytest.approx([0.5, 0.0])


def test_the_seed_interval_figure_shows_every_seed_and_both_pooled_intervals():
    import matplotlib

    matplotlib.use("Agg")
    from retrieval_lib.infra.plotting import seed_intervals

    study = _study()
    ax = seed_intervals(study.per_seed("a", "b", n_boot=500), study.compare("a", "b", n_boot=500), title="toy")
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0", "1", "all"]
    assert len(ax.containers) == 3  # per-seed dots, multi-bootstrap, t-interval
    assert ax.get_title() == "toy"


def test_least_noisy_adopts_the_quietest_procedure_that_keeps_the_mean():
    from retrieval_lib.evaluation.seed_study import least_noisy

    valid = pd.DataFrame({"constant": [0.30, 0.34, 0.32],   # mean 0.32, SD 0.02
                          "ema": [0.32, 0.33, 0.325],       # mean 0.325, SD 0.005: adopted
                          "cosine": [0.31, 0.31, 0.31]})    # SD 0 but mean 0.31 < 0.32: out
    assert least_noisy(valid, "constant") == "ema"
    assert least_noisy(valid[["constant", "cosine"]], "constant") == "constant"
    tie = pd.DataFrame({"constant": [0.25, 0.75], "ema": [0.5, 1.0]})  # same SD, higher mean: the baseline stays
    assert least_noisy(tie, "constant") == "constant"
    with pytest.raises(KeyError, match="swa"):
        least_noisy(valid, "swa")
    with pytest.raises(ValueError, match="2 seeds"):
        least_noisy(valid.head(1), "constant")
    with pytest.raises(ValueError, match="missing"):
        least_noisy(valid.assign(ema=[0.3, None, 0.3]), "constant")


def test_choose_procedure_follows_the_one_standard_error_rule_on_the_means():
    from retrieval_lib.evaluation.seed_study import choose_procedure

    valid = pd.DataFrame({"constant": [0.30, 0.34, 0.32],   # mean 0.32
                          "ema": [0.32, 0.36, 0.35],        # differences 0.02, 0.02, 0.03: mean 0.3433
                          "cosine": [0.31, 0.35, 0.33]})    # differences 0.01 throughout: mean 0.33
    # pooled residuals of the paired differences: (2 x 0.00333^2 + 0.00667^2) over 6 - 2 dof, per seed;
    # the standard error of a mean over 3 seeds
    se = np.sqrt((2 * (0.02 / 6) ** 2 + (0.04 / 6) ** 2) / 4) / np.sqrt(3)
    chosen, used = choose_procedure(valid, "constant")
    assert used == pytest.approx(se) and chosen == "ema"  # the best, alone within one SE of itself
    # a quieter procedure with a lower mean is not adopted for its SD (least_noisy would take it)
    quiet = valid.assign(cosine=[0.33, 0.33, 0.33])
    assert choose_procedure(quiet, "constant")[0] == "ema"
    # everything within one standard error: the baseline stays
    close = pd.DataFrame({"constant": [0.30, 0.34, 0.32], "ema": [0.305, 0.335, 0.33]})
    assert choose_procedure(close, "constant")[0] == "constant"
    with pytest.raises(KeyError, match="swa"):
        choose_procedure(valid, "swa")
    with pytest.raises(ValueError, match="2 seeds"):
        choose_procedure(valid.head(1), "constant")
    with pytest.raises(ValueError, match="missing"):
        choose_procedure(valid.assign(ema=[0.3, None, 0.3]), "constant")


def test_seed_spread_draws_every_seed_and_each_procedures_mean_and_sd():
    import matplotlib

    matplotlib.use("Agg")
    from retrieval_lib.infra.plotting import seed_spread

    table = pd.DataFrame({"constant": [0.30, 0.34, 0.32], "ema": [0.32, 0.33, 0.325]})
    ax = seed_spread(table, title="toy", ylabel="recall")
    assert [t.get_text() for t in ax.get_xticklabels()] == ["constant", "ema"]
    dots = [line for line in ax.get_lines() if line.get_marker() == "o"]
    assert [list(line.get_ydata()) for line in dots] == [[0.30, 0.34, 0.32], [0.32, 0.33, 0.325]]
    bars = ax.containers
    assert len(bars) == 2
    assert bars[0].lines[0].get_ydata()[0] == pytest.approx(0.32)  # the mean, with one SD either side
    assert ax.get_title() == "toy" and ax.get_ylabel() == "recall"


def test_reproduces_is_an_exact_per_session_match_of_one_seeds_row():
    study = _study()
    assert study.reproduces({"a": _result([1.0, 0.0, 1.0, 1.0]), "b": _result([0.0, 0.0, 1.0, 0.0])})
    assert study.reproduces({"a": _result([0.0, 0.0, 1.0, 0.5])}, seed=1)
    # one session off, another seed's row, other sessions, a seed the study lacks, nothing to check
    assert not study.reproduces({"a": _result([1.0, 0.0, 1.0, 0.5])})
    assert not study.reproduces({"a": _result([0.0, 0.0, 1.0, 0.5])}, seed=0)
    assert not study.reproduces({"a": _result([1.0, 0.0, 1.0, 1.0], sessions=(10, 11, 13, 12))})
    assert not study.reproduces({"a": _result([1.0, 0.0, 1.0, 1.0])}, seed=5)
    assert not study.reproduces({})
    # values are stored to six decimals: a run's 1/3 matches its stored 0.333333
    third = SeedStudy.collect("t", "c", "tiny", MODULES, {"a": {0: _result([1 / 3, 0.0, 1.0, 1.0])}})
    path_values = np.round(third.values["a"][0], 6)
    rounded = SeedStudy(third.name, third.command, third.preset, third.metric, third.modules, third.digest,
                        third.sessions, {"a": {0: path_values}})
    assert rounded.reproduces({"a": _result([1 / 3, 0.0, 1.0, 1.0])})
    with pytest.raises(KeyError):
        study.reproduces({"c": _result([1.0, 0.0, 1.0, 1.0])})


def test_consistent_allows_a_run_as_far_from_its_seed_as_the_seeds_are_from_each_other():
    study = _study()  # arm a: seed 0 mean 0.75, seed 1 mean 0.375, so a range of 0.375
    assert study.consistent({"a": _result([1.0, 0.0, 1.0, 1.0])})  # its own row
    assert study.consistent({"a": _result([1.0, 1.0, 1.0, 1.0])})  # 0.25 away
    # seed 0's standard error is 0.5 / 2 = 0.25, so two of them (0.5) allow more than the range
    assert study.consistent({"a": _result([0.0, 0.0, 1.0, 0.0])})  # 0.5 away: the edge
    assert not study.consistent({"a": _result([0.0, 0.0, 0.0, 0.0])})  # 0.75 away
    # seed 1 (values 0, 0, 1, 0.5): two standard errors 0.479, more than the range too
    assert not study.consistent({"a": _result([1.0, 1.0, 1.0, 1.0])}, seed=1)  # 0.625 away
    assert study.consistent({"a": _result([1.0, 0.5, 0.5, 0.5])}, seed=1)  # 0.25 away
    # a seed-free arm (the same values at every seed) has no range: its standard error decides
    flat = SeedStudy.collect("f", "c", "tiny", MODULES, {"z": {0: _result([1.0, 0.0, 1.0, 1.0]),
                                                               1: _result([1.0, 0.0, 1.0, 1.0])}})
    assert flat.consistent({"z": _result([1.0, 0.0, 0.0, 1.0])})  # 0.25 away, within 0.5
    assert not flat.consistent({"z": _result([0.0, 0.0, 0.0, 0.0])})
    # other sessions, a seed the study lacks, nothing to check, an arm it lacks
    assert not study.consistent({"a": _result([1.0, 0.0, 1.0, 1.0], sessions=(10, 11, 13, 12))})
    assert not study.consistent({"a": _result([1.0, 0.0, 1.0, 1.0])}, seed=5)
    assert not study.consistent({})
    with pytest.raises(KeyError):
        study.consistent({"c": _result([1.0, 0.0, 1.0, 1.0])})


def test_record_agreement_asks_for_exact_reproduction_only_on_the_studys_kind_of_cpu(tmp_path, monkeypatch):
    from retrieval_lib.evaluation.seed_study import record_agreement
    from retrieval_lib.infra import results

    path = tmp_path / "results.json"
    monkeypatch.setenv(results.RESULTS_ENV, str(path))
    monkeypatch.setattr(results, "_bound", {"preset": "tiny", "world": "toy"})
    here = _study()
    elsewhere = replace(here, made_on={**here.made_on, "cpu": "AuthenticAMD AMD EPYC 9R14 (a test)"})
    exact = {"a": _result([1.0, 0.0, 1.0, 1.0]), "b": _result([0.0, 0.0, 1.0, 0.0])}
    close = {"a": _result([1.0, 1.0, 1.0, 1.0]), "b": _result([0.0, 0.0, 1.0, 0.25])}
    cases = [(here, exact, "tiny", True), (here, close, "tiny", False),  # here: exact or nothing
             (elsewhere, close, "tiny", True), (elsewhere, exact, "tiny", True),  # elsewhere: within noise
             (elsewhere, {"a": _result([0.0, 0.0, 0.0, 0.0]), "b": _result([0.0, 0.0, 1.0, 0.0])}, "tiny",
              False),  # a too far
             (here, exact, "book", False)]  # another preset's study says nothing of this build
    for i, (study, runs, preset, agrees) in enumerate(cases):
        assert record_agreement(study, runs, f"k{i}", preset) is agrees, i
    recorded = results.load(path)
    assert [recorded[f"k{i}.agrees"] for i in range(len(cases))] == [1, 0, 1, 1, 0, 0]
    assert (recorded["k0.made_here"], recorded["k2.made_here"]) == (1, 0)
    assert (recorded["k2.reproduced"], recorded["k2.consistent"], recorded["k3.reproduced"]) == (0, 1, 1)
    assert all(recorded[f"k{i}.current"] == 1 for i in range(len(cases)))


def test_record_comparison_records_every_multi_bootstrap_figure(tmp_path, monkeypatch):
    from retrieval_lib.evaluation.seed_study import MULTIBOOT_FIGURES, record_comparison
    from retrieval_lib.infra import results

    path = tmp_path / "results.json"
    monkeypatch.setenv(results.RESULTS_ENV, str(path))
    monkeypatch.setattr(results, "_bound", {"preset": "tiny", "world": "toy"})
    study = _study()
    d = record_comparison(study, "a", "b", "all", "multiboot.toy.recall@100.all")
    recorded = results.load(path)
    assert d == study.compare("a", "b", "all")
    assert {f"multiboot.toy.recall@100.all.{name}" for name in MULTIBOOT_FIGURES} <= set(recorded)
    for name in MULTIBOOT_FIGURES:
        assert recorded[f"multiboot.toy.recall@100.all.{name}"] == pytest.approx(getattr(d, name))


def test_book_study_reads_book_data_and_says_whether_the_code_changed(tmp_path, capsys):
    from retrieval_lib.evaluation.seed_study import book_study

    _study().save(tmp_path / "toy.json")
    loaded = book_study("toy", tmp_path)
    assert loaded.name == "toy" and "library code unchanged" in capsys.readouterr().out
    stale = json.loads((tmp_path / "toy.json").read_text())
    stale["digest"] = "0" * 16
    (tmp_path / "stale.json").write_text(json.dumps(stale))
    book_study("stale", tmp_path)
    assert "CHANGED since it ran: rerun the study" in capsys.readouterr().out
    with pytest.raises(FileNotFoundError, match="run its benchmark script"):
        book_study("missing", tmp_path)


KEEP = np.array([True, False, True, True])


def test_subset_keeps_the_chosen_sessions_in_order_for_every_arm_and_seed():
    study = _study()
    sub = study.subset(KEEP)
    pd.testing.assert_frame_equal(sub.sessions, study.sessions[KEEP].reset_index(drop=True))
    assert sub.sessions["session_id"].tolist() == [10, 12, 13]
    assert sub.arms == study.arms and sub.seeds == study.seeds
    for arm in study.arms:
        for seed in study.seeds:
            np.testing.assert_array_equal(sub.values[arm][seed], study.values[arm][seed][KEEP])
    assert sub.values["b"][1].tolist() == [1.0, 0.0, 0.25]
    # the study itself is unchanged, and a plain list of booleans is a mask too
    assert len(study.sessions) == 4 and study.values["a"][0].tolist() == [1.0, 0.0, 1.0, 1.0]
    pd.testing.assert_frame_equal(study.subset(KEEP.tolist()).sessions, sub.sessions)


def test_a_comparison_on_a_subset_is_the_comparison_of_the_sliced_study():
    study = _study()
    sub = study.subset(KEEP)
    direct = SeedStudy(study.name, study.command, study.preset, study.metric, study.modules, study.digest,
                       study.sessions[KEEP].reset_index(drop=True),
                       {arm: {seed: v[KEEP] for seed, v in runs.items()} for arm, runs in study.values.items()},
                       study.extra)
    assert sub.compare("a", "b", n_boot=500, seed=3) == direct.compare("a", "b", n_boot=500, seed=3)
    # per seed, a - b over sessions 10, 12, 13: seed 0 (1 + 0 + 1) / 3, seed 1 (-1 + 1 + 0.25) / 3
    d = sub.compare("a", "b", n_boot=500)
    assert d.per_seed == pytest.approx((2 / 3, 0.25 / 3)) and d.n_buyers == 3
    head = [s.per_seed("a", "b", "head", n_boot=500) for s in (sub, direct)]
    pd.testing.assert_frame_equal(*head)
    pd.testing.assert_frame_equal(sub.table(), direct.table())


def test_subset_keeps_the_studys_name_digest_and_provenance():
    study = _study()
    sub = study.subset(KEEP)
    assert (sub.name, sub.command, sub.preset, sub.metric, sub.modules, sub.digest, sub.extra) == (
        study.name, study.command, study.preset, study.metric, study.modules, study.digest, study.extra)
    assert sub.is_current()


def test_a_bad_subset_mask_is_a_clear_error():
    study = _study()
    for bad in (np.array([1, 0, 1, 1]), np.array([1.0, 0.0, 1.0, 1.0]), np.array([True, False, True]),
                np.array([True] * 5), np.array([[True, False, True, True]]), np.array(True)):
        with pytest.raises(ValueError, match="one boolean per session"):
            study.subset(bad)
    with pytest.raises(ValueError, match="keeps no session"):
        study.subset(np.zeros(4, dtype=bool))


def test_the_pretrained_encoder_studys_full_arm_is_chapter_6s_full_model():
    """Chapter 5 compares MiniLM with the unified model of the pretrained_encoder study; chapter 6's build
    reproduces unified_seeds' seed-0 row. The two files' full arms must be the same runs, session for session."""
    from retrieval_lib.evaluation.seed_study import book_study

    encoder, unified = book_study("pretrained_encoder_seeds"), book_study("unified_seeds")
    assert set(encoder.seeds) <= set(unified.seeds)
    assert encoder.sessions["session_id"].equals(unified.sessions["session_id"])
    for seed in encoder.seeds:
        assert np.array_equal(encoder.values["full"][seed], unified.values["full"][seed]), seed
    gap = set(encoder.extra["no_shared_word"])
    assert 0 < len(gap) < len(encoder.sessions) and gap <= set(encoder.sessions["session_id"])
