"""Figures that several chapters share (the system diagram, consistent segment colours)."""

from __future__ import annotations

import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

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
    (0.22, 0.80, 0.2, 0.14, "term encoder\n(shared)", "#fbb4ae"),
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
