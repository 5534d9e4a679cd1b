"""The verdict on the paper's claims: judged by the multi-bootstrap interval of a committed seed study."""

import numpy as np
import pandas as pd
import pytest

from retrieval_lib.evaluation.offline import EvaluationResult
from retrieval_lib.evaluation.seed_study import BOOK_DATA, SeedStudy
from retrieval_lib.evaluation.verdict import (
    HOLDS,
    NOT_ESTABLISHED,
    PAPER_CLAIMS,
    REVERSED,
    VERDICTS,
    PaperClaim,
    judge,
    verdict_table,
)

MODULES = ("retrieval_lib.evaluation.metrics",)
N_BUYERS = 60


def _result(values: np.ndarray) -> EvaluationResult:
    n = len(values)
    return EvaluationResult(pd.DataFrame({
        "session_id": np.arange(n), "user_id": np.arange(n) % N_BUYERS,
        "segment": np.where(np.arange(n) % 2 == 0, "head", "tail"), "history": ["long"] * n,
        "recall@100": values}))


def _toy_study(tmp_path) -> None:
    """Arms ``base``, ``better`` (+0.2 everywhere), ``worse`` (-0.2) and ``same`` (base plus pure noise)."""
    rng = np.random.default_rng(0)
    runs = {arm: {} for arm in ("base", "better", "worse", "same")}
    for seed in range(5):
        base = rng.uniform(0.3, 0.7, 240)
        runs["base"][seed] = _result(base)
        runs["better"][seed] = _result(base + 0.2)
        runs["worse"][seed] = _result(base - 0.2)
        runs["same"][seed] = _result(base + rng.normal(0, 0.2, 240))
    SeedStudy.collect("toy_seeds", "benchmarks/seed_study.py --study toy", "tiny", MODULES, runs).save(
        tmp_path / "toy_seeds.json")


def _claim(key: str, better: str, worse: str, group: str = "all") -> PaperClaim:
    return PaperClaim(key, f"{better} beats {worse}", "paper", 6, "toy_seeds", better, worse, group)


def test_judge_reads_the_interval_against_zero():
    assert judge(0.01, 0.05) == HOLDS
    assert judge(-0.05, -0.01) == REVERSED
    assert judge(-0.01, 0.02) == NOT_ESTABLISHED
    # an interval that touches 0 has not excluded it
    assert judge(0.0, 0.03) == NOT_ESTABLISHED and judge(-0.03, 0.0) == NOT_ESTABLISHED
    assert set(VERDICTS) == {HOLDS, NOT_ESTABLISHED, REVERSED}
    with pytest.raises(ValueError, match="ci_low <= ci_high"):
        judge(0.2, 0.1)
    with pytest.raises(ValueError):
        judge(float("nan"), 0.1)


def test_verdict_table_on_a_hand_made_study(tmp_path):
    _toy_study(tmp_path)
    claims = (_claim("up", "better", "base"), _claim("down", "worse", "base", "tail"),
              _claim("flat", "same", "base"))
    table = verdict_table(claims, tmp_path, n_boot=500)
    assert list(table.index) == ["up", "down", "flat"]
    assert table.loc["up", "mean"] == pytest.approx(0.2) and table.loc["down", "mean"] == pytest.approx(-0.2)
    assert table.loc["up", "verdict"] == HOLDS and table.loc["up", "verdict_name"] == "holds here"
    assert table.loc["down", "verdict"] == REVERSED and table.loc["down", "group"] == "tail"
    assert table.loc["flat", "verdict"] == NOT_ESTABLISHED
    assert (table["n_seeds"] == 5).all()
    assert table.loc["up", "comparison"] == "better - base" and table.loc["up", "metric"] == "recall@100"
    assert (table["ci_low"] <= table["mean"]).all() and (table["mean"] <= table["ci_high"]).all()


def test_verdict_table_matches_the_studys_own_comparison(tmp_path):
    _toy_study(tmp_path)
    table = verdict_table((_claim("flat", "same", "base", "head"),), tmp_path, n_boot=300)
    d = SeedStudy.load(tmp_path / "toy_seeds.json").compare("same", "base", "head", n_boot=300)
    assert (table.loc["flat", "ci_low"], table.loc["flat", "ci_high"]) == (d.ci_low, d.ci_high)


def test_bad_claims_are_clear_errors(tmp_path):
    _toy_study(tmp_path)
    with pytest.raises(KeyError, match="no arm"):
        verdict_table((_claim("x", "better", "missing"),), tmp_path)
    with pytest.raises(FileNotFoundError, match="benchmark"):
        verdict_table((PaperClaim("x", "c", "paper", 6, "nowhere", "a", "b", "all"),), tmp_path)
    with pytest.raises(ValueError, match="no claims"):
        verdict_table((), tmp_path)
    with pytest.raises(ValueError, match="source"):
        PaperClaim("x", "c", "blog", 6, "toy_seeds", "a", "b", "all")
    with pytest.raises(ValueError, match="itself"):
        PaperClaim("x", "c", "paper", 6, "toy_seeds", "a", "a", "all")


def test_every_paper_claim_names_a_committed_study_and_its_arms():
    keys = [c.key for c in PAPER_CLAIMS]
    assert len(keys) == len(set(keys))
    assert [c.chapter for c in PAPER_CLAIMS] == sorted(c.chapter for c in PAPER_CLAIMS)
    for claim in PAPER_CLAIMS:
        study = SeedStudy.load(BOOK_DATA / f"{claim.study}.json")
        assert {claim.better, claim.worse} <= set(study.arms), claim.key
        assert claim.group in set(study.sessions["segment"]) | {"all"}, claim.key
        assert len(study.seeds) >= 5, claim.key
