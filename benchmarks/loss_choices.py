"""Choose chapter 8's loss settings on the validation window (never on the test window).

Trains chapter 6's unified model with chapter 7's in-batch and uniform negatives and each loss: the
softmax, the pairwise margin loss at several margins and the multi-part hinge at several thresholds
(and, for comparison, the grid's first hinge with in-batch negatives alone), and scores each on the
validation window's logs: recall@100 of the logged purchases by segment, the share of the top-1000
candidates that one global threshold removes while keeping 95% of the purchases they hold, and the
median score of logged pairs by interaction type. Chapter 8 uses the margin and the thresholds with
the best validation recall@100.

    .venv/bin/python benchmarks/loss_choices.py [--preset book] [--only softmax] [--seeds 0 1] [--epochs 30]

Chapter 8 shows the full run's table from ``book/data/loss_choices.json`` (written with
``--out book/data/loss_choices.json``); a test checks that the book's settings are its best rows.
"""

from __future__ import annotations

# common imports retrieval_lib, which pins NumPy's kernels; NumPy reads the pins once, when it loads.
from common import choice_parser, unified_features

# isort: split
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from retrieval_lib.evaluation.negatives import interaction_scores
from retrieval_lib.evaluation.offline import EvaluationSet, evaluate
from retrieval_lib.models.unified import UnifiedConfig, UnifiedRetriever, unified_model
from retrieval_lib.serving.pruning import pruning_effect, threshold_for_retention
from retrieval_lib.training.curriculum import Recipe, negative_recipes
from retrieval_lib.training.losses import HingeLoss, Loss, PairwiseLoss, SoftmaxLoss
from retrieval_lib.training.pairs import TrainingPairs, engaged_pairs
from retrieval_lib.training.recipes import UNIFIED_TRAIN_CONFIG
from retrieval_lib.training.trainer import describe, steps_per_epoch

#: Margins of the pairwise loss tried, in cosine units.
PAIRWISE_MARGINS = (0.1, 0.3)
#: Hinge thresholds tried, (e_click, e_cart, e_purchase, e_neg): around the book's, with wider and
#: narrower gaps, one threshold for every positive type, and a low e_neg.
HINGE_GRID = ((0.6, 0.7, 0.8, 0.5), (0.5, 0.65, 0.8, 0.4), (0.7, 0.8, 0.9, 0.6), (0.6, 0.7, 0.8, 0.4),
              (0.7, 0.7, 0.7, 0.5), (0.5, 0.6, 0.7, 0.2))
#: Chapter 8 trains every loss with chapter 7's in-batch plus uniform negatives.
NEGATIVES = "uniform"


def variants(per_epoch: int) -> dict[str, tuple[Loss, Recipe]]:
    """Variant name -> (loss, negative recipe): the book's three and variations of margin and thresholds."""
    recipes = negative_recipes(per_epoch)
    book = recipes[NEGATIVES]
    out: dict[str, tuple[Loss, Recipe]] = {"softmax": (SoftmaxLoss(), book)}
    for margin in PAIRWISE_MARGINS:
        out[f"pairwise_{margin}"] = (PairwiseLoss(margin), book)
    for e in HINGE_GRID:
        out["hinge_" + "_".join(f"{v:g}" for v in e)] = (HingeLoss(*e), book)
    out["hinge_inbatch_only"] = (HingeLoss(*HINGE_GRID[0]), recipes["inbatch"])
    return out


def main() -> None:
    parser = choice_parser("benchmarks/results/loss_choices.json")
    parser.add_argument("--epochs", type=int, default=UNIFIED_TRAIN_CONFIG.epochs,
                        help="cap on epochs (early stopping as in the book)")
    args = parser.parse_args()
    world, fingerprint, features = unified_features(args.preset)
    valid = EvaluationSet.from_logged_purchases(world, "valid")
    logged = TrainingPairs.of(engaged_pairs(world.observed, "valid"))
    rows = np.arange(len(logged))
    per_epoch = steps_per_epoch(len(engaged_pairs(world.observed, "train")), UNIFIED_TRAIN_CONFIG.batch_size)
    rows_out = []
    for name, (loss, (negatives, schedule)) in variants(per_epoch).items():
        if args.only and name not in args.only:
            continue
        for seed in args.seeds:
            start = time.perf_counter()
            model, history = unified_model(features, fingerprint, UnifiedConfig(),
                                           replace(UNIFIED_TRAIN_CONFIG, seed=seed, epochs=args.epochs), loss=loss,
                                           negatives=negatives, schedule=schedule)
            retriever = UnifiedRetriever(model, features)
            summary = evaluate(retriever, valid).summary()["recall@100"]
            ranked = valid.ranking(retriever, 1000)
            scores = retriever.candidate_scores(valid.sessions, ranked)
            hits = valid.hits(ranked)
            removed = pruning_effect(scores, hits, threshold_for_retention(scores, hits, 0.95))[1]
            queries = retriever.encode_sessions(logged.frame)
            medians = interaction_scores(queries, retriever.listing_vectors, logged, rows).groupby("kind")[
                "score"].median()
            rows_out.append({"variant": name, "seed": seed, "loss": describe(loss),
                             "best_epoch": history.best_epoch + 1, "epochs_run": len(history.valid_score),
                             **{seg: round(float(summary[seg]), 4) for seg in ("all", "head", "torso", "tail")},
                             "removed_at_keep95": round(removed, 4),
                             "median": {k: round(float(v), 3) for k, v in medians.items()},
                             "train_seconds": round(history.seconds, 1),
                             "seconds": round(time.perf_counter() - start, 1)})
            print(json.dumps(rows_out[-1]), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(rows_out, indent=1))


if __name__ == "__main__":
    main()
