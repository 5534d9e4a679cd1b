"""Which of the paper's claims held up on our marketplace: each claim judged by a committed seed study.

Every claim the book tests is a comparison of two training procedures (the paper's choice against the
alternative it improves on), so each is judged the same way: the multi-bootstrap interval over the
study's paired seeds and buyers (:meth:`SeedStudy.compare`). An interval above 0 means the claim
**holds here**; one below 0 means it is **reversed** here; one that covers 0 leaves it **not
established** (which is not evidence of no effect: the interval says how large an effect could hide).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from retrieval_lib.evaluation.seed_study import book_study

#: Verdict codes, as recorded in a results file (``verdict.<claim>``).
HOLDS, NOT_ESTABLISHED, REVERSED = 1, 0, -1
VERDICTS: dict[int, str] = {HOLDS: "holds here", NOT_ESTABLISHED: "not established", REVERSED: "reversed"}


@dataclass(frozen=True)
class PaperClaim:
    """A claim of the paper as a comparison: arm ``better`` minus arm ``worse`` of ``study`` on ``group``.

    ``source`` says how sure we are of the claim's wording (``"paper"`` or ``"reported"``, see PAPER.md);
    ``chapter`` is where the book tests it.
    """

    key: str
    claim: str
    source: str
    chapter: int
    study: str
    better: str
    worse: str
    group: str

    def __post_init__(self) -> None:
        if self.source not in ("paper", "reported"):
            raise ValueError(f"source must be 'paper' or 'reported', got {self.source!r}")
        if self.better == self.worse:
            raise ValueError(f"claim {self.key!r} compares arm {self.better!r} with itself")


#: The paper's claims that the book's seed studies test, in chapter order.
PAPER_CLAIMS: tuple[PaperClaim, ...] = (
    PaperClaim("pretraining", "doc2query pre-training of the transformer helps tail queries", "reported", 5,
               "pretraining_seeds", "pretrained", "scratch", "tail"),
    PaperClaim("term", "the term encoder (text) helps tail queries", "reported", 6,
               "ablations_seeds", "full", "no_term", "tail"),
    PaperClaim("transformer", "the transformer text encoder adds to the product tower", "reported", 6,
               "ablations_seeds", "full", "no_transformer", "all"),
    PaperClaim("location", "the location encoder raises recall", "reported", 6,
               "ablations_seeds", "full", "no_location", "all"),
    PaperClaim("graph", "graph embeddings are the single largest gain", "reported", 6,
               "unified_seeds", "full", "no_graph", "all"),
    PaperClaim("history", "the buyer's history (personalization) helps head queries", "paper", 6,
               "unified_seeds", "full", "no_history", "head"),
    PaperClaim("personalization", "personalization helps head queries, once the history is read as taste "
               "(the book's taste block, not the paper's)", "paper", 6, "unified_seeds", "taste", "no_history",
               "head"),
    PaperClaim("negatives", "uniform and hard negatives beat in-batch negatives alone", "paper", 7,
               "negatives_seeds", "curriculum", "inbatch", "all"),
    PaperClaim("curriculum", "warming up on uniform negatives, then ramping hard ones, beats hard from the start",
               "paper", 7, "negatives_seeds", "curriculum", "hard_from_start", "all"),
    PaperClaim("hinge", "the multi-part hinge loss keeps recall while making scores prunable", "paper", 8,
               "losses_seeds", "hinge", "softmax", "all"),
    PaperClaim("boosting", "additive ANN boosting with quality features raises recall", "paper", 9,
               "boosting_seeds", "additive", "none", "all"),
)


def judge(ci_low: float, ci_high: float) -> int:
    """:data:`HOLDS` if the interval lies above 0, :data:`REVERSED` if below, else :data:`NOT_ESTABLISHED`."""
    if not ci_low <= ci_high:
        raise ValueError(f"an interval needs ci_low <= ci_high, got [{ci_low}, {ci_high}]")
    if ci_low > 0:
        return HOLDS
    if ci_high < 0:
        return REVERSED
    return NOT_ESTABLISHED


def verdict_table(claims: tuple[PaperClaim, ...] = PAPER_CLAIMS, directory: str | Path | None = None,
                  **kwargs) -> pd.DataFrame:
    """One row per claim: its multi-bootstrap difference, interval, seed count and verdict.

    Studies are read with :func:`~retrieval_lib.evaluation.seed_study.book_study` from ``directory``
    (default: the book's committed studies), each once; ``kwargs`` go to :meth:`SeedStudy.compare`.
    Columns: ``claim, source, chapter, comparison, metric, group, n_seeds, mean, ci_low, ci_high,
    verdict`` (the code) and ``verdict_name``; the index is the claim's key.
    """
    if not claims:
        raise ValueError("no claims to judge")
    studies = {}
    rows = {}
    for c in claims:
        if c.study not in studies:
            studies[c.study] = book_study(c.study, directory)
        study = studies[c.study]
        missing = {c.better, c.worse} - set(study.arms)
        if missing:
            raise KeyError(f"claim {c.key!r}: study {c.study!r} has no arm {sorted(missing)}; it has {study.arms}")
        d = study.compare(c.better, c.worse, c.group, **kwargs)
        code = judge(d.ci_low, d.ci_high)
        rows[c.key] = {"claim": c.claim, "source": c.source, "chapter": c.chapter,
                       "comparison": f"{c.better} - {c.worse}", "metric": study.metric, "group": c.group,
                       "n_seeds": d.n_seeds,
                       "mean": d.mean, "ci_low": d.ci_low, "ci_high": d.ci_high, "verdict": code,
                       "verdict_name": VERDICTS[code]}
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("key")
