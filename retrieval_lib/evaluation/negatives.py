"""How hard and how false are negatives, and where scores land: the measurements behind chapters 7 and 8.

:func:`negative_scores` compares a trained model's score of each request's positive with its scores of
negatives from each strategy (in-batch, uniform, mined from a rank window), which shows why random
negatives teach little late in training. :func:`false_negative_rates` asks the latent truth how often
a mined "negative" is in fact what the buyer would have bought, by rank window: the reason the miner
skips the very top. Both read a sample of training requests; the second reads latent truth, so it
measures and explains, and nothing here feeds a model. :func:`interaction_scores` (chapter 8) gives
the scores of logged pairs by interaction type beside in-batch-style negatives, which is where the
hinge loss's thresholds act.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from retrieval_lib.evaluation.probes import would_buy_rate
from retrieval_lib.marketplace import Marketplace
from retrieval_lib.serving.base import PAD
from retrieval_lib.serving.exact import candidate_scores
from retrieval_lib.training.mining import sample_window
from retrieval_lib.training.negatives import Catalogue, sample_existing
from retrieval_lib.training.pairs import INTERACTIONS, TrainingPairs


def _scores(query_vectors: torch.Tensor, listing_vectors: torch.Tensor, ids: np.ndarray) -> np.ndarray:
    """The scores of the non-padding candidates, flattened."""
    return candidate_scores(query_vectors, listing_vectors, ids)[ids != PAD]


def _inbatch_ids(pairs: TrainingPairs, rows: np.ndarray, n: int, generator: torch.Generator) -> np.ndarray:
    """``n`` listings of other sampled rows per row, as a batch would hold them (``PAD``: accidental hit).

    A listing of the same request, or the row's own listing, is an accidental hit and skipped.
    """
    other = torch.randint(0, rows.size, (rows.size, n), generator=generator).numpy()
    same = (pairs.request[rows][other] == pairs.request[rows][:, None]) | (
        pairs.listing[rows][other] == pairs.listing[rows][:, None])
    return np.where(same, PAD, pairs.listing[rows][other])


def negative_scores(query_vectors: torch.Tensor, listing_vectors: torch.Tensor, pairs: TrainingPairs,
                    rows: np.ndarray, catalogue: Catalogue, ranked: np.ndarray, window: tuple[int, int],
                    n: int = 8, seed: int = 0) -> pd.DataFrame:
    """Scores (``source``, ``score``) of pair rows' positives and of ``n`` negatives each per strategy.

    ``query_vectors`` are the rows' query vectors and ``listing_vectors`` the catalogue's (row = listing
    id); ``ranked`` is :func:`~retrieval_lib.training.mining.ranked_candidates` for the rows. Sources:
    ``positive``; ``in-batch`` (the listings of other sampled rows, as a batch would hold them;
    accidental hits of the same request or listing removed); ``uniform`` (existing listings, guarded);
    ``mined, ranks a-b`` (the window) and ``mined, ranks 1-10``.
    """
    rows = np.asarray(rows)
    generator = torch.Generator().manual_seed(seed)
    positive = (query_vectors * listing_vectors[torch.from_numpy(pairs.listing[rows])]).sum(1).numpy()
    inbatch = _inbatch_ids(pairs, rows, n, generator)
    uniform = sample_existing(catalogue, pairs.day[rows], n, generator)
    uniform = np.where(pairs.engaged_for_query(rows, uniform), PAD, uniform)
    a, b = window
    parts = {"positive": positive,
             "in-batch": _scores(query_vectors, listing_vectors, inbatch),
             "uniform": _scores(query_vectors, listing_vectors, uniform),
             f"mined, ranks {a}-{b - 1}": _scores(query_vectors, listing_vectors,
                                                   sample_window(ranked, window, n, generator)),
             "mined, ranks 1-10": _scores(query_vectors, listing_vectors, ranked[:, :10])}
    return pd.concat([pd.DataFrame({"source": name, "score": values}) for name, values in parts.items()],
                     ignore_index=True)


def false_negative_rates(world: Marketplace, pairs: TrainingPairs, rows: np.ndarray, ranked: np.ndarray,
                         windows: Sequence[tuple[int, int]]) -> pd.DataFrame:
    """Per rank window ``(a, b)``: the expected share of its listings the request's buyer would buy.

    ``ranked`` holds the rows' guarded candidates, best first (column ``r`` is rank ``r + 1``). The
    rate is :func:`~retrieval_lib.evaluation.probes.would_buy_rate`, the buyer's choice probability
    averaged over the window's listings (latent truth, evaluation only).
    """
    sessions = pairs.frame["session_id"].to_numpy(dtype=np.int64)[np.asarray(rows)]
    out = []
    for a, b in windows:
        if b - 1 > ranked.shape[1]:
            raise ValueError(f"window ({a}, {b}) goes past the {ranked.shape[1]} ranked candidates")
        out.append({"window": f"{a}-{b - 1}", "a": a, "b": b,
                    "false_negative_rate": would_buy_rate(world, sessions, ranked[:, a - 1:b - 1])})
    return pd.DataFrame(out)


def interaction_scores(query_vectors: torch.Tensor, listing_vectors: torch.Tensor, pairs: TrainingPairs,
                       rows: np.ndarray, n: int = 4, seed: int = 0) -> pd.DataFrame:
    """Scores (``kind``, ``score``) of logged pairs by their strongest interaction, and of negatives.

    ``kind`` is ``purchase``, ``cart`` or ``click`` for each row's own (request, listing) pair and
    ``negative`` for ``n`` in-batch-style negatives per row (listings of other sampled rows, accidental
    hits skipped): the score distributions chapter 8's hinge thresholds act on. Reads logs only.
    """
    rows = np.asarray(rows)
    generator = torch.Generator().manual_seed(seed)
    positive = (query_vectors * listing_vectors[torch.from_numpy(pairs.listing[rows])]).sum(1).numpy()
    kinds = np.asarray(INTERACTIONS, dtype=object)[pairs.interaction[rows]]
    negative = _scores(query_vectors, listing_vectors, _inbatch_ids(pairs, rows, n, generator))
    return pd.concat([pd.DataFrame({"kind": kinds, "score": positive}),
                      pd.DataFrame({"kind": "negative", "score": negative})], ignore_index=True)
