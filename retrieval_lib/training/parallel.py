"""Train independent models side by side: one worker process per model at a time, one thread each.

Training runs on one thread (:data:`~retrieval_lib.training.loop.TRAIN_THREADS`), so a two-core laptop
trains two models in about the time of one. A chapter that trains several independent models (ablations,
seeds, loss variants) hands the calls to :func:`train_side_by_side` first; each call trains through the
artifact cache in a worker, and the chapter's own calls afterwards load the weights. The weights are the
same as training the models one after the other in the notebook: same code, same seeds, one thread.

>>> from functools import partial
>>> train_side_by_side([partial(unified_model, features, fingerprint, config, progress=False)
...                     for config in configs])  # doctest: +SKIP
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed

import torch

from retrieval_lib.infra.progress import progress_bar

#: Environment variable that sets how many worker processes train side by side (default: up to 2).
WORKERS_ENV = "RETRIEVAL_LIB_WORKERS"


def default_workers() -> int:
    """``$RETRIEVAL_LIB_WORKERS`` if set, else the number of cores, at most 2 (the book's machines)."""
    env = os.environ.get(WORKERS_ENV, "").strip()
    if env:
        workers = int(env)
        if workers < 1:
            raise ValueError(f"{WORKERS_ENV} must be a positive integer, got {env!r}")
        return workers
    return max(1, min(2, os.cpu_count() or 1))


def _one_thread() -> None:
    torch.set_num_threads(1)


def _run(job: Callable[[], object]) -> float:
    start = time.perf_counter()
    job()  # trains and caches; the weights travel through the cache, not back through the pipe
    return time.perf_counter() - start


def train_side_by_side(jobs: Sequence[Callable[[], object]], workers: int | None = None,
                       progress: bool = True) -> list[float]:
    """Run ``jobs`` (calls that train through the artifact cache) in ``workers`` processes; return seconds per job.

    Each job must be picklable (a ``functools.partial`` of a library function, not a lambda) and must
    cache what it trains, since its return value is dropped. With one worker or one job the jobs run
    here, one after the other. A failing job raises its error here after the others have finished.
    """
    jobs = list(jobs)
    workers = default_workers() if workers is None else int(workers)
    if workers < 1:
        raise ValueError(f"workers must be positive, got {workers}")
    bar = progress_bar(total=len(jobs), progress=progress, desc="models trained side by side")
    seconds = [0.0] * len(jobs)
    if workers == 1 or len(jobs) <= 1:
        for i, job in enumerate(jobs):
            seconds[i] = _run(job)
            bar.update()
        bar.close()
        return seconds
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no forked torch thread pool
    errors: list[BaseException] = []
    with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=context,
                             initializer=_one_thread) as pool:
        futures = {pool.submit(_run, job): i for i, job in enumerate(jobs)}
        for future in as_completed(futures):
            try:
                seconds[futures[future]] = future.result()
            except BaseException as error:  # noqa: BLE001 - re-raised below, after the other jobs
                errors.append(error)
            bar.update()
    bar.close()
    if errors:
        raise errors[0]
    return seconds
