"""Graph embeddings from engagement: the query-listing graph of older logs, embedded by node2vec.

Listings that the same queries lead buyers to click, add to cart and buy end up close together, even
when their text says nothing alike (the paper's single largest gain [reported]). Only listings and
queries that appear in the graph (built from the archive before the training window, by default) get
a learned vector; the rest (cold-start listings, unseen queries) get a zero vector and a ``False``
flag, never an error.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import networkx as nx
import numpy as np
import pandas as pd

from retrieval_lib.infra.cache import cached
from retrieval_lib.infra.validation import positive_ints, positive_numbers
from retrieval_lib.marketplace import ObservedMarketplace
from retrieval_lib.serving.base import PAD, SearchResult, per_unique_query
from retrieval_lib.serving.exact import exact_top_k

#: Edge weight each kind of engagement adds (the strongest stage of an impression counts).
ENGAGEMENT_WEIGHTS: dict[str, float] = {"click": 1.0, "cart": 2.0, "purchase": 4.0}


def query_node(query: str) -> str:
    """Node name of a query in the bipartite graph."""
    return f"q:{query}"


def listing_node(listing_id: int) -> str:
    """Node name of a listing in the bipartite graph."""
    return f"l:{int(listing_id)}"


def user_node(user_id: int) -> str:
    """Node name of a buyer (only in graphs built ``with_users``)."""
    return f"u:{int(user_id)}"


def engagement_edges(logs: pd.DataFrame, weights: dict[str, float] | None = None, by: str = "query"
                     ) -> pd.DataFrame:
    """Weighted edges from logs: each engaged impression adds its strongest stage's weight.

    Returns a frame with ``<by>, listing_id, weight`` (one row per distinct pair, sorted), where ``by``
    is ``"query"`` (the paper's graph) or ``"user_id"``.
    """
    w = {**ENGAGEMENT_WEIGHTS, **(weights or {})}
    if any(v <= 0 for v in w.values()):
        raise ValueError(f"engagement weights must be positive, got {w}")
    engaged = logs[logs["click"] | logs["cart"] | logs["purchase"]]
    weight = np.where(engaged["purchase"], w["purchase"], np.where(engaged["cart"], w["cart"], w["click"]))
    edges = (pd.DataFrame({by: engaged[by].to_numpy(), "listing_id": engaged["listing_id"].to_numpy(),
                           "weight": weight})
             .groupby([by, "listing_id"], as_index=False)["weight"].sum())
    return edges.sort_values([by, "listing_id"], kind="stable").reset_index(drop=True)


def graph_logs(observed: ObservedMarketplace, split: str = "archive") -> pd.DataFrame:
    """The engagement logs a graph is built from: the ``"archive"`` or a logged window (``"train"``, ...)."""
    return observed.archive if split == "archive" else observed.logs(split)


def engagement_graph(observed: ObservedMarketplace, split: str = "archive",
                     weights: dict[str, float] | None = None, with_users: bool = False) -> nx.Graph:
    """The query-listing engagement graph of one window's logs (the archive by default).

    Nodes are named by :func:`query_node` and :func:`listing_node` and carry ``bipartite`` = 0 for
    queries, 1 for listings. Edge ``weight`` is the summed engagement. ``with_users`` adds buyer nodes
    (``bipartite`` = 2) linked to the listings they engaged with: an extension of ours, not the paper's.

    The book builds the graph from the archive, the window *before* two-tower training: a graph built
    from the training window itself holds every training pair as an edge, so a model can learn "in the
    graph" instead of "relevant" (see ``docs/decisions.md``).
    """
    logs = graph_logs(observed, split)
    edges = engagement_edges(logs, weights)
    graph = nx.Graph()
    graph.add_nodes_from((query_node(q) for q in edges["query"].unique()), bipartite=0)
    graph.add_nodes_from((listing_node(i) for i in edges["listing_id"].unique()), bipartite=1)
    graph.add_weighted_edges_from(
        (query_node(q), listing_node(i), float(x))
        for q, i, x in zip(edges["query"], edges["listing_id"], edges["weight"], strict=True))
    if with_users:
        user_edges = engagement_edges(logs, weights, by="user_id")
        graph.add_nodes_from((user_node(u) for u in user_edges["user_id"].unique()), bipartite=2)
        graph.add_weighted_edges_from(
            (user_node(u), listing_node(i), float(x))
            for u, i, x in zip(user_edges["user_id"], user_edges["listing_id"], user_edges["weight"], strict=True))
    return graph


@dataclass(frozen=True)
class Node2VecConfig:
    """Settings of node2vec, reproducible with one worker and a fixed seed.

    ``p`` (return) and ``q`` (in-out) bias the walks: a small ``q`` explores outward (communities), a
    small ``p`` stays local (structural roles). ``with_users`` adds buyer nodes to the graph (ours).
    """

    dim: int = 32
    walk_length: int = 16
    num_walks: int = 6
    p: float = 1.0
    q: float = 0.5
    window: int = 5
    epochs: int = 1
    seed: int = 0
    with_users: bool = False
    weights: dict[str, float] = field(default_factory=lambda: dict(ENGAGEMENT_WEIGHTS))

    def __post_init__(self) -> None:
        positive_ints(self, ("dim", "walk_length", "num_walks", "window", "epochs"))
        positive_numbers(self, ("p", "q"))


def node2vec_vectors(graph: nx.Graph, config: Node2VecConfig) -> dict[str, np.ndarray]:
    """Embed every node of ``graph`` with the ``node2vec`` package (biased walks + skip-gram)."""
    from node2vec import Node2Vec  # imported lazily: it pulls in gensim

    if graph.number_of_nodes() == 0:
        return {}
    n2v = Node2Vec(graph, dimensions=config.dim, walk_length=config.walk_length, num_walks=config.num_walks,
                   p=config.p, q=config.q, weight_key="weight", workers=1, seed=config.seed, quiet=True)
    model = n2v.fit(window=config.window, min_count=1, epochs=config.epochs, seed=config.seed, workers=1)
    return {node: np.asarray(model.wv[node], dtype=np.float32) for node in graph.nodes}


@dataclass(frozen=True)
class GraphEmbeddings:
    """Learned node vectors for listings and queries, with explicit cold-start handling.

    ``listing_vectors[i]`` is listing ``i``'s vector (zeros if it is not in the graph, see
    ``listing_in_graph``); query vectors are looked up by query text.
    """

    listing_vectors: np.ndarray
    listing_in_graph: np.ndarray
    query_index: dict[str, int]
    query_vectors: np.ndarray
    fit_seconds: float

    @property
    def dim(self) -> int:
        """Embedding dimension."""
        return self.listing_vectors.shape[1]

    def listings(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Vectors and in-graph flags of listing ids (unknown or cold-start ids: zeros and ``False``)."""
        ids = np.asarray(ids, dtype=np.int64)
        known = (ids >= 0) & (ids < len(self.listing_vectors))
        known[known] = self.listing_in_graph[ids[known]]
        vectors = np.zeros((ids.size, self.dim), dtype=np.float32)
        vectors[known] = self.listing_vectors[ids[known]]
        return vectors, known

    def queries(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Vectors and in-graph flags of query texts (unseen queries: zeros and ``False``)."""
        rows = np.array([self.query_index.get(t, -1) for t in texts], dtype=np.int64)
        known = rows >= 0
        vectors = np.zeros((rows.size, self.dim), dtype=np.float32)
        vectors[known] = self.query_vectors[rows[known]]
        return vectors, known

    def save(self, folder: Path) -> None:
        """Write the embeddings as ``.npy`` arrays plus a JSON query index."""
        np.save(folder / "listing_vectors.npy", self.listing_vectors)
        np.save(folder / "listing_in_graph.npy", self.listing_in_graph)
        np.save(folder / "query_vectors.npy", self.query_vectors)
        (folder / "meta.json").write_text(json.dumps({"query_index": self.query_index,
                                                      "fit_seconds": self.fit_seconds}))

    @classmethod
    def load(cls, folder: Path) -> GraphEmbeddings:
        """Read embeddings written by :meth:`save` (raises on missing or inconsistent files)."""
        meta = json.loads((folder / "meta.json").read_text())
        out = cls(listing_vectors=np.load(folder / "listing_vectors.npy", allow_pickle=False),
                  listing_in_graph=np.load(folder / "listing_in_graph.npy", allow_pickle=False),
                  query_index=meta["query_index"],
                  query_vectors=np.load(folder / "query_vectors.npy", allow_pickle=False),
                  fit_seconds=float(meta["fit_seconds"]))
        if (len(out.listing_in_graph) != len(out.listing_vectors)
                or len(out.query_vectors) != len(out.query_index)):
            raise ValueError("inconsistent graph embedding files")
        return out


def fit_graph_embeddings(observed: ObservedMarketplace, config: Node2VecConfig | None = None,
                         split: str = "archive") -> GraphEmbeddings:
    """Build the engagement graph of ``split`` and embed it (no cache; see :func:`graph_embeddings`)."""
    config = config or Node2VecConfig()
    graph = engagement_graph(observed, split, config.weights, config.with_users)
    start = time.perf_counter()
    vectors = node2vec_vectors(graph, config)
    seconds = time.perf_counter() - start
    n_listings = len(observed.listings)
    listing_vectors = np.zeros((n_listings, config.dim), dtype=np.float32)
    in_graph = np.zeros(n_listings, dtype=bool)
    queries: list[str] = []
    query_vectors: list[np.ndarray] = []
    for node, vec in vectors.items():
        kind, _, name = node.partition(":")
        if kind == "l":
            listing_vectors[int(name)] = vec
            in_graph[int(name)] = True
        elif kind == "q":
            queries.append(name)
            query_vectors.append(vec)
    return GraphEmbeddings(listing_vectors=listing_vectors, listing_in_graph=in_graph,
                           query_index={q: i for i, q in enumerate(queries)},
                           query_vectors=np.stack(query_vectors) if query_vectors
                           else np.zeros((0, config.dim), dtype=np.float32),
                           fit_seconds=seconds)


def graph_embeddings(observed: ObservedMarketplace, fingerprint: str, config: Node2VecConfig | None = None,
                     split: str = "archive") -> GraphEmbeddings:
    """Return :func:`fit_graph_embeddings` through the artifact cache.

    The key is the data ``fingerprint`` (e.g. ``world.config.fingerprint()``), the node2vec config and
    the source of this module and its imports.
    """
    config = config or Node2VecConfig()
    parts = {"data": fingerprint, "split": split, "config": asdict(config)}
    return cached("graph", parts, lambda: fit_graph_embeddings(observed, config, split),
                  lambda value, folder: value.save(folder), GraphEmbeddings.load, code=__name__)


class GraphRetriever:
    """Retrieve with graph embeddings alone.

    A query seen in the graph's logs finds the listings nearest to its node. An unseen query has no
    vector and gets no result (padding): the cold-start limit of a purely engagement-based model.
    """

    def __init__(self, embeddings: GraphEmbeddings) -> None:
        self.embeddings = embeddings
        self.listing_ids = np.flatnonzero(embeddings.listing_in_graph)
        norms = np.linalg.norm(embeddings.listing_vectors[self.listing_ids], axis=1, keepdims=True)
        self.listing_vectors = embeddings.listing_vectors[self.listing_ids] / np.maximum(norms, 1e-12)

    def retrieve(self, sessions: pd.DataFrame, k: int) -> np.ndarray:
        """Top-``k`` listings by cosine to the session's query node (padding for unseen queries)."""
        return per_unique_query(sessions, lambda queries: self.search(queries, k).ids)

    def search(self, queries: list[str], k: int) -> SearchResult:
        """Top-``k`` listing ids and cosines per query text (all padding for a query the graph has not seen)."""
        vectors, known = self.embeddings.queries(queries)
        vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        ids, scores = exact_top_k(vectors, self.listing_vectors, k, item_ids=self.listing_ids)
        ids[~known], scores[~known] = PAD, -np.inf
        return SearchResult(ids, scores)
