"""Seed studies of chapters 5, 6, 7, 8 and 9: every arm of a comparison trained at paired seeds.

A comparison of two trained models compares two training procedures, so each study trains every arm
at the same seeds and evaluates every run on the test window's sessions (per-session recall@100). The
file it writes is a :class:`~retrieval_lib.evaluation.seed_study.SeedStudy` that the chapter reads
for its multi-bootstrap interval, instead of retraining every arm at every seed in each build.

    .venv/bin/python benchmarks/seed_study.py --study negatives [--preset book] [--seeds 0 1 2 3 4] [--resume]

Studies (``STUDIES``): ``pretraining`` (chapter 5: scratch and pre-trained transformer two-towers),
``pretrained_encoder`` (chapter 5: an off-the-shelf sentence encoder zero-shot and as the unified
model's frozen product block, beside the doc2query transformer and the unified model),
``ablations`` (chapter 6: the full model and its location, term and transformer ablations),
``negatives`` (chapter 7: the four negative recipes), ``losses`` (chapter 8: softmax, pairwise and
hinge on chapter 7's uniform recipe), ``boosting`` (chapter 9: no boost, the multiplicative boost,
and the additive boost with ``w`` re-tuned on each seed's model from the validation window's logged
purchases). Chapter 6's history and graph
studies are ``benchmarks/unified_seeds.py``. Each seed's runs depend on that seed alone, and the
artifact cache keeps every trained model, so ``--resume`` trains only the seeds a current file lacks
and arms shared between studies (chapter 7's uniform recipe is chapter 8's softmax and chapter 9's
model) train once.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from common import resumed, seed_study_parser, unified_features

from retrieval_lib.encoders.pretrained import PretrainedRetriever, pretrained_query_vectors, with_pretrained_block
from retrieval_lib.evaluation.offline import EvaluationResult, EvaluationSet, evaluate
from retrieval_lib.evaluation.seed_study import SeedStudy
from retrieval_lib.evaluation.semantic_gap import gap_slices
from retrieval_lib.models.transformer_tower import TransformerRetriever, transformer_two_tower
from retrieval_lib.models.unified import UnifiedConfig, UnifiedRetriever, unified_model
from retrieval_lib.serving.boosting import (
    W_MAX,
    BoostedRetriever,
    MultiplicativeRetriever,
    PurchaseRecall,
    quality_features,
    tune_boost,
)
from retrieval_lib.serving.pruning import removed_at_keep
from retrieval_lib.training.curriculum import negative_recipes
from retrieval_lib.training.loop import TrainConfig
from retrieval_lib.training.losses import BOOK_HINGE, BOOK_PAIRWISE, SoftmaxLoss
from retrieval_lib.training.pairs import engaged_pairs
from retrieval_lib.training.pretraining import ENCODER_CONFIG, PRETRAIN_CONFIG, doc2query_model, listing_tokenizer
from retrieval_lib.training.recipes import UNIFIED_TRAIN_CONFIG
from retrieval_lib.training.trainer import steps_per_epoch

#: Library code every unified-model study runs (with everything it imports).
UNIFIED_MODULES = ("retrieval_lib.models.unified", "retrieval_lib.evaluation.offline",
                   "retrieval_lib.features.unified", "retrieval_lib.encoders.graph",
                   "retrieval_lib.training.pretraining", "retrieval_lib.marketplace",
                   "retrieval_lib.training.recipes", "retrieval_lib.training.curriculum")
#: Chapter 5's two-tower training schedule (three epochs, as the chapter trains them).
PRETRAINING_TRAIN = TrainConfig(epochs=3, batch_size=256, lr=3e-3, patience=2)
#: Chapter 6's ablations outside ``benchmarks/unified_seeds.py`` (which holds the history and the graph).
ABLATED = ("location", "term", "transformer")
#: Trials of chapter 9's tuner (the chapter's own setting).
BOOST_TRIALS = 40
#: Candidates per request that chapter 8 prunes (its top 1,000).
PRUNING_DEPTH = 1_000

Runs = dict[str, EvaluationResult]


@dataclass(frozen=True)
class Study:
    """One study: its arms (in the order a chapter compares them), the code it runs, its default seeds."""

    arms: tuple[str, ...]
    modules: tuple[str, ...]
    run: Callable[[Context, int], tuple[Runs, dict[str, object]]]
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    #: Facts about the study's sessions that a chapter needs and cannot compute on another preset.
    describe: Callable[[Context], dict[str, object]] | None = None


class Context:
    """The world, its features and the test sessions, built once per process (through the artifact cache)."""

    def __init__(self, preset: str) -> None:
        self.world, self.fingerprint, self.features = unified_features(preset)
        self.eval_set = EvaluationSet.build(self.world, "test")
        per_epoch = steps_per_epoch(len(engaged_pairs(self.world.observed, "train")),
                                    UNIFIED_TRAIN_CONFIG.batch_size)
        self.recipes = negative_recipes(per_epoch)

    def unified(self, seed: int, config: UnifiedConfig | None = None, recipe: str | None = None,
                loss: object | None = None) -> UnifiedRetriever:
        """A unified model at ``seed`` (chapter 6's in-batch recipe unless ``recipe`` names chapter 7's)."""
        negatives, schedule = self.recipes[recipe] if recipe else (None, None)
        model, _ = unified_model(self.features, self.fingerprint, config or UnifiedConfig(),
                                 replace(UNIFIED_TRAIN_CONFIG, seed=seed), loss=loss, negatives=negatives,
                                 schedule=schedule, progress=False)
        return UnifiedRetriever(model, self.features)

    def evaluate(self, retriever: object) -> EvaluationResult:
        """Per-session metrics of ``retriever`` on the test window."""
        return evaluate(retriever, self.eval_set)

    def transformer(self, seed: int, pretrained: bool = True) -> TransformerRetriever:
        """Chapter 5's transformer two-tower at ``seed``, from the doc2query encoder or from random weights."""
        observed, fingerprint = self.world.observed, self.fingerprint
        tokenizer = listing_tokenizer(observed, fingerprint, vocab_size=ENCODER_CONFIG.vocab_size)
        init = doc2query_model(observed, fingerprint, tokenizer, ENCODER_CONFIG, PRETRAIN_CONFIG)[0] \
            if pretrained else None
        model, _ = transformer_two_tower(observed, fingerprint, tokenizer, ENCODER_CONFIG,
                                         replace(PRETRAINING_TRAIN, seed=seed), pretrained=init, progress=False)
        return TransformerRetriever(model, tokenizer, observed.listings)

    @functools.cached_property
    def zero_shot(self) -> tuple[PretrainedRetriever, EvaluationResult]:
        """The off-the-shelf sentence encoder and its evaluation (no training: the same at every seed)."""
        retriever = PretrainedRetriever.fit(self.world.observed, self.fingerprint, progress=False)
        return retriever, self.evaluate(retriever)


