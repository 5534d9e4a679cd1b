"""A simulated A/B test of the whole system on the test window.

Etsy measured the unified model online: the new embedding retrieval was added *beside* the existing
lexical retrieval, a learned ranking stage ordered the candidates of both, and the A/B tests compared
search purchase rate with and without the new source *[paper]*. Here every test-window request is shown
once per arm, and an arm's page is one of:

* the page the logging policy shows (BM25 x quality, exploration slots; see
  :func:`retrieval_lib.marketplace.policy.show_pages`);
* the same page composition with another system's candidates fused into the lexical ranking
  (reciprocal-rank fusion, then exploration slots drawn per (request, slot));
* a ranking stage's order of a candidate set, with exploration slots drawn per (request, slot)
  (:func:`ranked_pages`): the fair comparison, the same ranker over lexical candidates in one arm and
  over lexical plus the new source's in the other.

The world's buyers decide clicks, carts and purchases (the latent choice model: this module plays the
buyers, so it may read latent truth, as evaluation does). Both arms use **common random numbers**: the
same exploration draws, and each (request, listing) pair the same utility noise in both arms, so the
difference between arms comes from the pages, not from luck. The lift's confidence interval resamples
*buyers*; an A/A test (control against control with other random numbers) shows what luck alone does.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from retrieval_lib.evaluation.offline import history_bin, history_length, query_segments, segment_of
from retrieval_lib.evaluation.uncertainty import buyer_bootstrap
from retrieval_lib.infra.cache import source_digest
from retrieval_lib.infra.committed import read_json, write_json
from retrieval_lib.infra.progress import progress_bar
from retrieval_lib.marketplace import Marketplace
from retrieval_lib.marketplace.config import MarketplaceConfig
from retrieval_lib.marketplace.data import LatentTruth
from retrieval_lib.marketplace.policy import keyed_exploration, show_pages, simulate_funnel
from retrieval_lib.serving.base import PAD


def simulate_arm(world: Marketplace, candidates: np.ndarray | None = None, seed: int = 0,
                 split: str = "test", buyers: np.ndarray | None = None, ranked: np.ndarray | None = None
                 ) -> pd.DataFrame:
    """Show every request of ``split`` its page and let its buyer act; one row per request.

    Three kinds of page:

    * ``candidates`` and ``ranked`` both ``None``: the control page, the logging policy's;
    * ``candidates`` (``n_requests x k`` listing ids, best first, ``-1`` padded): fused into the
      lexical ranking, the policy's page composition otherwise;
    * ``ranked`` (``n_requests x k`` listing ids in a ranking stage's order, ``-1`` padded): the page
      is its first listings, with exploration slots as the policy has them (:func:`ranked_pages`).

    ``seed`` picks the random numbers: arms with the same seed share them. ``buyers`` keeps only their
    requests (a subsample). Returns ``session_id, user_id, segment, history, clicks, purchase`` (0 or 1).
    """
    if candidates is not None and ranked is not None:
        raise ValueError("give candidates to fuse or a ranked list, not both")
    sessions = world.observed.split(split).reset_index(drop=True)
    if buyers is not None:
        sessions = sessions[sessions["user_id"].isin(np.asarray(buyers))].reset_index(drop=True)
    if sessions.empty:
        raise ValueError(f"no sessions in split {split!r}" + (" from these buyers" if buyers is not None else ""))
    for name, ids in (("candidates", candidates), ("ranked", ranked)):
        if ids is not None and (np.ndim(ids) != 2 or np.shape(ids)[0] != len(sessions)):
            raise ValueError(f"{name} must have one row per {split} request ({len(sessions)}), "
                             f"got shape {np.shape(ids)}")
    rows = sessions["session_id"].to_numpy()
    latent = world.latent
    latent = dataclasses.replace(latent, intents={k: v[rows] for k, v in latent.intents.items()},
                                 labels=latent.labels[rows])
    if ranked is None:
        pages = show_pages(world.config, latent, world.observed.listings, sessions["query"].tolist(),
                           np.random.default_rng(seed), extra=None if candidates is None else np.asarray(candidates),
                           common=seed, session_ids=rows)
    else:
        pages = ranked_pages(world.config, latent, np.asarray(ranked, dtype=np.int64), rows, seed)
    shown = simulate_funnel(world.config, latent, pages, np.random.default_rng(seed), common=seed)
    n = len(sessions)
    observed = world.observed
    return pd.DataFrame({
        "session_id": rows,
        "user_id": sessions["user_id"].to_numpy(),
        "segment": segment_of(sessions["query"], query_segments(observed)),
        "history": history_bin(history_length(observed).to_numpy()[rows]),
        "clicks": np.bincount(shown["session_id"], weights=shown["click"], minlength=n).astype(np.int64),
        "purchase": np.bincount(shown["session_id"], weights=shown["purchase"], minlength=n).astype(np.int64),
    })


def ranked_pages(cfg: MarketplaceConfig, latent: LatentTruth, ranked: np.ndarray, session_ids: np.ndarray,
                 seed: int) -> np.ndarray:
    """Pages from a ranking stage's lists, with the logging policy's exploration slots, keyed draws only.

    The page is the first ``page_size`` listings of ``ranked`` that exist at the request; the
    exploration slots are :func:`~retrieval_lib.marketplace.policy.keyed_exploration`'s, drawn per
    (seed, request, slot), so two arms over the same requests with the same seed explore the same slots
    with the same listings whatever their lists hold: their pages differ only where their rankings do
    (the funnel's draws are keyed by the request's row, so compare arms over the same requests).
    """
    n = len(session_ids)
    if ranked.ndim != 2 or ranked.shape[0] != n:
        raise ValueError(f"ranked must have one row per request ({n}), got shape {ranked.shape}")
    L, day = latent.listings, latent.intents["day"]
    if ranked.size and (ranked.max() >= L["type"].size or ranked.min() < PAD):
        raise ValueError(f"ranked holds ids outside the catalogue (0 to {L['type'].size - 1}, or {PAD} for none)")
    exists = (ranked >= 0) & (L["created_day"][ranked.clip(0)] <= day[:, None])
    order = np.argsort(~exists, axis=1, kind="stable")[:, : cfg.page_size]  # existing listings, in rank order
    pages = np.where(np.take_along_axis(exists, order, axis=1), np.take_along_axis(ranked, order, axis=1), PAD)
    if pages.shape[1] < cfg.page_size:
        pages = np.pad(pages, ((0, 0), (0, cfg.page_size - pages.shape[1])), constant_values=PAD)
    return keyed_exploration(cfg, latent, pages, np.asarray(session_ids, dtype=np.int64), seed)


@dataclass(frozen=True)
class Lift:
    """Purchase rate of two arms over the same requests, the relative lift and its buyer-bootstrap CI."""

    control_rate: float
    treatment_rate: float
    lift: float
    ci_low: float
    ci_high: float
    n_sessions: int
    n_buyers: int

    @property
    def covers_zero(self) -> bool:
        """Whether the interval includes no effect."""
        return self.ci_low <= 0 <= self.ci_high


def purchase_lift(control: pd.DataFrame, treatment: pd.DataFrame, n_boot: int = 2000, level: float = 0.95,
                  seed: int = 0) -> Lift:
    """Relative lift ``treatment rate / control rate - 1`` with a paired bootstrap CI that resamples buyers.

    Both frames come from :func:`simulate_arm` over the same requests (same order).
    """
    if len(control) != len(treatment) or not np.array_equal(control["session_id"], treatment["session_id"]):
        raise ValueError("the two arms must cover the same requests in the same order")
    if control.empty:
        raise ValueError("no requests to compare")
    a, b = control["purchase"].to_numpy(float), treatment["purchase"].to_numpy(float)
    if a.sum() == 0:
        raise ValueError("the control arm has no purchases: the lift is undefined")
    low, high = buyer_bootstrap(control["user_id"].to_numpy(), [b, a],
                                lambda s: s[0] / s[1] - 1 if s[1] > 0 else np.nan, n_boot, level, seed)
    return Lift(float(a.mean()), float(b.mean()), float(b.sum() / a.sum() - 1), low, high, len(a),
                int(control["user_id"].nunique()))


def lift_by(control: pd.DataFrame, treatment: pd.DataFrame, column: str, n_boot: int = 2000,
            seed: int = 0) -> pd.DataFrame:
    """:func:`purchase_lift` within each group of ``column`` (``segment`` or ``history``): one row per group."""
    rows = []
    for group in pd.unique(control[column]):
        keep = (control[column] == group).to_numpy()
        lift = purchase_lift(control[keep], treatment[keep], n_boot=n_boot, seed=seed)
        rows.append({column: group, **dataclasses.asdict(lift)})
    return pd.DataFrame(rows)


def split_test(control: pd.DataFrame, treatment: pd.DataFrame, seed: int = 0, n_boot: int = 2000,
               level: float = 0.95) -> Lift:
    """The lift as a real A/B test measures it: each buyer sees one arm, a random half the treatment.

    ``control`` and ``treatment`` come from :func:`simulate_arm` over the same requests; the buyers are
    split at random (``seed``) and each arm is read on its own half only, so the two rates share no
    buyer and no random number. The interval resamples buyers (each keeps their arm); ``n_sessions``
    and ``n_buyers`` count both halves together.
    """
    if len(control) != len(treatment) or not np.array_equal(control["session_id"], treatment["session_id"]):
        raise ValueError("the two arms must cover the same requests in the same order")
    users = control["user_id"].to_numpy()
    ids = np.unique(users)
    if ids.size < 2:
        raise ValueError("a split test needs at least two buyers")
    treated = np.isin(users, np.random.default_rng(seed).permutation(ids)[: ids.size // 2]).astype(float)
    b = treatment["purchase"].to_numpy(float) * treated
    a = control["purchase"].to_numpy(float) * (1 - treated)
    if a.sum() == 0:
        raise ValueError("the control half has no purchases: the lift is undefined")

    def lift(s: list[float]) -> float:
        return (s[0] / s[1]) / (s[2] / s[3]) - 1 if min(s[1], s[2], s[3]) > 0 else np.nan

    low, high = buyer_bootstrap(users, [b, treated, a, 1 - treated], lift, n_boot, level, seed)
    control_rate, treatment_rate = a.sum() / (1 - treated).sum(), b.sum() / treated.sum()
    return Lift(float(control_rate), float(treatment_rate), float(treatment_rate / control_rate - 1), low, high,
                len(users), int(ids.size))


def aa_calibration(world: Marketplace, runs: int = 200, share: float = 0.25, seed: int = 0, n_boot: int = 1000,
                   progress: bool = True) -> pd.DataFrame:
    """Many A/A tests, to see how often :func:`purchase_lift`'s 95 per cent interval covers the true lift, 0.

    One A/A test is not a check of the interval: it covers 0 or not, by luck. Run ``runs`` of them, each
    the control page against itself with two fresh sets of random numbers (seeds ``2i`` and ``2i + 1``),
    on a random ``share`` of the test window's buyers (drawn once with ``seed``, to keep it quick); a
    calibrated interval covers 0 in about 95 per cent. One row per run: ``lift, ci_low, ci_high,
    covers_zero``.
    """
    if runs < 1:
        raise ValueError(f"runs must be positive, got {runs}")
    if not 0 < share <= 1:
        raise ValueError(f"share must be in (0, 1], got {share}")
    ids = np.unique(world.observed.split("test")["user_id"])
    chosen = np.random.default_rng(seed).choice(ids, size=max(2, round(share * ids.size)), replace=False)
    rows = []
    for i in progress_bar(range(runs), progress=progress, desc="A/A tests"):
        one = simulate_arm(world, None, seed=2 * i, buyers=chosen)
        other = simulate_arm(world, None, seed=2 * i + 1, buyers=chosen)
        lift = purchase_lift(one, other, n_boot=n_boot, seed=i)
        rows.append({"lift": lift.lift, "ci_low": lift.ci_low, "ci_high": lift.ci_high,
                     "covers_zero": lift.covers_zero})
    return pd.DataFrame(rows).rename_axis("run")


#: The code an A/A calibration runs (with everything it imports): its digest stamps the committed file.
CALIBRATION_MODULES: tuple[str, ...] = ("retrieval_lib.simulation.abtest",)


@dataclass(frozen=True)
class AACalibration:
    """Many A/A tests (:func:`aa_calibration`) on disk, with the command, preset and code digest that made them.

    Too slow for every book build (two simulated arms per test), so a benchmark script runs it once and
    commits the file; the chapter reads it, and its own first runs must reproduce the file's first rows.
    """

    command: str
    preset: str
    share: float
    n_boot: int
    digest: str
    runs: pd.DataFrame = field(repr=False)

    @property
    def coverage(self) -> float:
        """Share of the A/A intervals that cover 0."""
        return float(self.runs["covers_zero"].mean())

    def is_current(self) -> bool:
        """Whether the code that made the file is still the code on disk."""
        return self.digest == source_digest(CALIBRATION_MODULES)

    def reproduces(self, runs: pd.DataFrame) -> bool:
        """Whether ``runs`` (the first runs of the same calibration) equal the file's first rows (6 decimals)."""
        head = self.runs.iloc[:len(runs)]
        if len(runs) == 0 or len(runs) > len(self.runs) or list(runs.columns) != list(head.columns):
            return False
        numbers = ["lift", "ci_low", "ci_high"]
        return bool(np.array_equal(np.round(runs[numbers].to_numpy(float), 6), head[numbers].to_numpy(float))
                    and np.array_equal(runs["covers_zero"].to_numpy(bool), head["covers_zero"].to_numpy(bool)))

    def save(self, path: str | Path) -> None:
        """Write the calibration as JSON (figures rounded to 6 decimals), atomically."""
        data = {"command": self.command, "preset": self.preset, "share": self.share, "n_boot": self.n_boot,
                "modules": list(CALIBRATION_MODULES), "digest": self.digest,
                "runs": {c: [round(float(x), 6) for x in self.runs[c]] for c in ("lift", "ci_low", "ci_high")}
                | {"covers_zero": [bool(x) for x in self.runs["covers_zero"]]}}
        write_json(data, path)

    @classmethod
    def load(cls, path: str | Path) -> AACalibration:
        """Read a file written by :meth:`save` (a clear error if it is missing or malformed)."""
        data = read_json(path, "A/A calibration", "run benchmarks/aa_calibration.py to write it")
        try:
            runs = pd.DataFrame(data["runs"]).rename_axis("run")
            return cls(data["command"], data["preset"], float(data["share"]), int(data["n_boot"]), data["digest"],
                       runs[["lift", "ci_low", "ci_high", "covers_zero"]])
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{path} is not an A/A calibration: {err}") from err


def sessions_needed(rate: float, relative_lift: float) -> int:
    """Requests per arm to detect ``relative_lift`` on a purchase ``rate`` with independent arms.

    The rule of thumb ``n = 16 p (1 - p) / d^2`` (``d = rate x relative_lift``): a two-sided test at 5
    per cent with 80 per cent power.
    """
    if not 0 < rate < 1:
        raise ValueError(f"rate must be in (0, 1), got {rate}")
    if relative_lift == 0:
        raise ValueError("a lift of 0 cannot be detected")
    d = rate * relative_lift
    return int(np.ceil(16 * rate * (1 - rate) / d**2))
