"""How sure is a comparison? Paired bootstrap confidence intervals and the spread over training seeds.

Two retrievers evaluated on the same sessions differ by a mean over sessions; the paired bootstrap
resamples *buyers* (a buyer's sessions are correlated, so resampling sessions would understate the
uncertainty) and recomputes the difference each time. A confidence interval that excludes 0 is the
book's standard for a claim; the spread over training seeds shows how much of a difference the
training randomness alone can make.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from retrieval_lib.evaluation.offline import EvaluationResult


@dataclass(frozen=True)
class PairedDifference:
    """``a - b`` in one metric over the same sessions, with a bootstrap confidence interval."""

    diff: float
    ci_low: float
    ci_high: float
    level: float
    n_sessions: int
    n_buyers: int

    @property
    def excludes_zero(self) -> bool:
        """Whether the interval lies entirely above or below 0."""
        return self.ci_low > 0 or self.ci_high < 0


def _rows(result: EvaluationResult, group: str) -> pd.DataFrame:
    per = result.per_session
    if group == "all":
        return per
    if group.startswith("history="):
        return per[per["history"] == group.split("=", 1)[1]]
    return per[per["segment"] == group]


def paired_bootstrap(a: EvaluationResult, b: EvaluationResult, metric: str = "recall@100", group: str = "all",
                     n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> PairedDifference:
    """Percentile bootstrap CI of ``mean(a) - mean(b)`` over the sessions of ``group``, resampling buyers.

    ``a`` and ``b`` must be evaluations of the same sessions (same ``EvaluationSet``). ``group`` is
    ``all``, a query segment (``head``) or a history bin (``history=long``), as in
    :meth:`EvaluationResult.value`.
    """
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if n_boot < 100:
        raise ValueError(f"n_boot must be at least 100, got {n_boot}")
    ra, rb = _rows(a, group), _rows(b, group)
    if metric not in ra.columns:
        raise KeyError(f"no metric {metric!r}; have {[c for c in ra.columns if '@' in c or c == 'mrr']}")
    if len(ra) != len(rb) or not np.array_equal(ra["session_id"].to_numpy(), rb["session_id"].to_numpy()):
        raise ValueError("paired_bootstrap needs two evaluations of the same sessions (use one EvaluationSet)")
    if len(ra) == 0:
        raise ValueError(f"no sessions in group {group!r}")
    diff = ra[metric].to_numpy(dtype=float) - rb[metric].to_numpy(dtype=float)
    buyers = ra["user_id"].to_numpy()
    low, high = buyer_bootstrap(buyers, [diff, np.ones_like(diff)], lambda s: s[0] / s[1], n_boot, level, seed)
    return PairedDifference(float(diff.mean()), low, high, level, len(diff), len(np.unique(buyers)))


def buyer_bootstrap(buyers: np.ndarray, columns: list[np.ndarray], statistic: Callable[[list[float]], float],
                    n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile interval of ``statistic`` over bootstrap resamples of *buyers* (all their sessions together).

    ``columns`` are per-session values; each resample draws buyers with replacement and hands
    ``statistic`` the resampled sum of every column (e.g. ``s[0] / s[1]`` for a mean, or the ratio of
    two arms' purchases minus 1 for a lift). A resample where the statistic is undefined (NaN, e.g. no
    purchases in the denominator) is left out. Returns ``(low, high)``.
    """
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if n_boot < 100:
        raise ValueError(f"n_boot must be at least 100, got {n_boot}")
    ids, buyer = np.unique(np.asarray(buyers), return_inverse=True)
    if ids.size == 0:
        raise ValueError("no sessions to resample")
    sums = [np.bincount(buyer, weights=np.asarray(c, dtype=float), minlength=ids.size) for c in columns]
    rng = np.random.default_rng(seed)
    boot = np.empty(n_boot)
    for i in range(n_boot):
        weight = np.bincount(rng.integers(ids.size, size=ids.size), minlength=ids.size)
        boot[i] = statistic([float(weight @ s) for s in sums])
    boot = boot[~np.isnan(boot)]
    if boot.size < n_boot / 2:
        raise ValueError(f"the statistic is undefined in {n_boot - boot.size} of {n_boot} resamples")
    low, high = np.quantile(boot, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


def seed_runs(run: Callable[[int], EvaluationResult], seeds: Iterable[int] = (0, 1, 2), metric: str = "recall@100",
              groups: tuple[str, ...] = ("all", "head", "torso", "tail")) -> pd.DataFrame:
    """Evaluate ``run(seed)`` (train with that seed, cached, and evaluate) for each seed: one row per seed.

    ``describe()`` of the result, or its ``max - min`` per column, is the seed spread a claim is read
    against.
    """
    rows = []
    for seed in seeds:
        result = run(int(seed))
        rows.append({"seed": int(seed), **{g: result.value(metric, g) for g in groups}})
    if not rows:
        raise ValueError("seed_runs needs at least one seed")
    return pd.DataFrame(rows).set_index("seed")
