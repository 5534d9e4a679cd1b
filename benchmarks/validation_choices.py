"""Re-check chapter 6's design choices on the validation window (never on the test window).

Each choice is a switch: the accidental-hit mask (per request vs per query text), the history
encoder's zero start, the query tower's inputs (paper: text + location + history; or also the
query's frozen graph vector and token means), and graph dropout (0.5 vs none). Every variant is
trained with the chapter's schedule and scored by recall@100 of the validation window's logged
purchases (what a marketplace logs; never the buyers' latent whole-catalogue choices). The rule
(docs/decisions.md): the one-standard-error rule, fewest changes within one standard error of the
best mean over seeds 0 and 1. First stage: each switch against the paper's query side; second
stage: the switches that beat it, combined.

    .venv/bin/python benchmarks/validation_choices.py [--preset book] [--out benchmarks/results/choices.json]
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

from common import choice_parser, unified_features

from retrieval_lib.evaluation.offline import EvaluationSet, evaluate
from retrieval_lib.models.unified import UnifiedConfig, UnifiedRetriever, unified_model
from retrieval_lib.training.negatives import InBatchNegatives
from retrieval_lib.training.recipes import UNIFIED_TRAIN_CONFIG

#: The paper's query side (text through the term encoder, location, history), the first-stage base.
PAPER_QUERY = UnifiedConfig(query_frozen_blocks=False)
#: Every variant names its switches explicitly, so the table reproduces whatever the defaults are.
VARIANTS = {
    # first stage: each switch against the paper's query side
    "paper's query side (request mask, zero start, graph dropout 0.5)": (PAPER_QUERY, InBatchNegatives("request")),
    "query-text mask": (PAPER_QUERY, InBatchNegatives("query")),
    "random history start": (replace(PAPER_QUERY, history_zero_start=False), InBatchNegatives("request")),
    "query graph + token means (chosen)": (UnifiedConfig(query_frozen_blocks=True), InBatchNegatives("request")),
    "no graph dropout": (replace(PAPER_QUERY, graph_dropout=0.0), InBatchNegatives("request")),
    # second stage: the switches that beat the first-stage base, combined with the query's frozen blocks
    "query graph + token means, query-text mask": (UnifiedConfig(query_frozen_blocks=True),
                                                   InBatchNegatives("query")),
    "query graph + token means, no graph dropout": (UnifiedConfig(query_frozen_blocks=True, graph_dropout=0.0),
                                                    InBatchNegatives("request")),
    "query graph + token means, query-text mask, no graph dropout": (
        UnifiedConfig(query_frozen_blocks=True, graph_dropout=0.0), InBatchNegatives("query")),
    # references, on the first-stage base
    "no history (reference)": (PAPER_QUERY.without("history"), InBatchNegatives("request")),
    "no graph (reference)": (PAPER_QUERY.without("graph"), InBatchNegatives("request")),
}


def main() -> None:
    parser = choice_parser("benchmarks/results/validation_choices.json", "variants whose name contains one of these")
    args = parser.parse_args()
    world, fingerprint, features = unified_features(args.preset)
    valid = EvaluationSet.from_logged_purchases(world, "valid")
    rows = []
    for name, (config, negatives) in VARIANTS.items():
        if args.only and not any(part in name for part in args.only):
            continue
        for seed in args.seeds:
            start = time.perf_counter()
            model, history = unified_model(features, fingerprint, config, replace(UNIFIED_TRAIN_CONFIG, seed=seed),
                                           negatives=negatives)
            summary = evaluate(UnifiedRetriever(model, features), valid).summary()["recall@100"]
            rows.append({"variant": name, "seed": seed, "best_epoch": history.best_epoch + 1,
                         "epochs_run": len(history.valid_score), "stopped_early": history.stopped_early,
                         **{seg: round(float(summary[seg]), 4) for seg in ("all", "head", "torso", "tail")},
                         "seconds": round(time.perf_counter() - start, 1)})
            print(json.dumps(rows[-1]), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
