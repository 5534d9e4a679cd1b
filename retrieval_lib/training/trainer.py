"""One training loop for every model in the book, and the two-tower trainer built on it.

:func:`train` runs epochs of shuffled batches with early stopping on a validation score (higher is
better) and restores the best weights. :func:`fit_two_tower` builds every two-tower model's step from
pluggable parts: the model's two encoders, one or more negative sources
(:mod:`retrieval_lib.training.negatives`), their weights over training, and a loss
(:mod:`retrieval_lib.training.losses`). A later chapter adds a sampler or a loss, not a training loop.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from retrieval_lib.infra.cache import cached
from retrieval_lib.infra.progress import progress_bar
from retrieval_lib.infra.validation import positive_ints, positive_numbers
from retrieval_lib.training.losses import Loss
from retrieval_lib.training.negatives import Batch, Catalogue, NegativeSource
from retrieval_lib.training.pairs import TrainingPairs

M = TypeVar("M", bound=nn.Module)


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings. ``patience`` epochs without a better validation score stop training."""

    epochs: int = 20
    batch_size: int = 256
    lr: float = 3e-3
    weight_decay: float = 0.0
    patience: int = 3
    seed: int = 0

    def __post_init__(self) -> None:
        positive_ints(self, ("epochs", "batch_size", "patience"))
        positive_numbers(self, ("lr",))
        if self.weight_decay < 0:
            raise ValueError(f"TrainConfig.weight_decay must be >= 0, got {self.weight_decay!r}")


@dataclass
class TrainHistory:
    """What happened during training: mean loss and validation score per epoch, and the best epoch.

    ``steps`` counts optimiser steps; ``sources`` holds what stateful negative sources report about
    themselves (e.g. seconds spent refreshing an ANN index), keyed by source name.
    """

    train_loss: list[float] = field(default_factory=list)
    valid_score: list[float] = field(default_factory=list)
    best_epoch: int = -1
    seconds: float = 0.0
    stopped_early: bool = False
    sources: dict[str, dict[str, float]] = field(default_factory=dict)
    steps: int = 0

    @property
    def best_score(self) -> float:
        """Validation score of the restored (best) epoch."""
        return self.valid_score[self.best_epoch] if self.best_epoch >= 0 else float("nan")


def steps_per_epoch(n: int, batch_size: int) -> int:
    """Optimiser steps in one epoch of :func:`batches` over ``n`` examples (a size-1 last batch is dropped)."""
    full, rest = divmod(n, batch_size)
    return full + (rest > 1)


def batches(n: int, batch_size: int, generator: torch.Generator) -> Iterator[np.ndarray]:
    """Shuffled index batches over ``n`` examples (the last one may be smaller; size-1 batches dropped)."""
    order = torch.randperm(n, generator=generator).numpy()
    for start in range(0, n, batch_size):
        idx = order[start:start + batch_size]
        if idx.size > 1:
            yield idx


class Optimizer:
    """Adam for dense parameters plus SparseAdam for sparse embedding tables, stepped together.

    Sparse gradients update only the hashed buckets a batch touches, which makes large embedding
    tables cheap to train on a CPU.
    """

    def __init__(self, model: nn.Module, lr: float, weight_decay: float = 0.0) -> None:
        sparse = [m.weight for m in model.modules()
                  if isinstance(m, nn.Embedding | nn.EmbeddingBag) and m.sparse and m.weight.requires_grad]
        sparse_ids = {id(p) for p in sparse}
        dense = [p for p in model.parameters() if p.requires_grad and id(p) not in sparse_ids]
        self.optimizers: list[torch.optim.Optimizer] = []
        if dense:
            self.optimizers.append(torch.optim.Adam(dense, lr=lr, weight_decay=weight_decay))
        if sparse:
            self.optimizers.append(torch.optim.SparseAdam(sparse, lr=lr))
        if not self.optimizers:
            raise ValueError("the model has no trainable parameters")

    def zero_grad(self) -> None:
        """Clear the gradients of every parameter."""
        for opt in self.optimizers:
            opt.zero_grad()

    def step(self) -> None:
        """Apply one update to every parameter."""
        for opt in self.optimizers:
            opt.step()


def train(model: nn.Module, n_examples: int, step: Callable[[nn.Module, np.ndarray], torch.Tensor],
          validate: Callable[[nn.Module], float], config: TrainConfig, progress: bool = True
          ) -> TrainHistory:
    """Train ``model`` with early stopping; return the history and leave the best weights loaded.

    ``step(model, batch_indices)`` returns the loss of one batch; ``validate(model)`` returns a score
    where higher is better (e.g. validation recall).
    """
    if n_examples < 2:
        raise ValueError(f"need at least 2 training examples, got {n_examples}")
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    opt = Optimizer(model, config.lr, config.weight_decay)
    history = TrainHistory()
    best_state: dict[str, Any] | None = None
    start = time.perf_counter()
    epochs = progress_bar(range(config.epochs), progress=progress, desc="epochs")
    for epoch in epochs:
        model.train()
        losses = []
        for idx in batches(n_examples, config.batch_size, generator):
            opt.zero_grad()
            loss = step(model, idx)
            loss.backward()
            opt.step()
            history.steps += 1
            losses.append(loss.item())
        model.eval()
        with torch.no_grad():
            score = float(validate(model))
        history.train_loss.append(float(np.mean(losses)))
        history.valid_score.append(score)
        epochs.set_postfix(loss=history.train_loss[-1], valid=score)
        if history.best_epoch < 0 or score > history.best_score:
            history.best_epoch = epoch
            best_state = copy.deepcopy(model.state_dict())
        elif epoch - history.best_epoch >= config.patience:
            history.stopped_early = True
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    history.seconds = time.perf_counter() - start
    return history


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


def cached_training(name: str, parts: dict[str, Any], fit: Callable[[], tuple[M, TrainHistory]],
                    build: Callable[[], M], code: str | Sequence[str]) -> tuple[M, TrainHistory]:
    """Return ``fit()`` through the artifact cache: weights as a safetensors state dict, history as JSON.

    ``build()`` makes an untrained model of the right shape to load the weights into (no pickle is
    ever unpickled, so a cache file cannot run code); ``code`` names the module(s) whose source joins
    the cache key (see :func:`retrieval_lib.infra.cache.cached`).
    """

    def save(value: tuple[M, TrainHistory], folder: Path) -> None:
        model, history = value
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, folder / "model.safetensors")
        (folder / "history.json").write_text(json.dumps(asdict(history)))

    def load(folder: Path) -> tuple[M, TrainHistory]:
        model = build()
        model.load_state_dict(load_file(folder / "model.safetensors"))
        return model.eval(), TrainHistory(**json.loads((folder / "history.json").read_text()))

    return cached(name, parts, fit, save, load, code=code)
