"""The unified two-tower model: a product tower and a query tower that meet in one cosine space.

Each component of the paper's model [reported] is a switch of :class:`UnifiedConfig`, so ablations
are configs rather than code:

* **term**: the shared hashed n-gram encoder (chapter 4), trained here: the query's only text input, as
  in the paper, and one of the listing's;
* **transformer**: the doc2query-pre-trained encoder (chapter 5), *frozen*: the listing's pooled vector
  [ours: frozen to fit a CPU budget]. With ``term`` off, the query is read by the mean of the frozen
  token embeddings instead (chapter 5's light query tower), so the query tower still sees the text;
* **graph**: frozen node2vec vectors with their in-graph flag (chapter 3), product side;
* **numeric**: quantile-transformed price, rating, reviews, age and shop sales (product side);
* **location**: buyer and shop location (both sides);
* **history**: a one-layer transformer over the user's recent queries and engaged listings (query side),
  each item embedded by the frozen token means and the engaged listing's graph vector.

Frozen and precomputed inputs arrive as named feature blocks (see :mod:`retrieval_lib.features.unified`); each
tower concatenates the enabled blocks with its trainable parts, applies a two-layer MLP, and
L2-normalises, so scores are cosines.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from retrieval_lib.encoders.term import TermEncoder
from retrieval_lib.encoders.transformer import masked_mean
from retrieval_lib.evaluation.logged import logged_recall
from retrieval_lib.features.history import HISTORY_TYPES
from retrieval_lib.features.unified import UnifiedFeatures
from retrieval_lib.infra.validation import positive_ints
from retrieval_lib.serving.exact import candidate_scores, exact_top_k
from retrieval_lib.text.hashing import HashedTexts
from retrieval_lib.training.loop import TrainConfig, TrainHistory, cached_training
from retrieval_lib.training.losses import Loss, SoftmaxLoss
from retrieval_lib.training.negatives import Catalogue, InBatchNegatives, NegativeSource
from retrieval_lib.training.pairs import TrainingPairs, engaged_pairs, validation_pairs
from retrieval_lib.training.streams import component_stream, stream_generator
from retrieval_lib.training.trainer import Schedule, fit_two_tower, training_code, training_parts

#: Components that can be switched off, in the order the ablation table lists them.
COMPONENTS: tuple[str, ...] = ("graph", "term", "transformer", "history", "location", "numeric")
#: Which frozen feature blocks each tower reads for each component.
PRODUCT_BLOCKS: dict[str, str] = {"transformer": "transformer", "graph": "graph", "numeric": "numeric",
                                  "location": "location"}
QUERY_BLOCKS: dict[str, str] = {"location": "location"}


@dataclass(frozen=True)
class UnifiedConfig:
    """Sizes of the unified model and which components it uses.

    Two design choices [ours] are switches too, so that they can be re-checked on the validation
    window: ``history_zero_start`` (the history encoder's output projection starts at zero, so a fresh
    model is the unpersonalised one) and ``query_frozen_blocks`` (the query tower also reads the query's
    frozen graph vector and the mean of its frozen token embeddings, of the components that are on; the
    paper's query tower reads text through the shared term encoder only. Chosen on logged validation
    purchases, ``benchmarks/validation_choices.py``). ``graph_dropout`` is the share of training listings whose
    graph block is hidden (zeros, flag off), so the tower also learns to score listings from text alone.
    """

    n_buckets: int = 2**18
    term_dim: int = 64
    hidden: int = 128
    out_dim: int = 64
    history_heads: int = 4
    graph: bool = True
    term: bool = True
    transformer: bool = True
    history: bool = True
    location: bool = True
    numeric: bool = True
    history_zero_start: bool = True
    query_frozen_blocks: bool = True
    graph_dropout: float = 0.5

    def __post_init__(self) -> None:
        positive_ints(self, ("n_buckets", "term_dim", "hidden", "out_dim", "history_heads"))
        if not (isinstance(self.graph_dropout, int | float) and 0.0 <= self.graph_dropout < 1.0):
            raise ValueError(f"UnifiedConfig.graph_dropout must be in [0, 1), got {self.graph_dropout!r}")
        if self.term_dim % self.history_heads:
            raise ValueError(f"UnifiedConfig.term_dim ({self.term_dim}) must be divisible by history_heads "
                             f"({self.history_heads})")
        if not (self.term or self.transformer):
            raise ValueError("UnifiedConfig needs term or transformer: the query tower must read the query's text")

    def without(self, component: str) -> UnifiedConfig:
        """The same config with one component switched off (an ablation)."""
        if component not in COMPONENTS:
            raise ValueError(f"unknown component {component!r}; choose one of {COMPONENTS}")
        return UnifiedConfig(**{**asdict(self), component: False})

    def enabled(self, blocks: dict[str, str]) -> list[str]:
        """Names of the feature blocks a tower reads under this config, in a fixed order."""
        return [block for component, block in blocks.items() if getattr(self, component)]


def mlp(n_in: int, hidden: int, n_out: int) -> nn.Sequential:
    """Linear, ReLU, linear: the projection at the top of each tower."""
    return nn.Sequential(nn.Linear(n_in, hidden), nn.ReLU(), nn.Linear(hidden, n_out))


class HistoryEncoder(nn.Module):
    """A one-layer transformer over history items, mean-pooled and projected; an empty history gives zeros.

    An item is a projection of its text vector (a query typed, a clicked title, purchased tags; frozen
    token means) plus an embedding of its type and, when the graph is on, a projection of the engaged
    listing's graph vector. The output projection starts at zero [ours], so a fresh model ignores the
    history and training starts from the unpersonalised model: with a random projection the pooled
    history dominated the query tower's input and validation recall after one epoch fell from 0.63 to
    0.45.
    """

    def __init__(self, item_dim: int, dim: int, heads: int, graph_dim: int | None, zero_start: bool = True) -> None:
        super().__init__()
        self.text = nn.Linear(item_dim, dim)
        self.kind = nn.Embedding(len(HISTORY_TYPES), dim)
        self.graph = nn.Linear(graph_dim, dim) if graph_dim else None
        layer = nn.TransformerEncoderLayer(dim, heads, 2 * dim, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 1, enable_nested_tensor=False)
        self.out = nn.Linear(dim, dim)
        if zero_start:
            nn.init.zeros_(self.out.weight)
            nn.init.zeros_(self.out.bias)

    def forward(self, items: torch.Tensor, kind: torch.Tensor, pad: torch.Tensor,
                graph: torch.Tensor | None = None) -> torch.Tensor:
        """``items``: ``(n, H, item_dim)`` text vectors; ``kind``, ``pad``: ``(n, H)``, ``pad`` True at padding."""
        x = self.text(items) + self.kind(kind)
        if self.graph is not None and graph is not None:
            x = x + self.graph(graph)
        empty = pad.all(1)
        attend = pad.clone()
        attend[empty, 0] = False  # keep softmax finite for users without history; zeroed below
        return self.out(masked_mean(self.encoder(x, src_key_padding_mask=attend), pad))


class UnifiedModel(nn.Module):
    """The product tower and the query tower.

    ``dims`` gives the width of every frozen feature block (``transformer``, ``graph``, ``numeric``,
    ``location``); only the blocks the config enables are read. With a training ``seed``, each
    component (term encoder, history encoder, the two MLPs, graph dropout) draws from a random stream
    of its own (:mod:`~retrieval_lib.training.streams`), so switching one component off leaves the
    others' initial weights and dropout masks as they were; without one (a model built to load
    weights into) torch's global generator is used.
    """

    def __init__(self, config: UnifiedConfig, dims: dict[str, int], seed: int | None = None) -> None:
        super().__init__()
        self.config = config
        self.dims = dict(dims)
        self.product_blocks = config.enabled(PRODUCT_BLOCKS)
        if config.query_frozen_blocks:  # the query's frozen blocks, of the components that are on
            extra = [b for b in ("transformer", "graph") if getattr(config, b)]
        else:
            extra = [] if config.term else ["transformer"]
        self.query_blocks = config.enabled(QUERY_BLOCKS) + extra
        missing = set(self.product_blocks + self.query_blocks) - set(dims)
        if missing:
            raise ValueError(f"feature dims missing for {sorted(missing)}")
        with component_stream(seed, "term"):
            self.term = TermEncoder(config.n_buckets, config.term_dim) if config.term else None
        term_width = config.term_dim if config.term else 0
        history_width = config.term_dim if config.history else 0
        if config.history and "history" not in dims:
            raise ValueError("feature dims missing for ['history']")
        with component_stream(seed, "history"):
            self.history = (HistoryEncoder(dims["history"], config.term_dim, config.history_heads,
                                           dims.get("graph") if config.graph else None, config.history_zero_start)
                            if config.history else None)
        with component_stream(seed, "product"):
            self.product = mlp(term_width + sum(dims[b] for b in self.product_blocks), config.hidden, config.out_dim)
        with component_stream(seed, "query"):
            self.query = mlp(term_width + history_width + sum(dims[b] for b in self.query_blocks), config.hidden,
                             config.out_dim)
        self._graph_dropout = stream_generator(seed, "graph_dropout")

    def encode_listings(self, bags: tuple[torch.Tensor, torch.Tensor], blocks: dict[str, torch.Tensor]
                        ) -> torch.Tensor:
        """Unit-norm listing vectors from term bags ``(ids, offsets)`` and frozen feature blocks."""
        parts = [self.term(*bags)] if self.config.term else []
        if self.training and self.config.graph and self.config.graph_dropout > 0:
            keep = torch.rand(len(blocks["graph"]), 1, generator=self._graph_dropout) >= self.config.graph_dropout
            blocks = {**blocks, "graph": blocks["graph"] * keep}  # as if the listing were not in the graph
        parts += [blocks[b] for b in self.product_blocks]
        return F.normalize(self.product(torch.cat(parts, dim=1)), dim=-1)

    def encode_queries(self, bags: tuple[torch.Tensor, torch.Tensor], blocks: dict[str, torch.Tensor],
                       history: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """Unit-norm query vectors.

        ``history`` holds ``items`` (``(n, H, item_dim)`` text vectors), ``kind``, ``pad`` and optionally
        ``graph`` (the items' listing graph vectors); it is required when the history component is on.
        """
        parts = [self.term(*bags)] if self.config.term else []
        if self.history is not None:
            if history is None:
                raise ValueError("this model uses the history component: pass the history inputs")
            parts.append(self.history(history["items"], history["kind"], history["pad"], history.get("graph")))
        parts += [blocks[b] for b in self.query_blocks]
        return F.normalize(self.query(torch.cat(parts, dim=1)), dim=-1)


def _check_buckets(config: UnifiedConfig, features: UnifiedFeatures) -> None:
    if config.n_buckets != features.n_buckets:
        raise ValueError(f"the model hashes into {config.n_buckets} buckets, the features into {features.n_buckets}")


class UnifiedRetriever:
    """Exact search with a trained :class:`UnifiedModel`: one query vector per session."""

    def __init__(self, model: UnifiedModel, features: UnifiedFeatures, batch_size: int = 2048) -> None:
        _check_buckets(model.config, features)
        self.model = model.eval()
        self.features = features
        self.batch_size = batch_size
        self.listing_ids = features.observed.listings["listing_id"].to_numpy(dtype=np.int64)
        with torch.no_grad():
            self.listing_vectors = torch.cat([
                model.encode_listings(*features.listings(np.arange(s, min(s + batch_size, len(self.listing_ids)))))
                for s in range(0, len(self.listing_ids), batch_size)])

    def encode_sessions(self, sessions: pd.DataFrame, history: bool = True) -> torch.Tensor:
        """Query vectors of logged sessions (``session_id``, ``user_id``, ``query``).

        ``history=False`` leaves every buyer's history out (location kept): the unpersonalised request.
        """
        if history:
            rows = self.features.session_rows(sessions["session_id"].to_numpy())
        else:
            rows = np.full(len(sessions), -1)
        return self._encode(sessions["query"].astype(str).tolist(), sessions["user_id"].to_numpy(), rows)

    def _encode(self, texts: list[str], users: np.ndarray, rows: np.ndarray) -> torch.Tensor:
        out = []
        with torch.no_grad():
            for s in range(0, len(texts), self.batch_size):
                part = slice(s, s + self.batch_size)
                out.append(self.model.encode_queries(*self.features.queries(texts[part], users[part], rows[part],
                                                                            self.model.config)))
        return torch.cat(out) if out else torch.zeros((0, self.model.config.out_dim))

    @property
    def search_space(self) -> tuple[torch.Tensor, np.ndarray]:
        """What :meth:`retrieve` searches: the listing vectors and their ids (for fast exact evaluation)."""
        return self.listing_vectors, self.listing_ids

    def retrieve(self, sessions: pd.DataFrame, k: int) -> np.ndarray:
        """Retriever interface: top-``k`` listing ids per session."""
        vectors, ids = self.search_space
        return exact_top_k(self.encode_sessions(sessions), vectors, k, item_ids=ids)[0]

    def candidate_scores(self, sessions: pd.DataFrame, ranked: np.ndarray) -> np.ndarray:
        """The model's scores of each session's candidates ``ranked`` (listing ids; ``-inf`` at padding).

        Listing ids are catalogue rows (the world numbers its listings 0, 1, ...), which this relies on.
        """
        if not np.array_equal(self.listing_ids, np.arange(len(self.listing_ids))):
            raise ValueError("candidate_scores needs listing ids numbered 0, 1, ... in catalogue order")
        return candidate_scores(self.encode_sessions(sessions), self.listing_vectors, ranked)


def fit_unified(features: UnifiedFeatures, config: UnifiedConfig, train_config: TrainConfig,
                loss: Loss | None = None, negatives: NegativeSource | dict[str, NegativeSource] | None = None,
                schedule: Schedule | None = None, progress: bool = True) -> tuple[UnifiedModel, TrainHistory]:
    """Train a unified model on training-window engagement (default: in-batch softmax).

    By default in-batch negatives are masked only when they share the listing or the whole request
    (query and user; see :func:`~retrieval_lib.training.pairs.request_keys`). ``negatives`` may name
    several sources, weighted over training by ``schedule`` (chapter 7's curriculum); sources that draw
    from the catalogue see every listing with its creation day. Early stopping watches recall@100 of a
    fixed sample of validation-window engaged pairs in their own session context.
    """
    _check_buckets(config, features)
    observed = features.observed
    pairs = TrainingPairs.of(engaged_pairs(observed, "train"))
    valid = validation_pairs(observed)
    query_bags = HashedTexts.of(pairs.query_text, features.n_buckets)
    query_blocks = features.query_blocks(pairs.query_text)
    history_rows = features.session_rows(pairs.frame["session_id"].to_numpy())

    def encode_queries(m: UnifiedModel, rows: np.ndarray) -> torch.Tensor:
        q_rows = pairs.query_row[rows]
        blocks = {k: v[q_rows] for k, v in query_blocks.items()}
        blocks["location"] = features.locations(pairs.user[rows])
        history = features.histories(history_rows[rows]) if config.history else None
        return m.encode_queries(query_bags.select(q_rows), blocks, history)

    return fit_two_tower(
        lambda: UnifiedModel(config, features.dims, seed=train_config.seed), pairs, encode_queries,
        encode_listings=lambda m, ids: m.encode_listings(*features.listings(ids)),
        validate=lambda m: logged_recall(UnifiedRetriever(m, features), valid),
        config=train_config, loss=loss or SoftmaxLoss(), negatives=negatives or InBatchNegatives("request"),
        schedule=schedule, catalogue=Catalogue.of(observed.listings), progress=progress)


def unified_model(features: UnifiedFeatures, fingerprint: str, config: UnifiedConfig | None = None,
                  train_config: TrainConfig | None = None, loss: Loss | None = None,
                  negatives: NegativeSource | dict[str, NegativeSource] | None = None,
                  schedule: Schedule | None = None, progress: bool = True) -> tuple[UnifiedModel, TrainHistory]:
    """Return :func:`fit_unified` through the artifact cache."""
    config, train_config = config or UnifiedConfig(), train_config or TrainConfig()
    loss, negatives = loss or SoftmaxLoss(), negatives or InBatchNegatives("request")
    parts = {"data": fingerprint, "features": features.digest(), "model": asdict(config),
             **training_parts(train_config, loss, negatives, schedule)}
    return cached_training("unified", parts,
                           lambda: fit_unified(features, config, train_config, loss, negatives, schedule, progress),
                           lambda: UnifiedModel(config, features.dims),
                           code=[__name__, *training_code(loss, negatives, schedule)])
