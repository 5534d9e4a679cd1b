"""The one-standard-error rule for the book's validation choices (``docs/decisions.md``).

Among variants scored on the validation window's logged purchases, take the fewest changes to the
current setting whose mean score lies within one standard error of the best mean (Breiman et al. 1984;
Hastie, Tibshirani and Friedman 2009, section 7.10). A difference within one standard error is one the
sweep cannot tell from training-seed noise, so the rule does not move a setting for it; among the
settings it cannot tell apart, it keeps the one closest to what the book already uses.

The standard error comes from the sweeps themselves: the first-stage sweep of
``benchmarks/validation_choices.py`` ran every variant at two seeds, and the spread of each variant's
paired per-seed differences to the base, around their mean, is the noise of one paired single-seed
difference (:func:`paired_difference_se`, :func:`validation_sweep_se`).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import TypeVar

import numpy as np

K = TypeVar("K", bound=Hashable)

#: The first-stage sweep's base (the paper's query side as chosen before the sweep) and the prefix of its
#: second-stage rows (combinations run after the first stage), which the standard error leaves out.
SWEEP_BASE = "paper's query side (request mask, zero start, graph dropout 0.5)"
SWEEP_COMBINATIONS = "query graph + token means,"


def paired_difference_se(runs: Mapping[tuple[str, int], float], base: str, variants: Iterable[str],
                         seeds: Sequence[int]) -> float:
    """The pooled standard deviation of one paired single-seed difference to ``base``.

    ``runs`` maps (variant, seed) to a score. Each variant's differences to the base at ``seeds`` are
    centred on their own mean (a variant may truly differ), and the squared residuals are pooled over
    variants with one degree of freedom lost per variant.
    """
    variants = list(variants)
    if len(seeds) < 2 or not variants:
        raise ValueError("a standard error needs at least two seeds and one variant")
    residuals = []
    for v in variants:
        d = np.array([runs[v, s] - runs[base, s] for s in seeds], dtype=float)
        residuals.extend(d - d.mean())
    dof = len(residuals) - len(variants)
    return float(np.sqrt(np.sum(np.square(residuals)) / dof))


def validation_sweep_se(rows: Sequence[Mapping[str, object]], score: str = "all") -> float:
    """The standard error of one paired single-seed difference, from the first-stage sweep's ``rows``.

    ``rows`` are ``book/data/choices/validation_choices.json``'s (``variant``, ``seed``, scores); the
    variants run at seeds 0 and 1 against :data:`SWEEP_BASE`, without the combinations.
    """
    runs = {(str(r["variant"]), int(r["seed"])): float(r[score]) for r in rows}
    if not any(v == SWEEP_BASE for v, _ in runs):
        raise ValueError(f"the sweep has no base row {SWEEP_BASE!r}")
    first_stage = {v for v, _ in runs if v != SWEEP_BASE and not v.startswith(SWEEP_COMBINATIONS)}
    return paired_difference_se(runs, SWEEP_BASE, sorted(first_stage), (0, 1))


def one_standard_error_choice(means: Mapping[K, float], changes: Mapping[K, int], se: float) -> K:
    """The variant the rule picks: fewest ``changes`` among those within ``se`` of the best mean.

    A tie in changes goes to the better mean. ``means`` and ``changes`` have the same keys.
    """
    if not means or set(means) != set(changes):
        raise ValueError("means and changes need the same, non-empty set of variants")
    if not se >= 0:
        raise ValueError(f"the standard error must be >= 0, got {se}")
    best = max(means.values())
    band = [k for k in means if means[k] >= best - se]
    fewest = min(changes[k] for k in band)
    return max((k for k in band if changes[k] == fewest), key=lambda k: means[k])
