"""How sure is a comparison? Paired bootstrap confidence intervals and the spread over training seeds.

Two retrievers evaluated on the same sessions differ by a mean over sessions; the paired bootstrap
resamples *buyers* (a buyer's sessions are correlated, so resampling sessions would understate the
uncertainty) and recomputes the difference each time. A confidence interval that excludes 0 is the
book's standard for a claim; the spread over training seeds shows how much of a difference the
training randomness alone can make. Comparing two *training procedures* needs both at once: the
multi-bootstrap of MultiBERTs (Sellam et al. 2021) resamples seeds and buyers together.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

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


@dataclass(frozen=True)
class MultiBootstrapDifference:
    """``a - b`` between two training procedures over paired seeds and the same buyers.

    ``mean`` averages the per-seed differences (``per_seed``); ``ci_low``/``ci_high`` is the multi-bootstrap
    percentile interval, ``share_at_most_zero`` the share of its replicates <= 0, and ``t_low``/``t_high``
    a t-interval over the per-seed differences, the cross-check (it ignores which buyers were drawn).
    """

    mean: float
    ci_low: float
    ci_high: float
    share_at_most_zero: float
    t_low: float
    t_high: float
    per_seed: tuple[float, ...]
    level: float
    n_seeds: int
    n_buyers: int

    @property
    def excludes_zero(self) -> bool:
        """Whether the multi-bootstrap interval lies entirely above or below 0."""
        return self.ci_low > 0 or self.ci_high < 0


def buyer_sums(values: np.ndarray, buyers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-buyer sums of ``values`` (seeds x sessions) and per-buyer session counts, buyers in sorted order."""
    ids, buyer = np.unique(np.asarray(buyers), return_inverse=True)
    values = np.atleast_2d(np.asarray(values, dtype=float))
    sums = np.stack([np.bincount(buyer, weights=row, minlength=ids.size) for row in values])
    return sums, np.bincount(buyer, minlength=ids.size).astype(float)


def multi_bootstrap_sums(diff_sums: np.ndarray, counts: np.ndarray, n_boot: int = 2000, level: float = 0.95,
                         seed: int = 0) -> tuple[float, float, float]:
    """The multi-bootstrap on per-buyer sums of a paired difference (seeds x buyers) and session counts.

    Each replicate draws seeds with replacement and buyers with replacement, one draw of each for both
    arms (the pairing is already in ``diff_sums``), and takes the mean difference over the drawn
    (seed, session) cells. Returns ``(low, high, share of replicates <= 0)``.
    """
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if n_boot < 100:
        raise ValueError(f"n_boot must be at least 100, got {n_boot}")
    n_seeds, n_buyers = diff_sums.shape
    if n_seeds < 2 or n_buyers < 2:
        raise ValueError(f"a multi-bootstrap needs at least 2 seeds and 2 buyers, got {n_seeds} and {n_buyers}")
    rng = np.random.default_rng(seed)
    boot = np.empty(n_boot)
    for start in range(0, n_boot, 250):  # chunks keep the buyer-weight matrix small
        m = min(250, n_boot - start)
        seed_w = rng.multinomial(n_seeds, np.full(n_seeds, 1 / n_seeds), size=m).astype(float)
        buyer_w = rng.multinomial(n_buyers, np.full(n_buyers, 1 / n_buyers), size=m).astype(float)
        numerator = np.einsum("bs,su,bu->b", seed_w, diff_sums, buyer_w)
        boot[start:start + m] = numerator / (n_seeds * (buyer_w @ counts))
    low, high = np.quantile(boot, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high), float(np.mean(boot <= 0))


