"""Seed studies too costly for every book build: per-session results of several arms at paired seeds, on disk.

A study trains each arm (a training procedure, e.g. the full model or one ablation) at the same seeds
and evaluates every run on the same sessions. A benchmark script runs it once and commits the file
under ``book/data/``, with the command, the preset and a digest of the library code it ran; a chapter
reads it. The file is current only while the digest matches the code, and the build's own seed-0 runs
must reproduce its seed-0 row exactly, which the book's tests check.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from retrieval_lib.evaluation.choice import one_standard_error_choice, paired_difference_se
from retrieval_lib.evaluation.offline import EvaluationResult
from retrieval_lib.evaluation.uncertainty import MultiBootstrapDifference, multi_bootstrap, paired_bootstrap
from retrieval_lib.infra import numerics, results
from retrieval_lib.infra.cache import source_digest
from retrieval_lib.infra.committed import read_json, write_json

#: The figures of a multi-bootstrap comparison a chapter records (see :func:`record_comparison`).
MULTIBOOT_FIGURES: tuple[str, ...] = ("mean", "ci_low", "ci_high", "share_at_most_zero", "t_low", "t_high")
#: Where the book's committed studies live: ``book/data/`` of the repository the package runs from.
BOOK_DATA = Path(__file__).resolve().parents[2] / "book" / "data"

#: Columns of a study's sessions: what an :class:`EvaluationResult` groups by.
SESSION_COLUMNS: tuple[str, ...] = ("session_id", "user_id", "segment", "history")


@dataclass(frozen=True)
class SeedStudy:
    """``values[arm][seed]``: one ``metric`` value per session of ``sessions``, for every arm and seed."""

    name: str
    command: str
    preset: str
    metric: str
    modules: tuple[str, ...]
    digest: str
    sessions: pd.DataFrame
    values: dict[str, dict[int, np.ndarray]]
    extra: dict[str, object] = field(default_factory=dict)
    made_on: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.values:
            raise ValueError("a seed study needs at least one arm")
        seeds = {arm: sorted(runs) for arm, runs in self.values.items()}
        if len({tuple(s) for s in seeds.values()}) != 1 or not next(iter(seeds.values())):
            raise ValueError(f"every arm needs the same, non-empty seeds (paired), got {seeds}")
        for arm, runs in self.values.items():
            for seed, v in runs.items():
                if len(v) != len(self.sessions):
                    raise ValueError(f"{arm} at seed {seed} has {len(v)} values for {len(self.sessions)} sessions")

    @classmethod
    def collect(cls, name: str, command: str, preset: str, modules: tuple[str, ...],
                results: dict[str, dict[int, EvaluationResult]], metric: str = "recall@100",
                extra: dict[str, object] | None = None) -> SeedStudy:
        """A study from evaluations of the same sessions (``results[arm][seed]``), stamped with the code digest."""
        first = next(iter(next(iter(results.values())).values())).per_session
        sessions = first[list(SESSION_COLUMNS)].reset_index(drop=True)
        values = {}
        for arm, runs in results.items():
            values[arm] = {}
            for seed, result in runs.items():
                per = result.per_session
                if not np.array_equal(per["session_id"].to_numpy(), sessions["session_id"].to_numpy()):
                    raise ValueError(f"{arm} at seed {seed} was evaluated on other sessions")
                values[arm][int(seed)] = per[metric].to_numpy(dtype=float)
        return cls(name, command, preset, metric, tuple(modules), source_digest(tuple(modules)), sessions, values,
                   dict(extra or {}), numerics.describe())

    @property
    def arms(self) -> list[str]:
        """The study's arms, in the order they were collected."""
        return list(self.values)

    @property
    def seeds(self) -> list[int]:
        """The paired seeds, ascending."""
        return sorted(next(iter(self.values.values())))

    def is_current(self) -> bool:
        """Whether the library code the study ran is still the code on disk."""
        return self.digest == source_digest(self.modules)

    def result(self, arm: str, seed: int) -> EvaluationResult:
        """One run as an :class:`EvaluationResult` (its one metric), e.g. for a paired bootstrap."""
        if arm not in self.values or seed not in self.values[arm]:
            raise KeyError(f"no run {arm!r} at seed {seed}; have arms {self.arms} at seeds {self.seeds}")
        return EvaluationResult(self.sessions.assign(**{self.metric: self.values[arm][seed]}))

    @functools.cached_property
    def _summaries(self) -> dict[tuple[str, int], pd.DataFrame]:
        return {}

    def summary(self, arm: str, seed: int) -> pd.DataFrame:
        """One run's :meth:`EvaluationResult.summary` (computed once per run and kept: tables ask often)."""
        key = (arm, seed)
        if key not in self._summaries:
            self._summaries[key] = self.result(arm, seed).summary()
        return self._summaries[key]

    def compare(self, a: str, b: str, group: str = "all", **kwargs) -> MultiBootstrapDifference:
        """Arm ``a`` minus arm ``b`` over the study's paired seeds and buyers: the multi-bootstrap.

        ``kwargs`` go to :func:`~retrieval_lib.evaluation.uncertainty.multi_bootstrap` (``n_boot``,
        ``level``, ``seed``).
        """
        return multi_bootstrap([self.result(a, s) for s in self.seeds], [self.result(b, s) for s in self.seeds],
                               self.metric, group, **kwargs)

    def per_seed(self, a: str, b: str, group: str = "all", **kwargs) -> pd.DataFrame:
        """Arm ``a`` minus arm ``b`` at each seed alone, with that seed's paired bootstrap over buyers.

        One row per seed (``diff``, ``ci_low``, ``ci_high``): what a study of one training run would
        report at each seed. ``kwargs`` go to :func:`~retrieval_lib.evaluation.uncertainty.paired_bootstrap`.
        """
        rows = {}
        for seed in self.seeds:
            d = paired_bootstrap(self.result(a, seed), self.result(b, seed), self.metric, group, **kwargs)
            rows[seed] = {"diff": d.diff, "ci_low": d.ci_low, "ci_high": d.ci_high}
        return pd.DataFrame.from_dict(rows, orient="index").rename_axis("seed")

    def made_here(self) -> bool:
        """Whether the study ran on a CPU of this machine's vendor and model (``made_on["cpu"]``).

        Only there can a build repeat its figures exactly: MKL's code path, and so the last digits of
        every training step, depend on the CPU's vendor (``infra.numerics.cpu``).
        """
        return self.made_on.get("cpu") == numerics.cpu()

    def consistent(self, runs: dict[str, EvaluationResult], seed: int = 0) -> bool:
        """Whether ``runs`` (arm -> an evaluation on the study's sessions) agree with the study within seed noise.

        The check for a build on another kind of CPU, where :meth:`reproduces` cannot hold: each arm's
        mean ``metric`` may differ from the study's run at ``seed`` by at most the range of the arm's
        means over the study's seeds (a run as far from its own seed as seeds are from each other), or
        by two standard errors of that run's mean over sessions where that is more (an arm without a
        training seed, such as a zero-shot encoder, has no seed range, and another CPU still moves
        its last digits). False for other sessions; a ``KeyError`` for an arm the study lacks.
        """
        values = self._aligned(runs, seed)
        if values is None:
            return False
        for arm, value in values.items():
            means = np.array([v.mean() for v in self.values[arm].values()])
            own = self.values[arm][seed]
            allowed = max(np.ptp(means), 2 * own.std(ddof=1) / np.sqrt(own.size) if own.size > 1 else 0.0)
            if abs(value.mean() - own.mean()) > allowed:
                return False
        return True

    def reproduces(self, runs: dict[str, EvaluationResult], seed: int = 0) -> bool:
        """Whether ``runs`` (arm -> an evaluation on the study's sessions) equal its row at ``seed`` exactly.

        A book build trains each arm once at seed 0; equal per-session values at every session show
        that the committed file came from this code on this kind of machine (values as stored, six
        decimals).
        """
        values = self._aligned(runs, seed)
        return values is not None and all(np.array_equal(np.round(value, 6), self.values[arm][seed])
                                          for arm, value in values.items())

    def _aligned(self, runs: dict[str, EvaluationResult], seed: int) -> dict[str, np.ndarray] | None:
        """Each run's ``metric`` per session, or ``None`` if there is nothing to compare with ``seed``'s row.

        ``None`` when the study lacks ``seed``, ``runs`` is empty, or a run covers other sessions.
        """
        if seed not in self.seeds or not runs:
            return None
        sessions = self.sessions["session_id"].to_numpy()
        if any(not np.array_equal(run.per_session["session_id"].to_numpy(), sessions) for run in runs.values()):
            return None
        return {arm: run.per_session[self.metric].to_numpy(dtype=float) for arm, run in runs.items()}

    def subset(self, keep: np.ndarray) -> SeedStudy:
        """The study on the sessions where ``keep`` (one boolean per session) is true, e.g. a slice of queries.

        Every arm and seed keeps the same sessions, so comparisons stay paired; the digest stays the
        study's own.
        """
        keep = np.asarray(keep)
        if keep.dtype != bool or keep.shape != (len(self.sessions),):
            raise ValueError(f"need one boolean per session ({len(self.sessions)}), got {keep.dtype} {keep.shape}")
        if not keep.any():
            raise ValueError("the subset keeps no session")
        values = {arm: {seed: v[keep] for seed, v in runs.items()} for arm, runs in self.values.items()}
        return replace(self, sessions=self.sessions[keep].reset_index(drop=True), values=values)

    def table(self, group: str = "all") -> pd.DataFrame:
        """Seeds x arms: the mean ``metric`` of each run over the sessions of ``group``."""
        if group not in self.summary(self.arms[0], self.seeds[0]).index:
            raise KeyError(f"no group {group!r}; have {list(self.summary(self.arms[0], self.seeds[0]).index)}")
        return pd.DataFrame({arm: {s: float(self.summary(arm, s).loc[group, self.metric]) for s in self.seeds}
                             for arm in self.arms}).rename_axis("seed")

    def save(self, path: str | Path) -> None:
        """Write the study as JSON (values rounded to 6 decimals; 0/1 values stay short)."""
        def compact(v: np.ndarray) -> list[float | int]:
            return [int(x) if float(x).is_integer() else round(float(x), 6) for x in v]

        data = {"name": self.name, "command": self.command, "preset": self.preset, "metric": self.metric,
                "modules": list(self.modules), "digest": self.digest, "extra": self.extra, "made_on": self.made_on,
                "sessions": {c: self.sessions[c].tolist() for c in SESSION_COLUMNS},
                "values": {arm: {str(s): compact(v) for s, v in runs.items()} for arm, runs in self.values.items()}}
        write_json(data, path)

    @classmethod
    def load(cls, path: str | Path) -> SeedStudy:
        """Read a study written by :meth:`save` (a clear error if the file is missing or malformed)."""
        data = read_json(path, "seed study", "run its benchmark script to write it")
        try:
            sessions = pd.DataFrame({c: data["sessions"][c] for c in SESSION_COLUMNS})
            values = {arm: {int(s): np.asarray(v, dtype=float) for s, v in runs.items()}
                      for arm, runs in data["values"].items()}
            return cls(data["name"], data["command"], data["preset"], data["metric"], tuple(data["modules"]),
                       data["digest"], sessions, values, data.get("extra", {}), data.get("made_on", {}))
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{path} is not a seed study: {err}") from err