def pretraining(ctx: Context, seed: int) -> tuple[Runs, dict[str, object]]:
    """Chapter 5: the transformer two-tower from random weights and from the doc2query encoder."""
    return {name: ctx.evaluate(ctx.transformer(seed, pretrained=name == "pretrained"))
            for name in ("scratch", "pretrained")}, {}


def pretrained_encoder(ctx: Context, seed: int) -> tuple[Runs, dict[str, object]]:
    """Chapter 5: the off-the-shelf encoder zero-shot, and as the unified model's frozen transformer block.

    Arms: ``minilm`` (zero-shot, seed-free), ``transformer`` (chapter 5's doc2query-pre-trained
    two-tower), ``full`` (chapter 6's unified model) and ``minilm_block`` (the unified model with the
    off-the-shelf vectors in place of the doc2query encoder's frozen block, on both sides).
    """
    zero_shot, zero_shot_run = ctx.zero_shot
    queries = pretrained_query_vectors(ctx.world.observed, ctx.fingerprint, progress=False)
    block = with_pretrained_block(ctx.features, zero_shot.listing_vectors.numpy(), queries)
    model, _ = unified_model(block, ctx.fingerprint, UnifiedConfig(), replace(UNIFIED_TRAIN_CONFIG, seed=seed),
                             progress=False)
    return {"minilm": zero_shot_run, "transformer": ctx.evaluate(ctx.transformer(seed)),
            "full": ctx.evaluate(ctx.unified(seed)), "minilm_block": ctx.evaluate(UnifiedRetriever(model, block))}, {}


