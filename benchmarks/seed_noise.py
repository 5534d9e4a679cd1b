"""Issue 25's remedies for seed noise: the full unified model trained at paired seeds under each remedy.

Each variant is the full model of chapter 6 with one change to its training procedure (an exponential
moving average of the weights, a cosine learning-rate decay); every run is evaluated on the test
window (per-session recall@100) and its early-stopping score (logged validation recall@100) is kept, so
the choice reads only what a marketplace logs: a remedy is adopted when it lowers the SD of the logged
validation recall over seeds without lowering its mean. The test-window SDs are reported, once.

    .venv/bin/python benchmarks/seed_noise.py [--preset book] [--seeds 0 ... 9] [--out FILE] [--resume]

The file is a :class:`~retrieval_lib.evaluation.seed_study.SeedStudy` (arms = variants), stamped with
the command, the preset and the digest of the library code it ran.
"""

from __future__ import annotations

import time
from dataclasses import asdict, replace

from common import resumed, seed_study_parser, unified_features

from retrieval_lib.evaluation.offline import EvaluationSet, evaluate
from retrieval_lib.evaluation.seed_study import SeedStudy
from retrieval_lib.models.unified import UnifiedConfig, UnifiedRetriever, unified_model
from retrieval_lib.training.loop import TrainConfig
from retrieval_lib.training.recipes import UNIFIED_TRAIN_CONFIG

#: The library code the study runs (with everything it imports): its digest stamps the file.
MODULES = ("retrieval_lib.models.unified", "retrieval_lib.evaluation.offline", "retrieval_lib.features.unified",
           "retrieval_lib.encoders.graph", "retrieval_lib.training.pretraining", "retrieval_lib.marketplace",
           "retrieval_lib.training.recipes")
#: Variant -> its remedy settings, each spelled out in full so that adopting one in the recipe leaves
#: every variant's runs (and their cache keys) as they were. ``constant`` is the procedure before issue 25.
VARIANTS: dict[str, dict[str, object]] = {"constant": {"ema_decay": 0.0, "lr_decay": "none"},
                                          "ema": {"ema_decay": 0.99, "lr_decay": "none"},
                                          "cosine": {"ema_decay": 0.0, "lr_decay": "cosine"}}


def train_config(variant: str, seed: int, base: TrainConfig = UNIFIED_TRAIN_CONFIG) -> TrainConfig:
    """The training configuration of ``variant`` at ``seed``."""
    return replace(base, seed=seed, **VARIANTS[variant])


def main() -> None:
    parser = seed_study_parser(__doc__.splitlines()[0], "book/data/seed_noise.json")
    args = parser.parse_args()
    start = time.perf_counter()
    results: dict[str, dict[int, object]] = {variant: {} for variant in VARIANTS}
    logged: dict[str, dict[str, float]] = {variant: {} for variant in VARIANTS}
    epochs: dict[str, dict[str, int]] = {variant: {} for variant in VARIANTS}
    done = resumed(args.out, MODULES, args.preset, VARIANTS) if args.resume else None
    if done is not None:
        for variant in VARIANTS:
            results[variant] = {seed: done.result(variant, seed) for seed in done.seeds}
            logged[variant] = dict(done.extra["valid_logged_recall@100"][variant])
            epochs[variant] = dict(done.extra["best_epoch"][variant])
    world, fingerprint, features = unified_features(args.preset)
    eval_set = EvaluationSet.build(world, "test")
    for seed in args.seeds:
        for variant in VARIANTS:
            if seed in results[variant]:
                continue
            model, history = unified_model(features, fingerprint, UnifiedConfig(), train_config(variant, seed),
                                           progress=False)
            results[variant][seed] = evaluate(UnifiedRetriever(model, features), eval_set)
            logged[variant][str(seed)], epochs[variant][str(seed)] = history.best_score, history.best_epoch
            print(f"seed {seed} {variant}: valid {history.best_score:.4f} (epoch {history.best_epoch}), test "
                  f"{results[variant][seed].value('recall@100', 'all'):.4f} ({time.perf_counter() - start:.0f} s)",
                  flush=True)
    seeds = sorted(set.intersection(*(set(runs) for runs in results.values())))
    command = f"benchmarks/seed_noise.py --preset {args.preset} --seeds {' '.join(map(str, seeds))} --out {args.out}"
    study = SeedStudy.collect(
        "seed_noise", command, args.preset, MODULES,
        {variant: {seed: runs[seed] for seed in seeds} for variant, runs in results.items()},
        extra={"valid_logged_recall@100": {v: {str(s): logged[v][str(s)] for s in seeds} for v in VARIANTS},
               "best_epoch": {v: {str(s): epochs[v][str(s)] for s in seeds} for v in VARIANTS},
               "train_config": {v: asdict(train_config(v, 0)) for v in VARIANTS}})
    study.save(args.out)
    print(study.table("all").round(4))
    print(f"wrote {args.out} ({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
