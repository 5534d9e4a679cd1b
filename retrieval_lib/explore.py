"""Try a query and a buyer: what BM25, the unified model and the served system return, side by side.

:func:`compare` is the logic: for one request, a results table per system, with each result's title,
tags, the distance to its shop, its score split into the two towers' cosine and the boost, and whether
the buyer would buy it (the world's latent truth, for a logged request only, marked as such).
:func:`towers` follows one request and one listing through both towers, block by block.
:func:`search_effort` and :func:`boost_recall` are the second panel's trade-offs: how recall and
latency move with the index's search effort, and how logged validation recall moves with the boost
weights. :class:`Explorer` puts both behind ``ipywidgets`` in JupyterLab; where no kernel runs (the
built book) its output shows one example as static HTML instead of an empty widget.
"""

from __future__ import annotations

import html
import time
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from retrieval_lib.baselines.bm25 import BM25Retriever
from retrieval_lib.features.history import HISTORY_TYPES
from retrieval_lib.features.location import user_listing_miles
from retrieval_lib.marketplace import Marketplace
from retrieval_lib.serving.base import PAD
from retrieval_lib.serving.boosting import PurchaseRecall, hydrate_queries, quality_features
from retrieval_lib.serving.exact import exact_top_k
from retrieval_lib.serving.search import EF_BY_LEVEL, Retriever

#: The systems :func:`compare` puts side by side, from the lexical baseline to what the service serves.
SYSTEMS: tuple[str, ...] = ("BM25", "unified, no history", "unified", "served")
#: The columns of each results table.
COLUMNS: tuple[str, ...] = ("listing_id", "title", "tags", "miles", "cosine", "boost", "score", "would_buy")


def would_buy(world: Marketplace, session_id: int) -> int:
    """The listing the buyer of logged request ``session_id`` would buy (latent truth; ``-1`` if none).

    For evaluation and teaching only: no model or choice reads it.
    """
    labels = world.latent.labels
    if not 0 <= int(session_id) < len(labels):
        raise KeyError(f"unknown session {session_id!r}")
    return int(labels[int(session_id)])


def _table(system: Retriever, ids: np.ndarray, user_id: int | None, cosine: np.ndarray, boost: np.ndarray,
           score: np.ndarray, target: int) -> pd.DataFrame:
    keep = ids != PAD
    ids = ids[keep]
    shown = system.listings.loc[ids]
    miles = (user_listing_miles(system.features.observed, np.array([user_id]), ids[None, :])[0]
             if user_id is not None else np.full(len(ids), np.nan))
    frame = pd.DataFrame({
        "listing_id": ids, "title": shown["title"].to_numpy(),
        "tags": [", ".join(map(str, t[:4])) for t in shown["tags"]], "miles": miles,
        "cosine": cosine[keep], "boost": boost[keep], "score": score[keep], "would_buy": ids == target})
    frame.index = pd.RangeIndex(1, len(frame) + 1, name="rank")
    return frame