def book_study(name: str, directory: str | Path | None = None) -> SeedStudy:
    """The committed study ``book/data/<name>.json``, with a warning printed if its code has changed."""
    study = SeedStudy.load(Path(directory or BOOK_DATA) / f"{name}.json")
    state = "unchanged" if study.is_current() else "CHANGED since it ran: rerun the study"
    print(f"{study.command}: {study.preset} preset, seeds {study.seeds}; library code {state}")
    return study


def record_agreement(study: SeedStudy, runs: dict[str, EvaluationResult], key: str, preset: str,
                     seed: int = 0) -> bool:
    """Record whether this build's own runs at ``seed`` agree with the committed ``study``, under ``key``.

    ``runs`` maps arms to this build's evaluations; ``preset`` is the build's. Records ``<key>.current``
    (the study ran the library code on disk), ``<key>.made_here`` (it ran on this machine's kind of CPU),
    ``<key>.reproduced`` (the runs equal its row exactly), ``<key>.consistent`` (each arm's mean within
    the study's seed range, :meth:`SeedStudy.consistent`) and ``<key>.agrees``: current, on the same
    preset, and reproduced where the study was made on this kind of CPU, consistent elsewhere. A
    training run repeats its last digits only on the CPU vendor it ran on (MKL picks its code path by
    vendor), so exact reproduction is what a build on the study's CPU must show, and agreement within
    seed noise what a build on another CPU can show. Returns ``agrees``.
    """
    same_preset = study.preset == preset
    figures = {"current": study.is_current(), "made_here": study.made_here(),
               "reproduced": same_preset and study.reproduces(runs, seed),
               "consistent": same_preset and study.consistent(runs, seed)}
    figures["agrees"] = figures["current"] and (figures["reproduced"] if figures["made_here"]
                                                else figures["consistent"])
    for name, value in figures.items():
        results.record(f"{key}.{name}", int(value))
    return figures["agrees"]


