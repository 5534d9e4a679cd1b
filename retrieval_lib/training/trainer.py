"""The two-tower trainer: one step built from pluggable encoders, negative sources and a loss.

:func:`fit_two_tower` builds every two-tower model's step from its two encoders, one or more negative
sources (:mod:`retrieval_lib.training.negatives`), their weights over training, and a loss
(:mod:`retrieval_lib.training.losses`), and runs it with the one training loop
(:func:`~retrieval_lib.training.loop.train`). A later chapter adds a sampler or a loss, not a training
loop.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, is_dataclass
from typing import Any

import numpy as np
import torch

from retrieval_lib.training.loop import M, TrainConfig, TrainHistory, steps_per_epoch, train
from retrieval_lib.training.losses import Loss
from retrieval_lib.training.negatives import Batch, Catalogue, NegativeSource
from retrieval_lib.training.pairs import TrainingPairs


def describe(part: Any) -> Any:
    """A JSON-able description of a config, loss or negative source for cache keys (class name + fields)."""
    if isinstance(part, dict):
        return {k: describe(v) for k, v in sorted(part.items())}
    if isinstance(part, list | tuple):
        return [describe(v) for v in part]
    if is_dataclass(part) and not isinstance(part, type):
        return {"type": type(part).__name__, **{k: describe(v) for k, v in asdict(part).items()}}
    if callable(part):
        return getattr(part, "__qualname__", repr(part))
    return part


def training_parts(config: TrainConfig, loss: Loss, negatives: NegativeSource | dict[str, NegativeSource],
                   schedule: Schedule | None = None) -> dict[str, Any]:
    """The cache-key parts of a two-tower training run: schedule, loss and negative sources."""
    return {"train": asdict(config), "loss": describe(loss), "negatives": describe(negatives),
            "schedule": describe(schedule)}


def training_code(loss: Loss, negatives: NegativeSource | dict[str, NegativeSource],
                  schedule: Schedule | None = None) -> list[str]:
    """The modules that define a run's loss, negative sources and schedule, for the cache key's code part.

    A source from a module the model does not import (chapter 7's miner) must still invalidate the
    cached model when its code changes. Parts defined outside ``retrieval_lib`` (a reader's own loss in
    a notebook) have no source file to hash; their fields still join the key through
    :func:`training_parts`.
    """
    parts = [loss, *(negatives.values() if isinstance(negatives, dict) else [negatives])]
    if schedule is not None:
        parts.append(schedule)
    modules = {getattr(part, "__module__", None) or type(part).__module__ for part in parts}
    return sorted(m for m in modules if m == "retrieval_lib" or m.startswith("retrieval_lib."))


#: Weights of each negative source at an optimiser step (``schedule(step, total_steps)``).
Schedule = Callable[[int, int], dict[str, float]]


def fit_two_tower(build: Callable[[], M], pairs: TrainingPairs,
                  encode_queries: Callable[[M, np.ndarray], torch.Tensor],
                  encode_listings: Callable[[M, np.ndarray], torch.Tensor],
                  validate: Callable[[M], float], config: TrainConfig, loss: Loss,
                  negatives: NegativeSource | dict[str, NegativeSource], schedule: Schedule | None = None,
                  catalogue: Catalogue | None = None, progress: bool = True) -> tuple[M, TrainHistory]:
    """Train a two-tower model on engaged pairs with pluggable negatives and loss; see :func:`train`.

    ``build()`` makes the untrained model (called after seeding, so its initial weights depend on
    ``config.seed`` only); ``encode_queries(model, rows)`` gives the query vectors of pair rows and
    ``encode_listings(model, listing_ids)`` the product vectors of listings. Each batch's loss is
    ``sum over sources s of weight_s * loss(positive, negatives_s(batch), interaction)``, with weights
    from ``schedule(step, total_steps)``: the paper's weighted sum of one loss per negative-mining
    strategy. Without a schedule every source weighs 1; a schedule returns ``{source name: weight}``
    and must name every source (a source it leaves out would silently train at full weight, so that
    is an error), and a weight of 0 skips the source for that step. Sources that draw listings from
    outside the batch read ``catalogue`` (the listings and their creation days) and, to index it,
    the current product vectors without gradients (see :class:`~retrieval_lib.training.negatives.Batch`).
    """
    sources = negatives if isinstance(negatives, dict) else {"negatives": negatives}
    if not sources:
        raise ValueError("fit_two_tower needs at least one negative source")
    for source in sources.values():
        if hasattr(source, "reset"):
            source.reset()
    torch.manual_seed(config.seed)
    model = build()
    total_steps = steps_per_epoch(len(pairs), config.batch_size) * config.epochs
    step_count = 0

    def step(m: M, idx: np.ndarray) -> torch.Tensor:
        nonlocal step_count
        weights = schedule(step_count, total_steps) if schedule is not None else {}
        if schedule is not None and set(weights) != set(sources):
            raise ValueError(f"the schedule gives weights for {sorted(weights)}, the negative sources are "
                             f"{sorted(sources)}")
        q = encode_queries(m, idx)
        v = encode_listings(m, pairs.listing[idx])
        batch = Batch(idx, pairs, q, v, lambda ids: encode_listings(m, ids), step_count, catalogue,
                      lambda ids: frozen_listings(m, encode_listings, ids))
        positive = (q * v).sum(dim=1)
        interaction = torch.from_numpy(pairs.interaction[idx])
        parts = [weights.get(name, 1.0) * loss(positive, source(batch), interaction)
                 for name, source in sources.items() if weights.get(name, 1.0)]
        if not parts:
            raise ValueError(f"the schedule gives every negative source weight 0 at step {step_count}")
        step_count += 1
        return torch.stack(parts).sum()

    history = train(model, len(pairs), step, validate, config, progress=progress)
    history.sources = {name: dict(source.stats()) for name, source in sources.items() if hasattr(source, "stats")}
    return model, history


def frozen_listings(model: M, encode_listings: Callable[[M, np.ndarray], torch.Tensor], ids: np.ndarray
                    ) -> torch.Tensor:
    """Product vectors as the model would serve them now: evaluation mode, no gradients."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return encode_listings(model, ids)
    finally:
        model.train(was_training)
