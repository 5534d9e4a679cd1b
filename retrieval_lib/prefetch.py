"""The book's trained models, computed ahead of the chapters that load them (what ``make book`` runs first).

A chapter is one kernel that runs its cells in order, so a chapter that trains three models and then
evaluates them keeps one of the machine's two cores idle most of the time, and the chapters that load
its models wait for all of it. The build (``book/build.py``) therefore runs the book's expensive
artifacts as :data:`JOBS`, each in a process of its own beside the chapters, as soon as what it needs
exists; a chapter starts once its models are in the artifact cache and loads them there.

Each job makes exactly the calls its chapters make (the same configs, hence the same cache keys), so
a chapter finds every model it asks for; ``tests/test_book.py`` runs every job after the chapters
on the ``tiny`` preset and checks that none of them computes anything new. Run one by hand with
``python -m retrieval_lib.prefetch NAME [NAME ...]`` (``--list`` names them); the preset is the
chapters' (``$RETRIEVAL_LIB_PRESET``, default ``book``). A model trained here is bit for bit the one
the chapter would train: same code, same seed, same thread count (the numeric pins travel in the
environment); only its recorded training seconds depend on what ran beside it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from retrieval_lib.encoders.pretrained import (
    pretrained_listing_vectors,
    pretrained_query_vectors,
    with_pretrained_block,
)
from retrieval_lib.marketplace import Marketplace, default_preset, generate
from retrieval_lib.models.unified import UnifiedConfig, unified_model
from retrieval_lib.pipeline import build_system, unified_features
from retrieval_lib.training.curriculum import negative_recipes
from retrieval_lib.training.losses import BOOK_HINGE, BOOK_PAIRWISE
from retrieval_lib.training.pairs import engaged_pairs
from retrieval_lib.training.pretraining import ENCODER_CONFIG, PRETRAIN_CONFIG, doc2query_model, listing_tokenizer
from retrieval_lib.training.recipes import UNIFIED_TRAIN_CONFIG
from retrieval_lib.training.trainer import steps_per_epoch

#: The components chapter 6 leaves out one at a time (its ablation table, seed 0).
ABLATED = ("graph", "term", "transformer", "history", "location")


def book_world() -> Marketplace:
    """The chapters' world: the default preset at seed 0, generated once (chapter 1) and then loaded."""
    return generate(default_preset(), seed=0, cache=True)


def doc2query(world: Marketplace) -> None:
    """Chapter 5's listing tokenizer and doc2query pre-trained encoder."""
    observed, fingerprint = world.observed, world.config.fingerprint()
    tokenizer = listing_tokenizer(observed, fingerprint, vocab_size=ENCODER_CONFIG.vocab_size)
    doc2query_model(observed, fingerprint, tokenizer, ENCODER_CONFIG, PRETRAIN_CONFIG, progress=False)


def sentence_vectors(world: Marketplace) -> None:
    """Chapter 5's off-the-shelf encoder's vectors of every listing and every logged query."""
    observed, fingerprint = world.observed, world.config.fingerprint()
    pretrained_listing_vectors(observed, fingerprint, progress=False)
    pretrained_query_vectors(observed, fingerprint, progress=False)


def full_model(world: Marketplace) -> None:
    """The unified model with in-batch negatives (chapter 5's comparison, chapter 6's model, chapter 7's baseline)."""
    unified_model(unified_features(world), world.config.fingerprint(), UnifiedConfig(), UNIFIED_TRAIN_CONFIG,
                  progress=False)


def ablations(components: Sequence[str]) -> Callable[[Marketplace], None]:
    """Chapter 6's models with one of ``components`` left out each."""
    def train(world: Marketplace) -> None:
        built = unified_features(world)
        for component in components:
            unified_model(built, world.config.fingerprint(), UnifiedConfig().without(component),
                          UNIFIED_TRAIN_CONFIG, progress=False)
    return train


def _recipes(world: Marketplace) -> dict:
    per_epoch = steps_per_epoch(len(engaged_pairs(world.observed, "train")), UNIFIED_TRAIN_CONFIG.batch_size)
    return negative_recipes(per_epoch)