def record_comparison(study: SeedStudy, a: str, b: str, group: str, key: str) -> MultiBootstrapDifference:
    """Compare arm ``a`` with ``b`` on ``group`` (:meth:`SeedStudy.compare`) and record its figures under ``key``.

    Records ``<key>.<figure>`` for each of :data:`MULTIBOOT_FIGURES`, so every chapter quotes the
    same figures of a comparison of training procedures.
    """
    d = study.compare(a, b, group)
    for name in MULTIBOOT_FIGURES:
        results.record(f"{key}.{name}", getattr(d, name))
    return d


def least_noisy(valid: pd.DataFrame, baseline: str) -> str:
    """The training procedure to adopt: the lowest seed SD among those whose mean is not below ``baseline``'s.

    ``valid`` is seeds x procedures of an observable score (logged validation recall, never latent
    labels). A remedy for seed noise is worth adopting only if it does not cost accuracy: a procedure
    whose mean falls below the baseline's is out, and the baseline stays unless another one is less
    noisy (ties keep the baseline).
    """
    if baseline not in valid.columns:
        raise KeyError(f"no procedure {baseline!r} among {list(valid.columns)}")
    if len(valid) < 2:
        raise ValueError(f"a seed SD needs at least 2 seeds, got {len(valid)}")
    if valid.isna().any().any():
        raise ValueError("the validation scores have missing values")
    mean, sd = valid.mean(), valid.std(ddof=1)
    eligible = [c for c in valid.columns if c == baseline or mean[c] >= mean[baseline]]
    best = min(eligible, key=lambda c: (sd[c], c != baseline))
    return best


