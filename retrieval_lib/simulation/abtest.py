"""A simulated A/B test of the whole system on the test window.

Etsy measured the unified model online: the new embedding retrieval was added *beside* the existing
lexical retrieval, and the A/B tests compared search purchase rate with and without it *[paper]*. Here
every test-window request is shown twice, once per arm:

* **control**: the page the logging policy shows (BM25 x quality, exploration slots; see
  :func:`retrieval_lib.marketplace.policy.show_pages`);
* **treatment**: the same page composition with the served system's candidates fused into the
  lexical ranking (reciprocal-rank fusion, then the same exploration slots).

The world's buyers decide clicks, carts and purchases (the latent choice model: this module plays the
buyers, so it may read latent truth, as evaluation does). Both arms use **common random numbers**: the
same exploration draws, and each (request, listing) pair the same utility noise in both arms, so the
difference between arms comes from the pages, not from luck. The lift's confidence interval resamples
*buyers*; an A/A test (control against control with other random numbers) shows what luck alone does.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import pandas as pd

from retrieval_lib.evaluation.offline import history_bin, history_length, query_segments, segment_of
from retrieval_lib.evaluation.uncertainty import buyer_bootstrap
from retrieval_lib.marketplace import Marketplace
from retrieval_lib.marketplace.policy import show_pages, simulate_funnel


def simulate_arm(world: Marketplace, candidates: np.ndarray | None = None, seed: int = 0,
                 split: str = "test") -> pd.DataFrame:
    """Show every request of ``split`` its page and let its buyer act; one row per request.

    ``candidates`` (``n_requests x k`` listing ids, best first, ``-1`` padded) are fused into the lexical
    ranking; ``None`` is the control page. ``seed`` picks the random numbers: arms with the same seed
    share them. Returns ``session_id, user_id, segment, history, clicks, purchase`` (0 or 1).
    """
    sessions = world.observed.split(split).reset_index(drop=True)
    if sessions.empty:
        raise ValueError(f"no sessions in split {split!r}")
    if candidates is not None:
        candidates = np.asarray(candidates)
        if candidates.ndim != 2 or candidates.shape[0] != len(sessions):
            raise ValueError(f"candidates must have one row per {split} request ({len(sessions)}), "
                             f"got shape {candidates.shape}")
    rows = sessions["session_id"].to_numpy()
    latent = world.latent
    latent = dataclasses.replace(latent, intents={k: v[rows] for k, v in latent.intents.items()},
                                 labels=latent.labels[rows])
    pages = show_pages(world.config, latent, world.observed.listings, sessions["query"].tolist(),
                       np.random.default_rng(seed), extra=candidates)
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
