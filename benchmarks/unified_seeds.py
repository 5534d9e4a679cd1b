"""Chapter 6's seed study: the full model, its history and graph ablations, and the full model with the taste block.

Trains each arm at paired seeds (the same seeds for every arm) and evaluates every run on the test
window's sessions: per-session recall@100, written as a :class:`~retrieval_lib.evaluation.seed_study.SeedStudy`
that chapter 6 reads instead of retraining four models per seed in every build. The taste block's
weight is chosen for each seed on the validation window's logged engagements, as chapter 6 does for
seed 0 (part of the training procedure, never from latent labels).

    .venv/bin/python benchmarks/unified_seeds.py [--preset book] [--seeds 0 1 ... 9] [--out FILE] [--resume]

The file records the command (with every seed it holds), the preset, the seeds and a digest of the
library code; a test fails when the digest no longer matches, and the book's own seed-0 runs must
reproduce its seed-0 row. With ``--resume``, the seeds already in a current file (same digest and
preset) are kept and only the missing ones are trained: each seed's runs depend on that seed alone.
"""

from __future__ import annotations

import time
from dataclasses import replace

from common import resumed, seed_study_parser, unified_features

from retrieval_lib.evaluation.offline import EvaluationSet, evaluate
from retrieval_lib.evaluation.seed_study import SeedStudy
from retrieval_lib.models.taste import TasteModel, TasteRetriever, choose_taste_weight
from retrieval_lib.models.unified import UnifiedConfig, UnifiedRetriever, unified_model
from retrieval_lib.training.pairs import validation_pairs
from retrieval_lib.training.recipes import UNIFIED_TRAIN_CONFIG

#: The library code the study runs (with everything it imports): its digest stamps the file.
MODULES = ("retrieval_lib.models.taste", "retrieval_lib.models.unified", "retrieval_lib.evaluation.offline",
           "retrieval_lib.training.pairs", "retrieval_lib.features.unified", "retrieval_lib.encoders.graph",
           "retrieval_lib.training.pretraining", "retrieval_lib.marketplace", "retrieval_lib.training.recipes")
#: Arm -> the unified model's configuration (the taste arm adds the taste block to the full model).
ARMS = {"full": UnifiedConfig(), "no_history": UnifiedConfig().without("history"),
        "no_graph": UnifiedConfig().without("graph")}


def main() -> None:
    parser = seed_study_parser(__doc__.splitlines()[0], "book/data/unified_seeds.json")
    args = parser.parse_args()
    start = time.perf_counter()
    results: dict[str, dict[int, object]] = {arm: {} for arm in (*ARMS, "taste")}
    weights, logged, seconds = {}, {}, 0
    done = resumed(args.out, MODULES, args.preset, results) if args.resume else None
    if done is not None:
        for arm in results:
            results[arm] = {seed: done.result(arm, seed) for seed in done.seeds}
        weights, logged = dict(done.extra["taste_weight"]), dict(done.extra["taste_logged_recall@100"])
        seconds = int(done.extra["seconds"])
    todo = [seed for seed in args.seeds if seed not in results["full"]]
    world, fingerprint, features = unified_features(args.preset)
    observed = world.observed
    eval_set = EvaluationSet.build(world, "test")
    pairs = validation_pairs(observed)
    taste = TasteModel.fit(observed)
    for seed in todo:
        train = replace(UNIFIED_TRAIN_CONFIG, seed=seed)
        for arm, config in ARMS.items():
            model, _ = unified_model(features, fingerprint, config, train)
            retriever = UnifiedRetriever(model, features)
            results[arm][seed] = evaluate(retriever, eval_set)
            if arm == "full":
                weight, scores = choose_taste_weight(retriever, taste, pairs)
                weights[str(seed)], logged[str(seed)] = weight, {f"{w:g}": s for w, s in scores.items()}
                results["taste"][seed] = evaluate(TasteRetriever(retriever, taste, weight), eval_set)
        head = {arm: round(runs[seed].value("recall@100", "head"), 4) for arm, runs in results.items()}
        print(f"seed {seed}: weight {weights[str(seed)]:g}, head recall@100 {head} "
              f"({time.perf_counter() - start:.0f} s)", flush=True)
    seeds = sorted(results["full"])
    results = {arm: {seed: runs[seed] for seed in seeds} for arm, runs in results.items()}
    command = (f"benchmarks/unified_seeds.py --preset {args.preset} --seeds {' '.join(map(str, seeds))} "
               f"--out {args.out}")
    study = SeedStudy.collect("unified_seeds", command, args.preset, MODULES, results,
                              extra={"taste_weight": {str(s): weights[str(s)] for s in seeds},
                                     "taste_logged_recall@100": {str(s): logged[str(s)] for s in seeds},
                                     "seconds": seconds + round(time.perf_counter() - start)})
    study.save(args.out)
    print(study.table("head").round(4))
    print(f"wrote {args.out} ({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
