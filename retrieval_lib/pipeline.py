"""The whole system in one call: from a generated world to a served :class:`~retrieval_lib.serving.search.Retriever`.

:func:`build_system` puts every chapter's piece in place, each through the artifact cache, with the
settings the book chose on the validation window:

1. the engagement graph's node2vec vectors (chapter 3), the listing tokenizer and the doc2query
   pre-trained encoder (chapter 5), and the unified model's features (chapter 6);
2. the unified model with the negatives and loss of :data:`SERVED_RECIPE`, the pair the book's
   one-standard-error rule picks on logged validation purchases at the ranker's candidate budget
   (``benchmarks/served_choice.py``, committed as ``book/data/served_choice.json``; a test keeps the
   two in step);
3. the boosting weights ``w``, tuned on the validation window's logged purchases (chapter 9);
4. an HNSW index over the hydrated listing vectors with the MIPS-to-L2 reduction, at the smallest
   setting that returns 99 per cent of the exact boosted top 100 on validation requests (chapter 9).

Steps 3 and 4 are cached together as the ``system`` artifact (``w``, the chosen setting and the saved
index), so the service loads in seconds. Nothing here reads the world's latent truth.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from retrieval_lib.encoders.graph import graph_embeddings
from retrieval_lib.features.unified import UnifiedFeatures
from retrieval_lib.infra.cache import cached, weights_digest
from retrieval_lib.infra.validation import positive_ints
from retrieval_lib.marketplace import Marketplace
from retrieval_lib.models.unified import (
    UnifiedConfig,
    UnifiedModel,
    UnifiedRetriever,
    unified_model,
)
from retrieval_lib.serving.ann import HNSWIndex, cheapest_setting, sweep_to_target
from retrieval_lib.serving.boosting import (
    W_MAX,
    PurchaseRecall,
    hydrate_listings,
    hydrate_queries,
    quality_features,
    tune_boost,
)
from retrieval_lib.serving.search import Retriever
from retrieval_lib.training.curriculum import negative_recipes
from retrieval_lib.training.losses import BOOK_HINGE, BOOK_PAIRWISE, Loss, SoftmaxLoss
from retrieval_lib.training.pairs import engaged_pairs, validation_pairs
from retrieval_lib.training.pretraining import ENCODER_CONFIG, PRETRAIN_CONFIG, doc2query_model, listing_tokenizer
from retrieval_lib.training.recipes import UNIFIED_TRAIN_CONFIG
from retrieval_lib.training.trainer import steps_per_epoch

#: The book's losses by name: chapter 6's softmax and chapter 8's pairwise margin and multi-part hinge.
LOSSES: dict[str, Loss] = {"softmax": SoftmaxLoss(), "pairwise": BOOK_PAIRWISE, "hinge": BOOK_HINGE}
#: What the system serves, (chapter 7's negative recipe, a loss of :data:`LOSSES`), cut at a fixed
#: depth: chosen on the validation window's logged purchases by the one-standard-error rule
#: (``benchmarks/served_choice.py``).
SERVED_RECIPE: tuple[str, str] = ("uniform", "softmax")


@dataclass(frozen=True)
class SystemConfig:
    """How the serving part is chosen: the tuner's trials and seed, the index grid and its recall target."""

    boost_trials: int = 40
    boost_seed: int = 0
    ms: tuple[int, ...] = (8, 16)
    efs: tuple[int, ...] = (100, 200, 400)
    target_recall: float = 0.99
    k: int = 100

    def __post_init__(self) -> None:
        positive_ints(self, ("boost_trials", "k"))
        if not self.ms or not self.efs or min(self.ms) < 2 or min(self.efs) < 1:
            raise ValueError("SystemConfig.ms (each >= 2) and efs (each >= 1) must be non-empty")
        if not 0 < self.target_recall <= 1:
            raise ValueError(f"SystemConfig.target_recall must be in (0, 1], got {self.target_recall!r}")


@dataclass(frozen=True)
class ServingChoice:
    """What :func:`serving_choice` picked on the validation window: ``w``, the index setting, its recall."""

    w: tuple[float, ...]
    m: int
    ef: int
    valid_recall: float
    valid_objective: float


