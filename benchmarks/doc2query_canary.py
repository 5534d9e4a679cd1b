"""A 35-second cross-CPU check: tiny doc2query pre-training against the committed tiny reference.

Chapter 5's doc2query pre-training is where the figures of an Intel Sapphire Rapids machine first part
from the AMD-made reference (``docs/decisions.md``, numerics). This trains only that model, on the tiny
world, on one thread, with an empty cache, and compares its best validation loss with the reference's
``transformer.pretrain_valid_loss``; set pin variables in the environment to try other code paths:

    .venv/bin/python benchmarks/doc2query_canary.py
    MKL_CBWR=COMPATIBLE .venv/bin/python benchmarks/doc2query_canary.py
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time

for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[name] = "1"  # as the tiny reference was made (before numeric libraries load)
os.environ["RETRIEVAL_LIB_CACHE"] = tempfile.mkdtemp(prefix="doc2query-canary-")

from retrieval_lib.infra import chapters, numerics  # noqa: E402  (pins first)
from retrieval_lib.marketplace import generate  # noqa: E402
from retrieval_lib.training.pretraining import (  # noqa: E402
    ENCODER_CONFIG,
    PRETRAIN_CONFIG,
    doc2query_model,
    listing_tokenizer,
)


def main() -> int:
    import torch

    torch.set_num_threads(1)
    reference = chapters.load_reference()["transformer.pretrain_valid_loss"]
    world = generate("tiny", seed=0)
    fingerprint = world.config.fingerprint()
    tokenizer = listing_tokenizer(world.observed, fingerprint, vocab_size=ENCODER_CONFIG.vocab_size)
    start = time.perf_counter()
    _, history = doc2query_model(world.observed, fingerprint, tokenizer, ENCODER_CONFIG, PRETRAIN_CONFIG,
                                 progress=False)
    loss = -history.best_score
    print(f"numerics: {numerics.describe()} (pinned: {numerics.pinned()})")
    print(f"best validation loss {loss!r}, reference {reference!r}: {'the same' if loss == reference else 'DIFFERENT'} "
          f"({time.perf_counter() - start:.0f} s)")
    return 0 if loss == reference else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    finally:
        shutil.rmtree(os.environ["RETRIEVAL_LIB_CACHE"], ignore_errors=True)