def ablations(ctx: Context, seed: int) -> tuple[Runs, dict[str, object]]:
    """Chapter 6: the full model and its location, term and transformer ablations."""
    runs = {"full": ctx.evaluate(ctx.unified(seed))}
    for component in ABLATED:
        runs[f"no_{component}"] = ctx.evaluate(ctx.unified(seed, UnifiedConfig().without(component)))
    return runs, {}


def negatives(ctx: Context, seed: int) -> tuple[Runs, dict[str, object]]:
    """Chapter 7: in-batch negatives alone, plus a uniform pool, plus mined ones from step 0, the curriculum."""
    runs = {"inbatch": ctx.evaluate(ctx.unified(seed))}
    for name in ("uniform", "hard_from_start", "curriculum"):
        runs[name] = ctx.evaluate(ctx.unified(seed, recipe=name))
    return runs, {}


def losses(ctx: Context, seed: int) -> tuple[Runs, dict[str, object]]:
    """Chapter 8: the softmax, the pairwise margin and the multi-part hinge, each on the uniform recipe.

    Per run it also records how long early stopping let it train (``epochs``, ``best_epoch``) and what
    one global threshold keeping 95% of the labels removes from its top 1,000 (:func:`removed_at_keep`),
    so that chapter 8's claims about training length and pruning rest on every seed.
    """
    negatives, schedule = ctx.recipes["uniform"]
    runs, info = {}, {}
    for name, loss in (("softmax", SoftmaxLoss()), ("pairwise", BOOK_PAIRWISE), ("hinge", BOOK_HINGE)):
        model, history = unified_model(ctx.features, ctx.fingerprint, UnifiedConfig(),
                                       replace(UNIFIED_TRAIN_CONFIG, seed=seed), loss=loss, negatives=negatives,
                                       schedule=schedule, progress=False)
        retriever = UnifiedRetriever(model, ctx.features)
        runs[name] = ctx.evaluate(retriever)
        ranked = ctx.eval_set.ranking(retriever, PRUNING_DEPTH)
        pruning = removed_at_keep(retriever.candidate_scores(ctx.eval_set.sessions, ranked),
                                  ctx.eval_set.hits(ranked), ctx.eval_set.segment)
        info[name] = {"epochs": len(history.valid_score), "best_epoch": history.best_epoch + 1, **pruning}
    return runs, info


def boosting(ctx: Context, seed: int) -> tuple[Runs, dict[str, object]]:
    """Chapter 9: no boost, the multiplicative boost, and the additive one with ``w`` tuned on logged purchases."""
    observed = ctx.world.observed
    retriever = ctx.unified(seed, recipe="uniform", loss=SoftmaxLoss())
    quality = quality_features(observed)
    objective = PurchaseRecall(retriever, quality, observed, split="valid", k=100)
    tuning = tune_boost(objective, n_trials=BOOST_TRIALS, seed=seed, high=W_MAX)
    runs = {"none": ctx.evaluate(retriever), "multiplicative": ctx.evaluate(MultiplicativeRetriever(retriever)),
            "additive": ctx.evaluate(BoostedRetriever(retriever, quality, tuning.w))}
    return runs, {"w": [float(x) for x in tuning.w], "valid_recall": float(tuning.best_value)}