def choose_procedure(valid: pd.DataFrame, baseline: str) -> tuple[str, float]:
    """The training procedure the book's one-standard-error rule adopts, and the standard error it used.

    ``valid`` is seeds x procedures of an observable score (logged validation recall). The rule of
    :mod:`~retrieval_lib.evaluation.choice`: the fewest changes to ``baseline`` (the baseline itself, or
    any one other procedure) among the procedures whose mean lies within one standard error of the best
    mean, a tie going to the better mean. The standard error is that of a mean paired difference to the
    baseline over the seeds (pooled over the other procedures). Unlike :func:`least_noisy`, it does not
    follow the smallest of several seed SDs, which a few seeds cannot tell apart.
    """
    if baseline not in valid.columns:
        raise KeyError(f"no procedure {baseline!r} among {list(valid.columns)}")
    if len(valid) < 2 or len(valid.columns) < 2:
        raise ValueError("a choice needs at least 2 seeds and 2 procedures")
    if valid.isna().any().any():
        raise ValueError("the validation scores have missing values")
    runs = {(str(c), int(s)): float(valid.loc[s, c]) for s in valid.index for c in valid.columns}
    others = [str(c) for c in valid.columns if c != baseline]
    se = paired_difference_se(runs, str(baseline), others, [int(s) for s in valid.index]) / np.sqrt(len(valid))
    means = {str(c): float(m) for c, m in valid.mean().items()}
    changes = {c: int(c != baseline) for c in means}
    return one_standard_error_choice(means, changes, se), se
