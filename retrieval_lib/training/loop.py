"""The one training loop of the book: shuffled batches, early stopping, the best weights restored.

Every model trains through :func:`train` (pre-training in chapter 5, every two-tower model through
:func:`~retrieval_lib.training.trainer.fit_two_tower`), and every trained model is cached through
:func:`cached_training`. This module knows nothing of towers, negatives or losses, so the artifacts of
a model that only uses the loop (the doc2query pre-training) do not depend on their code.
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from retrieval_lib.infra.cache import cached
from retrieval_lib.infra.progress import progress_bar
from retrieval_lib.infra.validation import positive_ints, positive_numbers

M = TypeVar("M", bound=nn.Module)
#: Learning-rate schedules :class:`TrainConfig` knows: constant, or a half cosine down to 0.
LR_DECAYS = ("none", "cosine")


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings. ``patience`` epochs without a better validation score stop training.

    Two remedies for seed noise (issue 25), both off by default: ``ema_decay`` > 0 keeps an exponential
    moving average of the weights (``torch.optim.swa_utils.AveragedModel``), which is what gets
    validated, kept and returned (its horizon is capped at two epochs, see :func:`ema_decay`);
    ``lr_decay="cosine"`` lowers the learning rate along a half cosine
    from ``lr`` to 0 over ``epochs`` epochs (early stopping may end training before it gets there).
    """

    epochs: int = 20
    batch_size: int = 256
    lr: float = 3e-3
    weight_decay: float = 0.0
    patience: int = 3
    seed: int = 0
    ema_decay: float = 0.0
    lr_decay: str = "none"

    def __post_init__(self) -> None:
        positive_ints(self, ("epochs", "batch_size", "patience"))
        positive_numbers(self, ("lr",))
        if self.weight_decay < 0:
            raise ValueError(f"TrainConfig.weight_decay must be >= 0, got {self.weight_decay!r}")
        if isinstance(self.ema_decay, bool) or not isinstance(self.ema_decay, int | float) \
                or not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"TrainConfig.ema_decay must be in [0, 1), got {self.ema_decay!r}")
        if self.lr_decay not in LR_DECAYS:
            raise ValueError(f"TrainConfig.lr_decay must be one of {LR_DECAYS}, got {self.lr_decay!r}")


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


def ema_decay(config: TrainConfig, per_epoch: int) -> float:
    """The moving average's decay: ``config.ema_decay``, capped at ``1 - 1 / (2 * per_epoch)`` (two epochs).

    A decay of 0.99 averages about the last 100 steps. On a small world an epoch has a few steps, so
    that average would still be mostly the untrained initial weights when early stopping judges it;
    the cap keeps the average to recent weights whatever the data size. Where an epoch has at least
    ``1 / (2 * (1 - config.ema_decay))`` steps (50 at 0.99) the cap does not bind and the decay is
    exactly ``config.ema_decay``.
    """
    if per_epoch < 1:
        raise ValueError(f"need at least one step per epoch, got {per_epoch}")
    return min(config.ema_decay, 1.0 - 1.0 / (2 * per_epoch))


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

    def set_lr_factor(self, factor: float) -> None:
        """Scale every optimiser's learning rate to ``factor`` times its initial value."""
        for opt in self.optimizers:
            for group in opt.param_groups:
                group["lr"] = group.setdefault("initial_lr", group["lr"]) * factor


def lr_factor(config: TrainConfig, step: int, total_steps: int) -> float:
    """The learning rate at ``step`` of ``total_steps`` as a share of ``config.lr``."""
    if config.lr_decay == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / max(total_steps, 1)))
    return 1.0


def train(model: nn.Module, n_examples: int, step: Callable[[nn.Module, np.ndarray], torch.Tensor],
          validate: Callable[[nn.Module], float], config: TrainConfig, progress: bool = True
          ) -> TrainHistory:
    """Train ``model`` with early stopping; return the history and leave the best weights loaded.

    ``step(model, batch_indices)`` returns the loss of one batch; ``validate(model)`` returns a score
    where higher is better (e.g. validation recall). With ``config.ema_decay`` the averaged weights are
    the ones validated and kept.
    """
    if n_examples < 2:
        raise ValueError(f"need at least 2 training examples, got {n_examples}")
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    opt = Optimizer(model, config.lr, config.weight_decay)
    per_epoch = steps_per_epoch(n_examples, config.batch_size)
    total_steps = per_epoch * config.epochs
    ema = (AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(ema_decay(config, per_epoch)))
           if config.ema_decay > 0 else None)
    scored = ema.module if ema is not None else model
    history = TrainHistory()
    best_state: dict[str, Any] | None = None
    start = time.perf_counter()
    epochs = progress_bar(range(config.epochs), progress=progress, desc="epochs")
    for epoch in epochs:
        model.train()
        losses = []
        for idx in batches(n_examples, config.batch_size, generator):
            opt.set_lr_factor(lr_factor(config, history.steps, total_steps))
            opt.zero_grad()
            loss = step(model, idx)
            loss.backward()
            opt.step()
            if ema is not None:
                ema.update_parameters(model)
            history.steps += 1
            losses.append(loss.item())
        model.eval()
        scored.eval()
        with torch.no_grad():
            score = float(validate(scored))
        history.train_loss.append(float(np.mean(losses)))
        history.valid_score.append(score)
        epochs.set_postfix(loss=history.train_loss[-1], valid=score)
        if history.best_epoch < 0 or score > history.best_score:
            history.best_epoch = epoch
            best_state = copy.deepcopy(scored.state_dict())
        elif epoch - history.best_epoch >= config.patience:
            history.stopped_early = True
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    history.seconds = time.perf_counter() - start
    return history


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