def unified_features(world: Marketplace, progress: bool = False) -> UnifiedFeatures:
    """The unified model's features as chapters 5-10 build them: graph, tokenizer and doc2query through the cache."""
    observed, fingerprint = world.observed, world.config.fingerprint()
    graph = graph_embeddings(observed, fingerprint)
    tokenizer = listing_tokenizer(observed, fingerprint, vocab_size=ENCODER_CONFIG.vocab_size)
    doc2query, _ = doc2query_model(observed, fingerprint, tokenizer, ENCODER_CONFIG, PRETRAIN_CONFIG,
                                   progress=progress)
    return UnifiedFeatures.build(observed, tokenizer, doc2query.encoder, graph)


def served_model(world: Marketplace, progress: bool = False) -> tuple[UnifiedModel, UnifiedFeatures]:
    """The unified model the system serves and its features, every piece through the cache."""
    observed, fingerprint = world.observed, world.config.fingerprint()
    features = unified_features(world, progress)
    per_epoch = steps_per_epoch(len(engaged_pairs(observed, "train")), UNIFIED_TRAIN_CONFIG.batch_size)
    recipe, loss = SERVED_RECIPE
    negatives, schedule = negative_recipes(per_epoch)[recipe]
    model, _ = unified_model(features, fingerprint, UnifiedConfig(), UNIFIED_TRAIN_CONFIG, loss=LOSSES[loss],
                             negatives=negatives, schedule=schedule, progress=progress)
    return model, features


def serving_choice(model: UnifiedModel, features: UnifiedFeatures, config: SystemConfig
                   ) -> tuple[ServingChoice, HNSWIndex]:
    """Tune ``w`` and choose the hydrated index's setting on the validation window; return both and the index."""
    observed = features.observed
    exact = UnifiedRetriever(model, features)
    quality = quality_features(observed)
    objective = PurchaseRecall(exact, quality, observed, split="valid", k=config.k)
    tuning = tune_boost(objective, n_trials=config.boost_trials, seed=config.boost_seed, high=W_MAX)
    queries = hydrate_queries(exact.encode_sessions(validation_pairs(observed)), tuning.w)
    items = hydrate_listings(exact.listing_vectors, quality)
    sweep = sweep_to_target(items, queries, config.target_recall, ms=config.ms, efs=config.efs, k=config.k,
                            space="l2")
    chosen = cheapest_setting(sweep, config.target_recall)
    index = HNSWIndex(m=int(chosen["M"]), ef=int(chosen["ef"]), space="l2").build(items, exact.listing_ids)
    choice = ServingChoice(tuple(float(x) for x in tuning.w), int(chosen["M"]), int(chosen["ef"]),
                           float(chosen["recall_vs_exact"]), float(tuning.best_value))
    return choice, index


def build_system(world: Marketplace, config: SystemConfig | None = None, progress: bool = False) -> Retriever:
    """The complete served system for ``world``: the boosted :class:`Retriever` over its HNSW index.

    Every step goes through the artifact cache; the first call trains or tunes whatever is missing, later
    calls load. ``retriever.choice`` holds the :class:`ServingChoice`.
    """
    config = config or SystemConfig()
    if not isinstance(config, SystemConfig):
        raise TypeError(f"config must be a SystemConfig, got {type(config).__name__}")
    model, features = served_model(world, progress)

    def save(value: tuple[ServingChoice, HNSWIndex], folder: Path) -> None:
        choice, index = value
        (folder / "choice.json").write_text(json.dumps(asdict(choice)))
        index.save(folder / "index")

    def load(folder: Path) -> tuple[ServingChoice, HNSWIndex]:
        data = json.loads((folder / "choice.json").read_text())
        return ServingChoice(**{**data, "w": tuple(data["w"])}), HNSWIndex.load(folder / "index")

    parts = {"data": world.config.fingerprint(), "features": features.digest(), "model": weights_digest(model),
             "config": asdict(config)}
    choice, index = cached("system", parts, lambda: serving_choice(model, features, config), save, load,
                           code=__name__)
    retriever = Retriever(model, features, index, quality_features(features.observed), np.asarray(choice.w))
    retriever.choice = choice
    return retriever
