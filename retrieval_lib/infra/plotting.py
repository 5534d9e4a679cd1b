"""Figures that several chapters share (the system diagram, consistent segment colours, seed intervals)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

if TYPE_CHECKING:
    from retrieval_lib.evaluation.uncertainty import MultiBootstrapDifference

#: One colour per query segment, used by every chapter.
SEGMENT_COLOURS = {"head": "#1b9e77", "torso": "#d95f02", "tail": "#7570b3"}

#: Boxes of the system diagram: (x, y, width, height, label, colour).
_BOXES = (
    (0.02, 0.62, 0.2, 0.3, "Query\n+ user history\n+ location", "#fde0c5"),
    (0.30, 0.62, 0.2, 0.3, "Query tower\n(light, per request)", "#fbb4ae"),
    (0.02, 0.08, 0.2, 0.3, "Listing text, graph,\nterms, quality,\nlocation", "#ccebc5"),
    (0.30, 0.08, 0.2, 0.3, "Product tower\n(heavy, offline)", "#b3cde3"),
    (0.58, 0.08, 0.18, 0.3, "ANN index\n(hydrated vectors\nfor boosting)", "#decbe4"),
    (0.58, 0.62, 0.18, 0.3, "ANN search\n+ threshold", "#decbe4"),
    (0.82, 0.35, 0.16, 0.3, "Candidates\nfor the ranker", "#e5d8bd"),
)
_ARROWS = ((0, 1), (2, 3), (3, 4), (1, 5), (4, 5), (5, 6))


#: Boxes of the unified model's architecture (chapter 6).
_UNIFIED_BOXES = (
    (0.00, 0.80, 0.15, 0.14, "query text", "#fde0c5"),
    (0.00, 0.60, 0.15, 0.14, "user history\n(queries, clicks,\npurchases)", "#fde0c5"),
    (0.22, 0.44, 0.2, 0.10, "user location", "#fde0c5"),
    (0.22, 0.79, 0.2, 0.16, "term encoder (shared)\n+ frozen token means\n+ graph vector", "#fbb4ae"),
    (0.22, 0.60, 0.2, 0.14, "1-layer transformer over\nitems (frozen token means\n+ graph vectors)", "#fbb4ae"),
    (0.50, 0.62, 0.16, 0.22, "concat -> MLP\n-> L2 norm\n(query tower)", "#fbb4ae"),
    (0.00, 0.05, 0.15, 0.3, "listing title,\ntags, taxonomy;\nprice, rating,\nreviews, age;\nshop location", "#ccebc5"),
    (0.22, 0.05, 0.2, 0.3,
     "term encoder (shared)\n+ frozen doc2query\nencoder + frozen\nnode2vec + quantile\nfeatures + location",
     "#b3cde3"),
    (0.50, 0.08, 0.16, 0.22, "concat -> MLP\n-> L2 norm\n(product tower)", "#b3cde3"),
    (0.76, 0.35, 0.22, 0.24, "cosine score;\nsoftmax over\nin-batch negatives", "#decbe4"),
)
_UNIFIED_ARROWS = ((0, 3), (1, 4), (3, 5), (4, 5), (2, 5), (6, 7), (7, 8), (5, 9), (8, 9))


#: Boxes of the whole system (chapter 10): the online path on top, the offline pieces below, each with its chapter.
_WHOLE_BOXES = (
    (0.015, 0.60, 0.107, 0.30, "request:\nquery text\n+ user", "#fde0c5"),
    (0.151, 0.60, 0.116, 0.30, "HTTP service\n(FastAPI,\nch. 10)", "#e5d8bd"),
    (0.296, 0.60, 0.116, 0.30, "query tower\nwith history\n(ch. 6)", "#fbb4ae"),
    (0.442, 0.60, 0.107, 0.30, "[q; w]\nboost\n(ch. 9)", "#fbb4ae"),
    (0.578, 0.60, 0.126, 0.30, "HNSW search\n+ exact re-rank\n(ch. 9)", "#decbe4"),
    (0.733, 0.60, 0.126, 0.30, "ranker over\nBM25 + these\n(A/B, ch. 10)", "#e5d8bd"),
    (0.888, 0.60, 0.097, 0.30, "buyers\n(A/B test,\nch. 10)", "#fde0c5"),
    (0.015, 0.08, 0.107, 0.30, "logs and\ncatalogue\n(ch. 1)", "#ccebc5"),
    (0.151, 0.08, 0.126, 0.30, "graph (ch. 3)\nterms (ch. 4)\ndoc2query\n(ch. 5)", "#ccebc5"),
    (0.306, 0.08, 0.136, 0.30, "training:\n{recipe} negatives\n(ch. 7), {loss}\n(ch. 6, 8)", "#b3cde3"),
    (0.471, 0.08, 0.107, 0.30, "product\ntower\n(ch. 6)", "#b3cde3"),
    (0.607, 0.08, 0.126, 0.30, "index of\n[p; f(p)]\n(ch. 9)", "#decbe4"),
)
_WHOLE_ARROWS = ((0, 1), (1, 2), (2, 3), (3, 4), (4, 5), (5, 6), (7, 8), (8, 9), (9, 10), (10, 11), (9, 2),
                 (11, 4))


def box_diagram(boxes: tuple, arrows: tuple, ax: Axes | None = None, note: str | None = None) -> Axes:
    """Draw labelled boxes ``(x, y, width, height, label, colour)`` joined by arrows ``(from, to)``."""
    if ax is None:
        _, ax = plt.subplots(figsize=(10, 4))
    for x, y, w, h, label, colour in boxes:
        ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.01", fc=colour, ec="0.3"))
        ax.text(x + w / 2, y + h / 2, label, ha="center", va="center", fontsize=9)
    for a, b in arrows:
        xa, ya, wa, ha = boxes[a][:4]
        xb, yb, wb, hb = boxes[b][:4]
        start = (xa + wa, ya + ha / 2) if xb > xa + wa else (xa + wa / 2, ya + ha)
        end = (xb, yb + hb / 2) if xb > xa + wa else (xb + wb / 2, yb)
        ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=14, color="0.25"))
    if note:
        ax.text(0.40, 0.5, note, ha="center", va="center", fontsize=8, style="italic")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.axis("off")
    return ax


def system_diagram(ax: Axes | None = None) -> Axes:
    """Draw the retrieval system at a glance: two towers, the ANN index, and the candidates it returns."""
    return box_diagram(_BOXES, _ARROWS, ax, note="cosine / inner product")


def unified_architecture(ax: Axes | None = None) -> Axes:
    """Draw the unified two-tower model of chapter 6: every input, both towers, and the loss."""
    return box_diagram(_UNIFIED_BOXES, _UNIFIED_ARROWS, ax)


def whole_system_diagram(ax: Axes | None = None) -> Axes:
    """Draw the whole system of chapter 10: the request path on top, what is built offline below.

    The training box names the recipe the pipeline serves (``retrieval_lib.pipeline.SERVED_RECIPE``).
    """
    from retrieval_lib.pipeline import SERVED_RECIPE

    recipe, loss = SERVED_RECIPE
    boxes = tuple((*box[:4], box[4].format(recipe=recipe.replace("_", " "), loss=loss), box[5])
                  for box in _WHOLE_BOXES)
    return box_diagram(boxes, _WHOLE_ARROWS, ax)


def seed_intervals(per_seed: pd.DataFrame, multi: MultiBootstrapDifference, ax: Axes | None = None,
                   title: str = "", ylabel: str = "difference") -> Axes:
    """One comparison at every seed (dot and buyers-only interval) beside the multi-bootstrap over all of them.

    ``per_seed`` is :meth:`~retrieval_lib.evaluation.seed_study.SeedStudy.per_seed`; the right-most
    bar is the multi-bootstrap interval (seeds and buyers resampled together), the grey one next to it
    the t-interval over the per-seed differences, and the dashed line their mean.
    """
    ax = ax or plt.subplots(figsize=(7, 3.5))[1]
    x = np.arange(len(per_seed))
    spread = [per_seed["diff"] - per_seed["ci_low"], per_seed["ci_high"] - per_seed["diff"]]
    ax.errorbar(x, per_seed["diff"], yerr=spread, fmt="o", color="C0", capsize=3,
                label="one seed: buyers-only 95% interval")
    right = len(per_seed) + 0.5
    ax.errorbar([right], [multi.mean], yerr=[[multi.mean - multi.ci_low], [multi.ci_high - multi.mean]], fmt="D",
                color="C3", capsize=5, lw=2.5, label="all seeds: multi-bootstrap")
    ax.errorbar([right + 1], [multi.mean], yerr=[[multi.mean - multi.t_low], [multi.t_high - multi.mean]], fmt="none",
                color="0.5", capsize=5, lw=1.5, label="all seeds: t-interval")
    ax.axhline(0, color="0.3", lw=0.8)
    ax.axhline(multi.mean, color="C3", lw=0.8, ls="--")
    ax.set_xticks([*x, right + 0.5], [*map(str, per_seed.index), "all"])
    ax.set(xlabel="training seed", ylabel=ylabel, title=title)
    return ax


def seed_spread(table: pd.DataFrame, ax: Axes | None = None, title: str = "", ylabel: str = "score") -> Axes:
    """Seeds x procedures: every seed's score as a dot, with each procedure's mean and one SD either side.

    What a remedy for seed noise should do is visible at a glance: a tighter column of dots (a smaller
    SD) at no lower mean.
    """
    ax = ax or plt.subplots(figsize=(6, 3.5))[1]
    for i, name in enumerate(table.columns):
        values = table[name].to_numpy(dtype=float)
        jitter = np.linspace(-0.12, 0.12, len(values))
        ax.plot(i + jitter, values, "o", color=f"C{i}", alpha=0.7)
        mean, sd = values.mean(), values.std(ddof=1)
        ax.errorbar([i + 0.3], [mean], yerr=[sd], fmt="_", color="0.2", capsize=6, lw=1.5, markersize=14)
    ax.set_xticks(range(len(table.columns)), list(table.columns))
    ax.set(title=title, ylabel=ylabel)
    return ax