def multi_bootstrap(a: Sequence[EvaluationResult], b: Sequence[EvaluationResult], metric: str = "recall@100",
                    group: str = "all", n_boot: int = 2000, level: float = 0.95,
                    seed: int = 0) -> MultiBootstrapDifference:
    """Paired multi-bootstrap of ``mean(a) - mean(b)`` over training seeds and buyers (Sellam et al. 2021).

    ``a[i]`` and ``b[i]`` are the two procedures trained with the same seed ``i`` and evaluated on the
    same sessions. Resampling seeds covers the training randomness that a buyers-only bootstrap of one
    seed leaves out; resampling buyers (all their sessions together, within ``group``) covers which
    buyers the test window happened to hold.
    """
    if len(a) != len(b):
        raise ValueError(f"paired seeds: got {len(a)} runs of one arm and {len(b)} of the other")
    if len(a) < 2:
        raise ValueError(f"a multi-bootstrap needs at least 2 paired seeds, got {len(a)}")
    rows = [(_rows(x, group), _rows(y, group)) for x, y in zip(a, b, strict=True)]
    first = rows[0][0]
    if len(first) == 0:
        raise ValueError(f"no sessions in group {group!r}")
    for ra, rb in rows:
        for r in (ra, rb):
            if metric not in r.columns:
                raise KeyError(f"no metric {metric!r}")
            if not np.array_equal(r["session_id"].to_numpy(), first["session_id"].to_numpy()):
                raise ValueError("multi_bootstrap needs every run evaluated on the same sessions")
    diff = np.stack([ra[metric].to_numpy(dtype=float) - rb[metric].to_numpy(dtype=float) for ra, rb in rows])
    sums, counts = buyer_sums(diff, first["user_id"].to_numpy())
    low, high, at_most_zero = multi_bootstrap_sums(sums, counts, n_boot, level, seed)
    per_seed = diff.mean(axis=1)
    t_low, t_high = seed_t_interval(per_seed, level)
    return MultiBootstrapDifference(float(per_seed.mean()), low, high, at_most_zero, t_low, t_high,
                                    tuple(float(d) for d in per_seed), level, len(per_seed), counts.size)


def seed_t_interval(per_seed: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Student-t interval of the mean of per-seed differences (seeds as the only source of noise)."""
    per_seed = np.asarray(per_seed, dtype=float)
    if per_seed.size < 2:
        raise ValueError("a t-interval needs at least 2 seeds")
    sem = per_seed.std(ddof=1) / np.sqrt(per_seed.size)
    if sem == 0:
        return float(per_seed.mean()), float(per_seed.mean())
    low, high = stats.t.interval(level, per_seed.size - 1, loc=per_seed.mean(), scale=sem)
    return float(low), float(high)


def seeds_needed(sd_diff: float, effect: float, level: float = 0.95, max_seeds: int = 10_000) -> int:
    """How many paired seeds a t-interval needs before a true difference of ``effect`` excludes 0.

    The smallest ``n >= 2`` whose half-width ``t(level, n - 1) * sd_diff / sqrt(n)`` is below
    ``|effect|``, where ``sd_diff`` is the seed standard deviation of the per-seed *difference*
    between two arms: ``var(a - b) = var(a) + var(b) - 2 cov(a, b)``, so arms whose per-seed results
    move together (paired seeds) need fewer seeds. A planning figure, not a power analysis: it assumes
    the measured difference is the true one.
    """
    if sd_diff < 0 or not np.isfinite(sd_diff):
        raise ValueError(f"sd_diff must be a finite standard deviation, got {sd_diff}")
    if effect == 0 or not np.isfinite(effect):
        raise ValueError(f"effect must be finite and non-zero, got {effect}")
    if sd_diff == 0:
        return 2
    n = np.arange(2, max_seeds + 1)
    half = stats.t.ppf(0.5 + level / 2, n - 1) * sd_diff / np.sqrt(n)
    enough = np.flatnonzero(half < abs(effect))
    if enough.size == 0:
        raise ValueError(f"more than {max_seeds} seeds needed for an effect of {effect} at SD {sd_diff}")
    return int(n[enough[0]])


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
