"""Choose chapter 10's served recipe on what a marketplace logs, with the ranker's candidate budget in view.

    .venv/bin/python benchmarks/served_choice.py [--preset book] [--out book/data/served_choice.json]

The candidates are the book's trained recipes at seed 0 (chapter 7's negatives with the softmax,
chapter 8's pairwise and hinge losses on the uniform recipe; all in the artifact cache once the seed
studies or the book have trained them). The ranking stage of chapter 10 takes about
``BUDGET`` candidates per request from the new source, so each recipe is scored at that budget on
the validation window's logged purchases (never the test window, never the buyers' latent choices),
with two cuts: its top ``BUDGET`` for every request, and one global score threshold whose lists
average ``BUDGET`` candidates (set on the same requests), which gives each request a list of its own
length, what the hinge's calibrated score is for. The served recipe and cut follow the one-standard-error
rule of ``docs/decisions.md`` (``retrieval_lib.evaluation.choice``): the fewest changes to what was
served before (:data:`PREVIOUS`) among the pairs within one standard error of the most logged purchases
passed at that budget; a test checks that ``retrieval_lib.pipeline`` serves it.
"""

from __future__ import annotations

# common imports retrieval_lib, which pins NumPy's kernels; NumPy reads the pins once, when it loads.
from common import unified_features

# isort: split
import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from retrieval_lib.evaluation.choice import one_standard_error_choice, validation_sweep_se
from retrieval_lib.evaluation.offline import EvaluationSet, evaluate
from retrieval_lib.infra.cache import source_digest
from retrieval_lib.infra.committed import write_json
from retrieval_lib.models.unified import UnifiedConfig, UnifiedRetriever, unified_model
from retrieval_lib.pipeline import LOSSES
from retrieval_lib.serving.pruning import threshold_against_top_n
from retrieval_lib.training.curriculum import negative_recipes
from retrieval_lib.training.pairs import engaged_pairs
from retrieval_lib.training.recipes import UNIFIED_TRAIN_CONFIG
from retrieval_lib.training.trainer import steps_per_epoch

#: Candidates per request the ranking stage takes from the new source (chapter 10's candidate depth).
BUDGET = 100
#: What the system served before this choice, (recipe, loss, cut): the rule counts changes from it.
PREVIOUS = ("uniform", "softmax", "top_n")
#: The first-stage validation sweep, whose paired seeds give the rule its standard error.
SWEEP = Path(__file__).resolve().parents[1] / "book" / "data" / "choices" / "validation_choices.json"
#: How deep each recipe's list is read to place a threshold with lists of ``BUDGET`` on average.
DEPTH = 1_000
#: The candidates, (chapter 7's negative recipe, a loss of ``retrieval_lib.pipeline.LOSSES``): every recipe
#: with the softmax, and chapter 8's other losses on the uniform recipe, as the book trains them.
CANDIDATES = (("inbatch", "softmax"), ("uniform", "softmax"), ("hard_from_start", "softmax"),
              ("curriculum", "softmax"), ("uniform", "pairwise"), ("uniform", "hinge"))
#: The library code the choice runs (with everything it imports): its digest stamps the file.
MODULES = ("retrieval_lib.models.unified", "retrieval_lib.evaluation.offline", "retrieval_lib.features.unified",
           "retrieval_lib.encoders.graph", "retrieval_lib.training.pretraining", "retrieval_lib.marketplace",
           "retrieval_lib.training.recipes", "retrieval_lib.training.curriculum", "retrieval_lib.serving.pruning")


def threshold_for_mean_length(scores: np.ndarray, length: int) -> float:
    """The global score threshold whose lists hold ``length`` candidates per row on average (ties kept)."""
    finite = np.sort(scores[np.isfinite(scores)])[::-1]
    return float(finite[min(length * len(scores), finite.size) - 1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="book")
    parser.add_argument("--out", default="book/data/served_choice.json")
    args = parser.parse_args()
    start = time.perf_counter()
    world, fingerprint, features = unified_features(args.preset)
    valid = EvaluationSet.from_logged_purchases(world, "valid")
    per_epoch = steps_per_epoch(len(engaged_pairs(world.observed, "train")), UNIFIED_TRAIN_CONFIG.batch_size)
    recipes = negative_recipes(per_epoch)
    rows = []
    for recipe, loss_name in CANDIDATES:
        negatives, schedule = recipes[recipe]
        model, _ = unified_model(features, fingerprint, UnifiedConfig(), replace(UNIFIED_TRAIN_CONFIG, seed=0),
                                 loss=LOSSES[loss_name], negatives=negatives, schedule=schedule, progress=False)
        retriever = UnifiedRetriever(model, features)
        summary = evaluate(retriever, valid).summary()[f"recall@{BUDGET}"]
        ranked = valid.ranking(retriever, DEPTH)
        scores, hits = retriever.candidate_scores(valid.sessions, ranked), valid.hits(ranked)
        cut = threshold_against_top_n(scores, hits, [threshold_for_mean_length(scores, BUDGET)]).iloc[0]
        row = {"recipe": recipe, "loss": loss_name, "top_n_recall": float(cut["top_n_recall"]),
               "threshold_recall": float(cut["recall"]), "threshold_mean_length": float(cut["mean_length"]),
               **{f"recall@{BUDGET}.{seg}": float(summary[seg]) for seg in ("all", "head", "tail")}}
        rows.append(row)
        print(f"{recipe} + {loss_name}: top {BUDGET} {row['top_n_recall']:.4f}, threshold "
              f"{row['threshold_recall']:.4f} at {row['threshold_mean_length']:.1f} "
              f"({time.perf_counter() - start:.0f} s)", flush=True)
    # the one-standard-error rule of docs/decisions.md: the fewest changes to what was served before
    # among the options within one standard error of the best (one seed each)
    means = {(row["recipe"], row["loss"], cut): row[f"{cut}_recall"] for row in rows for cut in ("top_n", "threshold")}
    changes = {option: sum(a != b for a, b in zip(option, PREVIOUS, strict=True)) for option in means}
    se = validation_sweep_se(json.loads(SWEEP.read_text()))
    recipe, loss_name, cut = one_standard_error_choice(means, changes, se)
    choice = {"recipe": recipe, "loss": loss_name, "cut": cut, "logged_recall": means[recipe, loss_name, cut],
              "standard_error": se, "best_logged_recall": max(means.values())}
    command = f"benchmarks/served_choice.py --preset {args.preset} --out {args.out}"
    write_json({"command": command, "preset": args.preset, "budget": BUDGET, "valid_purchases": len(valid.sessions),
                "modules": list(MODULES), "digest": source_digest(MODULES), "rows": rows, "choice": choice,
                "seconds": round(time.perf_counter() - start)}, args.out)
    print(f"served: {choice} -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