def negatives(names: Sequence[str]) -> Callable[[Marketplace], None]:
    """Chapter 7's models with the negatives of ``names`` (``uniform`` is chapters 8-10's softmax model)."""
    def train(world: Marketplace) -> None:
        built, recipes = unified_features(world), _recipes(world)
        for name in names:
            sources, schedule = recipes[name]
            unified_model(built, world.config.fingerprint(), UnifiedConfig(), UNIFIED_TRAIN_CONFIG,
                          negatives=sources, schedule=schedule, progress=False)
    return train


def losses(world: Marketplace) -> None:
    """Chapter 8's models with the pairwise and the multi-part hinge loss (uniform negatives)."""
    built = unified_features(world)
    sources, schedule = _recipes(world)["uniform"]
    for loss in (BOOK_PAIRWISE, BOOK_HINGE):
        unified_model(built, world.config.fingerprint(), UnifiedConfig(), UNIFIED_TRAIN_CONFIG, loss=loss,
                      negatives=sources, schedule=schedule, progress=False)


def pretrained_block(world: Marketplace) -> None:
    """Chapter 5's unified model with the off-the-shelf encoder as its frozen block, both sides."""
    observed, fingerprint = world.observed, world.config.fingerprint()
    listing_vectors, _ = pretrained_listing_vectors(observed, fingerprint, progress=False)
    block = with_pretrained_block(unified_features(world), listing_vectors,
                                  pretrained_query_vectors(observed, fingerprint, progress=False))
    unified_model(block, fingerprint, UnifiedConfig(), UNIFIED_TRAIN_CONFIG, progress=False)


def served_system(world: Marketplace) -> None:
    """Chapter 10's served system: the boosting weights and the HNSW index over the served model's vectors."""
    build_system(world)


@dataclass(frozen=True)
class Job:
    """One build step: what must exist first (chapters or other jobs), and the function that makes its models."""

    needs: tuple[str, ...]
    run: Callable[[Marketplace], None]


_DOC2QUERY = ("01_marketplace", "doc2query", "03_graph_embeddings")

#: The build's jobs by name. ``needs`` names chapters (``01_marketplace`` makes the world, chapter 3 the
#: graph) and jobs; ``book/build.py`` makes each chapter wait for the jobs whose models it loads.
JOBS: dict[str, Job] = {
    "doc2query": Job(("01_marketplace",), doc2query),
    "sentence_vectors": Job(("01_marketplace",), sentence_vectors),
    "unified": Job(_DOC2QUERY, full_model),
    "uniform": Job(_DOC2QUERY, negatives(("uniform",))),
    "mined": Job(_DOC2QUERY, negatives(("hard_from_start", "curriculum"))),
    "ablations_1": Job(_DOC2QUERY, ablations(ABLATED[:3])),
    "ablations_2": Job(_DOC2QUERY, ablations(ABLATED[3:])),
    "losses": Job(_DOC2QUERY, losses),
    "pretrained_block": Job((*_DOC2QUERY, "sentence_vectors"), pretrained_block),
    "system": Job((*_DOC2QUERY, "uniform"), served_system),
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the named jobs in order in this process (``--list`` prints the names); return the exit code."""
    parser = argparse.ArgumentParser(prog="python -m retrieval_lib.prefetch", description=__doc__.split("\n")[0])
    parser.add_argument("jobs", nargs="*", help="job names, in the order to run them")
    parser.add_argument("--list", action="store_true", help="print every job's name and what it needs")
    args = parser.parse_args(argv)
    if args.list:
        for name, job in JOBS.items():
            print(f"{name}: needs {', '.join(job.needs)}")
        return 0
    unknown = [name for name in args.jobs if name not in JOBS]
    if unknown or not args.jobs:
        parser.error(f"unknown jobs {unknown}; choose from {sorted(JOBS)}" if unknown else "name at least one job")
    world = book_world()
    for name in args.jobs:
        JOBS[name].run(world)
    return 0


if __name__ == "__main__":
    sys.exit(main())
