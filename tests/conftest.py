"""Shared fixtures: a tiny generated world (seconds) and, for book tests, one executed book build."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer

from retrieval_lib.encoders.graph import Node2VecConfig, fit_graph_embeddings
from retrieval_lib.encoders.transformer import ListingEncoder, TransformerConfig
from retrieval_lib.features.unified import UnifiedFeatures
from retrieval_lib.infra import results
from retrieval_lib.infra.cache import CACHE_ENV
from retrieval_lib.marketplace import Marketplace, generate
from retrieval_lib.pipeline import build_system
from retrieval_lib.serving.search import Retriever
from retrieval_lib.training.pretraining import listing_tokenizer

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "book" / "_build"
#: Set to 1 to let book tests reuse an existing build instead of executing the book again.
REUSE_ENV = "RETRIEVAL_LIB_REUSE_BUILD"
#: Vocabulary size of the tiny world's tokenizer (the tests' encoders must use the same).
TINY_VOCAB = 1000


@pytest.fixture(scope="session", autouse=True)
def isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Point the artifact cache at a temporary folder: tests never read or write the repository's cache."""
    folder = tmp_path_factory.mktemp("artifact-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(CACHE_ENV, str(folder))
        yield folder


@pytest.fixture(scope="session")
def tiny_world() -> Marketplace:
    return generate("tiny", seed=0)


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_world: Marketplace) -> Tokenizer:
    """The listing tokenizer of the tiny world, with the 1,000-token vocabulary the tiny encoders use."""
    return listing_tokenizer(tiny_world.observed, "tiny-test", vocab_size=TINY_VOCAB)


#: Hash buckets of the tiny unified features (the tests' unified models must use the same).
TINY_BUCKETS = 2**14


@pytest.fixture(scope="session")
def tiny_unified_features(tiny_world: Marketplace, tiny_tokenizer: Tokenizer) -> UnifiedFeatures:
    """Unified-model features of the tiny world, with a small untrained (seeded) text encoder and a quick graph."""
    torch.manual_seed(0)
    encoder = ListingEncoder(TransformerConfig(vocab_size=TINY_VOCAB, dim=16, heads=2, layers=1, ff_dim=32))
    graph = fit_graph_embeddings(tiny_world.observed, Node2VecConfig(dim=8, num_walks=2, walk_length=8))
    return UnifiedFeatures.build(tiny_world.observed, tiny_tokenizer, encoder, graph, n_buckets=TINY_BUCKETS,
                                 max_history=8)


@pytest.fixture(scope="session")
def tiny_system(tiny_world: Marketplace) -> Retriever:
    """The complete served system of the tiny world (book settings), built once into the test cache."""
    return build_system(tiny_world)


@pytest.fixture(scope="session")
def built_book() -> dict[str, float]:
    """Execute every chapter and build the HTML book once per test session; return results.json."""
    path = BUILD / "results.json"
    if not (os.environ.get(REUSE_ENV) == "1" and path.is_file()):
        # the book build uses the repository's own cache and results, whatever the tests point elsewhere
        env = {k: v for k, v in os.environ.items()
               if k not in ("RETRIEVAL_LIB_PRESET", "RETRIEVAL_LIB_RESULTS", CACHE_ENV)}
        proc = subprocess.run([sys.executable, str(ROOT / "book" / "build.py")], cwd=ROOT, env=env,
                              capture_output=True, text=True)
        if proc.returncode != 0:
            pytest.fail(f"book build failed (exit {proc.returncode}):\n{proc.stdout[-6000:]}\n{proc.stderr[-6000:]}")
    return results.load(path)