def compare(system: Retriever, bm25: BM25Retriever, query: str, user_id: int | None = None, top_n: int = 10,
            target: int = PAD, boost_scale: float = 1.0) -> dict[str, pd.DataFrame]:
    """One request through every system of :data:`SYSTEMS`: a results table each, best first.

    * ``BM25``: the lexical baseline (its score is the BM25 score; it knows no buyer).
    * ``unified, no history``: the query tower without the buyer's history (location kept), exact search.
    * ``unified``: the query tower with text, history and location, exact search by cosine.
    * ``served``: the boosted index as the service searches it (``q.p + w.f(p)``, re-ranked exactly).
      With ``boost_scale`` other than 1 (the tuned weights times ``boost_scale``; 0: no boost) it is an
      exact search of the hydrated vectors, since the index's search effort was chosen for the tuned ones.

    ``cosine`` is ``q.p`` for the request's full query vector (history included), ``boost`` is
    ``w.f(p)`` at the scaled weights; ``target`` marks the listing the buyer would buy (latent truth, see
    :func:`would_buy`). Raises what :meth:`Retriever.encode` raises for an empty query or unknown user.
    """
    if system.w is None:
        raise ValueError("compare needs a boosted system (pipeline.build_system)")
    if not np.isfinite(boost_scale) or boost_scale < 0:
        raise ValueError(f"boost_scale must be a non-negative number, got {boost_scale}")
    if isinstance(top_n, bool) or not isinstance(top_n, int | np.integer) or top_n < 1:
        raise ValueError(f"top_n must be a positive integer, got {top_n!r}")
    q = system.encode(query, user_id)
    plain = system.encode(query, user_id, history=False)
    w = system.w * boost_scale
    vectors = system.listing_vectors
    boosts = (system.items[:, vectors.shape[1]:] @ torch.as_tensor(w, dtype=torch.float32)).numpy()

    def parts(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        cos = np.where(ids != PAD, (vectors[ids.clip(0)] @ q[0]).numpy(), np.nan)
        return cos, np.where(ids != PAD, boosts[ids.clip(0)], np.nan)

    tables = {}
    ids, scores = bm25.search([query], top_n)
    cos, boost = parts(ids[0])
    tables["BM25"] = _table(system, ids[0], user_id, cos, boost, scores[0].astype(float), target)
    for name, vector in (("unified, no history", plain), ("unified", q)):
        ids, scores = exact_top_k(vector, vectors, top_n, item_ids=system.exact.listing_ids)
        cos, boost = parts(ids[0])
        tables[name] = _table(system, ids[0], user_id, cos, boost, scores[0].astype(float), target)
    if boost_scale == 1.0:
        page = system.query(q, top_n, rerank=True)
        ids = page["listing_id"].to_numpy()
    else:  # other weights: exact search of [p; f(p)] with [q; s w]
        ids = exact_top_k(hydrate_queries(q, w), system.items, top_n, item_ids=system.exact.listing_ids).ids[0]
    cos, boost = parts(ids)
    tables["served"] = _table(system, ids, user_id, cos, boost, cos + boost, target)
    return tables


def _blocks(parts: list[tuple[str, torch.Tensor]]) -> pd.DataFrame:
    rows = [{"block": name, "width": int(v.shape[1]), "norm": float(v[0].norm())} for name, v in parts]
    return pd.DataFrame(rows).set_index("block")


def towers(system: Retriever, query: str, user_id: int | None, listing_id: int) -> dict[str, object]:
    """One request and one listing through both towers: what each block feeds the tower's MLP.

    Returns ``query`` and ``product`` (one row per input block, in the order the tower concatenates
    them: ``width`` and the block's ``norm``), ``history`` (the buyer's most recent items, oldest first:
    ``kind``, ``text``), ``cosine`` (the two unit vectors' inner product), and ``query_inputs`` and
    ``product_inputs`` (the concatenated blocks each tower's MLP reads). The blocks are read the way
    :class:`~retrieval_lib.models.unified.UnifiedModel` reads them: the towers' MLPs turn the inputs into
    exactly the vectors the system serves (a test checks it).
    """
    model, features = system.model, system.features
    if int(listing_id) not in system.listings.index:
        raise KeyError(f"unknown listing {listing_id!r}")
    q = system.encode(query, user_id)  # validates the request
    users = np.array([-1 if user_id is None else int(user_id)])
    rows = features.current_rows(users)
    bags, blocks, history = features.queries([query.strip()], users, rows, model.config)
    with torch.no_grad():
        query_parts = [("terms", model.term(*bags))] if model.term is not None else []
        if model.history is not None:
            query_parts.append(("history", model.history(history["items"], history["kind"], history["pad"],
                                                         history.get("graph"))))
        query_parts += [(b, blocks[b]) for b in model.query_blocks]
        lbags, lblocks = features.listings(np.array([int(listing_id)]))
        product_parts = [("terms", model.term(*lbags))] if model.term is not None else []
        product_parts += [(b, lblocks[b]) for b in model.product_blocks]
        p = system.listing_vectors[int(listing_id)]
    items = []
    if rows[0] >= 0:
        h = features.history
        for item, kind in zip(h.item[rows[0]], h.kind[rows[0]], strict=True):
            if item >= 0:
                items.append({"kind": HISTORY_TYPES[kind], "text": h.texts[item]})
    return {"query": _blocks(query_parts), "product": _blocks(product_parts),
            "history": pd.DataFrame(items, columns=["kind", "text"]), "cosine": float(q[0] @ p),
            "query_inputs": torch.cat([v for _, v in query_parts], dim=1),
            "product_inputs": torch.cat([v for _, v in product_parts], dim=1)}


def search_effort(system: Retriever, sessions: pd.DataFrame, levels: Sequence[int] = tuple(EF_BY_LEVEL),
                  k: int = 100) -> pd.DataFrame:
    """Recall against exact search and milliseconds per request at each search-effort level of the index.

    ``sessions`` are logged requests (``query``, ``user_id``, ...). Recall is the share of the exact
    boosted top ``k`` that the index returns: it needs no labels. One row per level: ``ef,
    recall_vs_exact, ms_per_query``.
    """
    if len(sessions) == 0:
        raise ValueError("no requests to measure")
    vectors = torch.cat([system.encode(q, int(u)) for q, u in zip(sessions["query"], sessions["user_id"],
                                                                   strict=True)])
    exact = exact_top_k(hydrate_queries(vectors, system.w), system.items, k, item_ids=system.exact.listing_ids).ids
    rows = []
    for level in levels:
        start = time.perf_counter()
        found = [system.query(v, k, level=level)["listing_id"].to_numpy() for v in vectors]
        ms = (time.perf_counter() - start) * 1e3 / len(found)
        hits = np.mean([np.isin(f, e[e != PAD]).sum() / max(1, (e != PAD).sum()) for f, e in zip(found, exact,
                                                                                                   strict=True)])
        rows.append({"level": level, "ef": max(EF_BY_LEVEL[level], k), "recall_vs_exact": float(hits),
                     "ms_per_query": ms})
    return pd.DataFrame(rows).set_index("level")


def boost_recall(system: Retriever, scales: Sequence[float], k: int = 100) -> pd.Series:
    """Recall@``k`` of the validation window's *logged* purchases with the boost weights scaled by each of ``scales``.

    Exact search, so only the weights move; what a marketplace logs, never latent labels.
    """
    objective = PurchaseRecall(system.exact, quality_features(system.features.observed), system.features.observed,
                               "valid", k)
    return pd.Series({float(s): objective(system.w * float(s)) for s in scales}, name=f"logged recall@{k}")


def to_html(tables: dict[str, pd.DataFrame], caption: str = "") -> str:
    """The tables side by side as one HTML block (a static rendering, also what the widget shows)."""
    columns = []
    for name, table in tables.items():
        shown = table.assign(would_buy=np.where(table["would_buy"], "yes (latent)", ""))
        body = shown.to_html(float_format=lambda x: f"{x:.3f}", na_rep="", border=0, classes="explorer-table")
        columns.append(f'<div style="flex:1;min-width:22em"><h4>{html.escape(name)}</h4>{body}</div>')
    head = f"<p><em>{html.escape(caption)}</em></p>" if caption else ""
    return (f'<div class="retrieval-explorer">{head}<div style="display:flex;gap:1em;flex-wrap:wrap;'
            f'font-size:80%">{"".join(columns)}</div></div>')


class Explorer:
    """The widgets: query, buyer and request boxes, a boost slider, and the tables; a second panel measures.

    The request id (a logged request) only marks the listing its buyer would buy (latent truth). The
    second panel's button measures recall and latency at every search-effort level
    (:func:`search_effort`) and logged validation recall at several boost scales (:func:`boost_recall`).

    ``example`` (``query, user_id, session_id``) is the request shown first, and the one rendered as
    static HTML where no kernel runs: displaying an ``Explorer`` offers both the widget (JupyterLab
    shows it) and the HTML (the built book shows it; ``book/_config.yml`` drops the widget there).
    """

    def __init__(self, system: Retriever, bm25: BM25Retriever, world: Marketplace, example: tuple[str, int | None, int],
                 effort_sample: pd.DataFrame | None = None, top_n: int = 8) -> None:
        import ipywidgets as widgets

        self.system, self.bm25, self.world, self.top_n = system, bm25, world, top_n
        query, user_id, session_id = example
        self.static = to_html(compare(system, bm25, query, user_id, top_n, would_buy(world, session_id)),
                              f"query {query!r}, buyer {user_id}: a logged test-window request")
        self.query = widgets.Text(value=query, description="query")
        self.user = widgets.Text(value="" if user_id is None else str(user_id), description="buyer id")
        self.session = widgets.Text(value=str(session_id), description="request id",
                                    tooltip="a logged request: marks what its buyer would buy (latent truth)")
        self.scale = widgets.FloatSlider(value=1.0, min=0.0, max=3.0, step=0.25, description="boost x")
        self.out = widgets.HTML(self.static)
        self.button = widgets.Button(description="search")
        self.button.on_click(lambda _: self.refresh())
        self.effort_out = widgets.HTML()
        self.effort_sample = effort_sample
        effort_button = widgets.Button(description="measure effort and boost")
        effort_button.on_click(lambda _: self.measure())
        self.widget = widgets.VBox([
            widgets.HBox([self.query, self.user, self.session]), widgets.HBox([self.scale, self.button]),
            self.out, effort_button, self.effort_out])

    def refresh(self) -> None:
        """Search the current request with the current settings and show the tables (or the error)."""
        try:
            user = int(self.user.value) if self.user.value.strip() else None
            target = would_buy(self.world, int(self.session.value)) if self.session.value.strip() else PAD
            tables = compare(self.system, self.bm25, self.query.value, user, self.top_n, target, self.scale.value)
            self.out.value = to_html(tables)
        except (ValueError, KeyError) as err:
            self.out.value = f"<p><b>{html.escape(type(err).__name__)}</b>: {html.escape(str(err))}</p>"

    def measure(self) -> None:
        """The second panel: recall and latency by search effort, and logged recall by boost scale."""
        sample = self.effort_sample if self.effort_sample is not None else \
            self.world.observed.split("valid").sample(100, random_state=0)
        effort = search_effort(self.system, sample)
        boost = boost_recall(self.system, [0.0, 0.5, 1.0, 2.0, 3.0]).to_frame()
        self.effort_out.value = (effort.to_html(float_format=lambda x: f"{x:.3f}", border=0)
                                 + boost.rename_axis("boost x").to_html(float_format=lambda x: f"{x:.3f}", border=0))

    def _repr_mimebundle_(self, **kwargs: object) -> dict[str, object]:
        bundle = dict(self.widget._repr_mimebundle_(**kwargs) or {})
        bundle["text/html"] = self.static
        return bundle
