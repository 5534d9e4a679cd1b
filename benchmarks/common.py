"""What the benchmark scripts share: chapter 6's features for a preset (through the artifact cache), their options."""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from pathlib import Path

from retrieval_lib.encoders.graph import graph_embeddings
from retrieval_lib.evaluation.seed_study import SeedStudy
from retrieval_lib.features.unified import UnifiedFeatures
from retrieval_lib.infra.cache import source_digest
from retrieval_lib.marketplace import Marketplace, generate
from retrieval_lib.training.pretraining import ENCODER_CONFIG, PRETRAIN_CONFIG, doc2query_model, listing_tokenizer


def unified_features(preset: str) -> tuple[Marketplace, str, UnifiedFeatures]:
    """The world of ``preset`` (seed 0), its fingerprint, and the unified model's features."""
    world = generate(preset, seed=0, cache=True)
    observed, fingerprint = world.observed, world.config.fingerprint()
    graph = graph_embeddings(observed, fingerprint)
    tokenizer = listing_tokenizer(observed, fingerprint, vocab_size=ENCODER_CONFIG.vocab_size)
    doc2query, _ = doc2query_model(observed, fingerprint, tokenizer, ENCODER_CONFIG, PRETRAIN_CONFIG)
    return world, fingerprint, UnifiedFeatures.build(observed, tokenizer, doc2query.encoder, graph)


def choice_parser(out: str, only_help: str = "variants named exactly so") -> argparse.ArgumentParser:
    """The options every validation-choice benchmark takes: preset, seeds, a subset of variants, output file."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--preset", default="book")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--only", nargs="*", default=None, help=only_help)
    parser.add_argument("--out", default=out)
    return parser


def seed_study_parser(description: str, out: str) -> argparse.ArgumentParser:
    """The options every seed-study benchmark takes: preset, seeds (0-9), output file, ``--resume``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--preset", default="book")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(10)))
    parser.add_argument("--out", default=out)
    parser.add_argument("--resume", action="store_true",
                        help="keep the runs of a current file at --out and train only the missing ones")
    return parser


def resumed(path: str, modules: tuple[str, ...], preset: str, arms: Iterable[str]) -> SeedStudy | None:
    """The study at ``path`` that ``--resume`` keeps, or ``None`` if there is none.

    Exits with a message when the file was written by other library code, another preset or other
    arms: its runs cannot be paired with new ones.
    """
    if not Path(path).is_file():
        return None
    done = SeedStudy.load(path)
    if done.digest != source_digest(tuple(modules)) or done.preset != preset or set(done.arms) != set(arms):
        raise SystemExit(f"{path} was written by other code, preset or arms; run without --resume")
    print(f"kept seeds {done.seeds} of {path}", flush=True)
    return done
