"""The one-standard-error rule of the book's validation choices (retrieval_lib.evaluation.choice)."""

import json
from pathlib import Path

import numpy as np
import pytest

from retrieval_lib.evaluation.choice import (
    SWEEP_BASE,
    SWEEP_COMBINATIONS,
    one_standard_error_choice,
    paired_difference_se,
    validation_sweep_se,
)


def test_paired_difference_se_by_hand():
    # variant a: differences +0.02, +0.04 (mean 0.03, residuals -0.01, +0.01);
    # variant b: differences 0.00, -0.02 (mean -0.01, residuals +0.01, -0.01); 4 residuals, 2 dof
    runs = {("base", 0): 0.5, ("base", 1): 0.6, ("a", 0): 0.52, ("a", 1): 0.64, ("b", 0): 0.5, ("b", 1): 0.58}
    assert paired_difference_se(runs, "base", ["a", "b"], (0, 1)) == pytest.approx(np.sqrt(4e-4 / 2))


def test_a_constant_shift_has_no_noise():
    runs = {("base", s): 0.1 * s for s in range(3)} | {("a", s): 0.1 * s + 0.05 for s in range(3)}
    assert paired_difference_se(runs, "base", ["a"], (0, 1, 2)) == pytest.approx(0.0)


def test_paired_difference_se_needs_two_seeds_and_a_variant():
    runs = {("base", 0): 0.5, ("a", 0): 0.6}
    with pytest.raises(ValueError, match="two seeds"):
        paired_difference_se(runs, "base", ["a"], (0,))
    with pytest.raises(ValueError, match="two seeds"):
        paired_difference_se(runs, "base", [], (0, 1))


def test_the_rule_keeps_the_fewest_changes_within_one_standard_error():
    means = {"current": 0.80, "one change": 0.805, "two changes": 0.81}
    changes = {"current": 0, "one change": 1, "two changes": 2}
    assert one_standard_error_choice(means, changes, se=0.011) == "current"  # all within: no change
    assert one_standard_error_choice(means, changes, se=0.006) == "one change"  # current is out
    assert one_standard_error_choice(means, changes, se=0.0) == "two changes"  # the best alone


def test_a_tie_in_changes_goes_to_the_better_mean():
    means = {"x": 0.70, "y": 0.72, "z": 0.725}
    changes = {"x": 1, "y": 1, "z": 2}
    assert one_standard_error_choice(means, changes, se=0.03) == "y"


def test_the_rule_rejects_bad_input():
    with pytest.raises(ValueError, match="same"):
        one_standard_error_choice({"a": 0.5}, {"b": 0}, 0.01)
    with pytest.raises(ValueError, match="same"):
        one_standard_error_choice({}, {}, 0.01)
    with pytest.raises(ValueError, match=">= 0"):
        one_standard_error_choice({"a": 0.5}, {"a": 0}, -0.01)


def test_the_committed_sweep_gives_the_standard_error_the_decisions_quote():
    rows = json.loads((Path(__file__).resolve().parents[1] / "book" / "data" / "choices"
                       / "validation_choices.json").read_text())
    assert any(r["variant"] == SWEEP_BASE for r in rows)
    assert any(r["variant"].startswith(SWEEP_COMBINATIONS) for r in rows)  # left out of the estimate
    assert validation_sweep_se(rows) == pytest.approx(0.0064, abs=5e-5)  # docs/decisions.md
    with pytest.raises(ValueError, match="base"):
        validation_sweep_se([r for r in rows if r["variant"] != SWEEP_BASE])
