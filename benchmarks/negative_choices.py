"""Choose chapter 7's negative settings on the validation window (never on the test window).

Trains the unified model of chapter 6 with each negative recipe (in-batch only, plus uniform
negatives, mined hard negatives from step 0, the paper's curriculum) and variants of the miner's
rank window, the number of negatives and the curriculum's warm-up and ramp, and scores each by
recall@100 of the validation window's logged purchases (what a marketplace logs; never the
buyers' latent whole-catalogue choices). Chapter 7 uses the settings chosen here.

    .venv/bin/python benchmarks/negative_choices.py [--preset book] [--only curriculum] [--seeds 0 1]
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

from common import choice_parser, unified_features

from retrieval_lib.evaluation.offline import EvaluationSet, evaluate
from retrieval_lib.models.unified import UnifiedConfig, UnifiedRetriever, unified_model
from retrieval_lib.training.curriculum import Recipe, negative_recipes
from retrieval_lib.training.negatives import HardInBatchNegatives, InBatchNegatives
from retrieval_lib.training.pairs import engaged_pairs
from retrieval_lib.training.recipes import UNIFIED_TRAIN_CONFIG
from retrieval_lib.training.trainer import steps_per_epoch


def recipes(per_epoch: int) -> dict[str, Recipe]:
    """Variant name -> (negative sources, schedule): the book's four and variations of their settings."""
    book = negative_recipes(per_epoch)
    out = dict(book)
    out["hard_inbatch"] = ({"inbatch": InBatchNegatives("request"), "hard": HardInBatchNegatives(8)}, None)
    for window in ((1, 51), (11, 101), (51, 201), (101, 301)):
        name = f"{window[0]}_{window[1]}"
        variant = negative_recipes(per_epoch, window=window)
        out[f"hard_from_start_{name}"] = variant["hard_from_start"]
        out[f"curriculum_{name}"] = variant["curriculum"]
    for n in (1, 4):
        out[f"curriculum_n{n}"] = negative_recipes(per_epoch, n_mined=n)["curriculum"]
    out["curriculum_fast_ramp"] = negative_recipes(per_epoch, warmup_epochs=0.5, ramp_epochs=0.5)["curriculum"]
    out["curriculum_slow_ramp"] = negative_recipes(per_epoch, warmup_epochs=2.0, ramp_epochs=3.0)["curriculum"]
    out["curriculum_floor_half"] = negative_recipes(per_epoch, easy_floor=0.5)["curriculum"]
    # second stage: the switches that beat the curriculum one at a time (logged purchases), combined
    out["curriculum_1_51_floor_half"] = negative_recipes(per_epoch, window=(1, 51), easy_floor=0.5)["curriculum"]
    return out


def main() -> None:
    parser = choice_parser("benchmarks/results/negative_choices.json")
    args = parser.parse_args()
    world, fingerprint, features = unified_features(args.preset)
    observed = world.observed
    valid = EvaluationSet.from_logged_purchases(world, "valid")
    per_epoch = steps_per_epoch(len(engaged_pairs(observed, "train")), UNIFIED_TRAIN_CONFIG.batch_size)
    rows = []
    for name, (negatives, schedule) in recipes(per_epoch).items():
        if args.only and name not in args.only:
            continue
        for seed in args.seeds:
            start = time.perf_counter()
            model, history = unified_model(features, fingerprint, UnifiedConfig(),
                                           replace(UNIFIED_TRAIN_CONFIG, seed=seed), negatives=negatives,
                                           schedule=schedule)
            summary = evaluate(UnifiedRetriever(model, features), valid).summary()["recall@100"]
            rows.append({"variant": name, "seed": seed, "best_epoch": history.best_epoch + 1,
                         "epochs_run": len(history.valid_score), "valid_curve": [round(v, 4) for v in
                                                                                 history.valid_score],
                         **{seg: round(float(summary[seg]), 4) for seg in ("all", "head", "torso", "tail")},
                         "train_seconds": round(history.seconds, 1), "sources": history.sources,
                         "seconds": round(time.perf_counter() - start, 1)})
            print(json.dumps(rows[-1]), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
