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


def system_diagram(ax: Axes | None = None) -> Axes:
    """Draw the retrieval system at a glance: two towers, the ANN index, and the candidates it returns."""
    if ax is None:
        _, ax = plt.subplots(figsize=(10, 4))
    for x, y, w, h, label, colour in _BOXES:
        ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.01", fc=colour, ec="0.3"))
        ax.text(x + w / 2, y + h / 2, label, ha="center", va="center", fontsize=9)
    for a, b in _ARROWS:
        xa, ya, wa, ha = _BOXES[a][:4]
        xb, yb, wb, hb = _BOXES[b][:4]
        start = (xa + wa, ya + ha / 2) if xb > xa + wa else (xa + wa / 2, ya + ha)
        end = (xb, yb + hb / 2) if xb > xa + wa else (xb + wb / 2, yb)
        ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=14, color="0.25"))
    ax.text(0.40, 0.5, "cosine / inner product", ha="center", va="center", fontsize=8, style="italic")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.axis("off")
    return ax
