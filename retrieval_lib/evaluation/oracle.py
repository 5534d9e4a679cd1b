"""The ceiling: a retriever that knows what each buyer values (latent truth, evaluation only).

It ranks the listings that exist at the request by the buyer's *expected* utility under the world's
choice model (the utility without its noise). No model can know more than that, so its recall@K is
the most any model can reach in this world, and every comparison can be read as a share of the gap
between a baseline and this ceiling. It reads latent truth: it measures, it is never a model.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from retrieval_lib.marketplace import Marketplace
from retrieval_lib.marketplace.behaviour import available, utility
from retrieval_lib.serving.base import PAD


class OracleRetriever:
    """Listings of the wanted product type, available at the session's time, by expected utility.

    Buyers choose among listings of the type they want (other types have far lower utility; see
    :func:`~retrieval_lib.marketplace.behaviour.choose_from_catalogue`), so the oracle ranks those.
    """

    def __init__(self, world: Marketplace, chunk: int = 256) -> None:
        self.world = world
        self.chunk = chunk

    def retrieve(self, sessions: pd.DataFrame, k: int) -> np.ndarray:
        """Top-``k`` listing ids per session by expected utility (padded where a type has fewer)."""
        if k <= 0:
            raise ValueError(f"k must be positive, got {k}")
        latent = self.world.latent
        sids = sessions["session_id"].to_numpy(dtype=np.int64)
        wanted = latent.intents["type"][sids]
        out = np.full((len(sids), k), PAD, dtype=np.int64)
        for t in np.unique(wanted):
            rows = np.flatnonzero(wanted == t)
            cand_all = np.flatnonzero(latent.listings["type"] == t)
            kk = min(k, cand_all.size)
            for start in range(0, rows.size, self.chunk):
                r = rows[start:start + self.chunk]
                cand = np.broadcast_to(cand_all, (r.size, cand_all.size))
                util = np.where(available(latent, sids[r], cand), utility(latent, sids[r], cand), -np.inf)
                top = np.argsort(-util, axis=1, kind="stable")[:, :kk]
                best = np.take_along_axis(util, top, axis=1)
                out[r, :kk] = np.where(np.isfinite(best), cand_all[top], PAD)
        return out