def no_shared_word_sessions(ctx: Context) -> dict[str, object]:
    """Chapter 5's semantic-gap slice: the test sessions whose query shares no word with the wanted listing."""
    gap = gap_slices(ctx.eval_set)["no shared word"]
    return {"no_shared_word": [int(s) for s in ctx.eval_set.sessions["session_id"].to_numpy()[gap]]}


STUDIES: dict[str, Study] = {
    "pretraining": Study(("scratch", "pretrained"), ("retrieval_lib.models.transformer_tower",
                                                     "retrieval_lib.evaluation.offline",
                                                     "retrieval_lib.training.pretraining",
                                                     "retrieval_lib.marketplace"), pretraining),
    "pretrained_encoder": Study(("minilm", "transformer", "full", "minilm_block"),
                                (*UNIFIED_MODULES, "retrieval_lib.encoders.pretrained",
                                 "retrieval_lib.models.transformer_tower", "retrieval_lib.evaluation.semantic_gap"),
                                pretrained_encoder, describe=no_shared_word_sessions),
    "ablations": Study(("full", *(f"no_{c}" for c in ABLATED)), UNIFIED_MODULES, ablations),
    "negatives": Study(("inbatch", "uniform", "hard_from_start", "curriculum"), UNIFIED_MODULES, negatives),
    "losses": Study(("softmax", "pairwise", "hinge"), (*UNIFIED_MODULES, "retrieval_lib.training.losses"), losses),
    "boosting": Study(("none", "multiplicative", "additive"), (*UNIFIED_MODULES, "retrieval_lib.serving.boosting"),
                      boosting),
}


def main() -> None:
    parser = seed_study_parser(__doc__.splitlines()[0], "")
    parser.add_argument("--study", required=True, choices=sorted(STUDIES))
    parser.set_defaults(seeds=None)
    args = parser.parse_args()
    study = STUDIES[args.study]
    seeds = args.seeds if args.seeds is not None else list(study.seeds)
    out = args.out or f"book/data/{args.study}_seeds.json"
    start = time.perf_counter()
    results: dict[str, dict[int, EvaluationResult]] = {arm: {} for arm in study.arms}
    extra: dict[str, dict[str, object]] = {}
    seconds = 0
    done = resumed(out, study.modules, args.preset, study.arms) if args.resume else None
    if done is not None:
        results = {arm: {seed: done.result(arm, seed) for seed in done.seeds} for arm in study.arms}
        extra, seconds = dict(done.extra.get("per_seed", {})), int(done.extra["seconds"])
    ctx = Context(args.preset)
    for seed in seeds:
        if seed in results[study.arms[0]]:
            continue
        runs, info = study.run(ctx, seed)
        for arm in study.arms:
            results[arm][seed] = runs[arm]
        if info:
            extra[str(seed)] = info
        summary = {arm: round(run.value("recall@100", "all"), 4) for arm, run in runs.items()}
        print(f"{args.study} seed {seed}: recall@100 {summary} ({time.perf_counter() - start:.0f} s)", flush=True)
    done_seeds = sorted(results[study.arms[0]])
    command = (f"benchmarks/seed_study.py --study {args.study} --preset {args.preset} "
               f"--seeds {' '.join(map(str, done_seeds))} --out {out}")
    written = SeedStudy.collect(args.study, command, args.preset, study.modules,
                                {arm: {s: results[arm][s] for s in done_seeds} for arm in study.arms},
                                extra={"per_seed": {str(s): extra[str(s)] for s in done_seeds if str(s) in extra},
                                       "seconds": seconds + round(time.perf_counter() - start),
                                       **(study.describe(ctx) if study.describe else {})})
    written.save(out)
    print(written.table("all").round(4))
    print(f"wrote {out} ({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
