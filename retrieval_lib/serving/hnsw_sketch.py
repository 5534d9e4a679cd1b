"""A small, readable HNSW for pictures: layered neighbour graphs and the greedy descent through them.

hnswlib's graph lives in C++ and cannot be drawn. This sketch builds the same *shape* on a few
hundred 2-D points: every point draws its top layer as hnswlib does (``floor(-ln U / ln M)``), each
layer links every point on it to its ``M`` nearest points on that layer, and a search starts at the
one point of the top layer, walks greedily towards the query on each layer and drops to the next
one where it cannot get closer. Real HNSW links points while inserting them, prunes links for
diversity and keeps ``ef`` candidates instead of one; the sketch keeps only the idea.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class LayeredGraph:
    """Points, each one's top layer, and per layer a dict ``point -> neighbour points``."""

    points: np.ndarray
    level: np.ndarray
    links: list[dict[int, np.ndarray]]

    @property
    def entry(self) -> int:
        """The search's entry point: the first point on the top layer."""
        return int(np.flatnonzero(self.level == self.level.max())[0])


def layered_graph(points: np.ndarray, m: int = 4, seed: int = 0) -> LayeredGraph:
    """Draw each point's top layer (``floor(-ln U / ln m)``) and link each layer's points to their ``m`` nearest."""
    x = np.asarray(points, dtype=float)
    if x.ndim != 2 or len(x) < 2:
        raise ValueError(f"need at least two points as a 2-D array, got shape {x.shape}")
    if m < 2:
        raise ValueError(f"m must be at least 2, got {m}")
    rng = np.random.default_rng(seed)
    level = np.floor(-np.log(1.0 - rng.random(len(x))) / np.log(m)).astype(int)
    links = []
    for layer in range(level.max() + 1):
        on = np.flatnonzero(level >= layer)
        dist = np.linalg.norm(x[on, None] - x[None, on], axis=2)
        np.fill_diagonal(dist, np.inf)
        nearest = np.argsort(dist, axis=1, kind="stable")[:, : min(m, len(on) - 1)]
        links.append({int(p): on[nearest[i]] for i, p in enumerate(on)})
    return LayeredGraph(x, level, links)


def greedy_descent(graph: LayeredGraph, query: np.ndarray) -> list[tuple[int, int]]:
    """The search path as ``(layer, point)`` steps: greedy on each layer, from the top layer down to layer 0."""
    q = np.asarray(query, dtype=float)
    if q.shape != graph.points.shape[1:]:
        raise ValueError(f"query has shape {q.shape}, the points have dimension {graph.points.shape[1]}")
    here = graph.entry
    path = []
    for layer in range(len(graph.links) - 1, -1, -1):
        path.append((layer, here))
        while True:
            neighbours = graph.links[layer][here]
            best = neighbours[np.argmin(np.linalg.norm(graph.points[neighbours] - q, axis=1))]
            if np.linalg.norm(graph.points[best] - q) >= np.linalg.norm(graph.points[here] - q):
                break
            here = int(best)
            path.append((layer, here))
    return path
