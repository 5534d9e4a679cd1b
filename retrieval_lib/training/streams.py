"""Common random numbers in training: each component draws from a random stream of its own.

A training run's seed used to drive one generator for everything, so switching one component off
(the history encoder, say) shifted the random numbers every later component drew: the ablation
differed from the full model in its initial weights and its dropout masks, not only in the component.
Here each named component gets a stream derived from the run's seed and its name, so the arms of a
comparison share all the randomness they can, and the seed noise of their *difference* shrinks (the
variance of a difference falls with the covariance of the arms).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager

import torch


def stream_seed(seed: int, name: str) -> int:
    """A 63-bit seed for component ``name`` of a run with ``seed``: stable across processes and machines."""
    if not name:
        raise ValueError("a random stream needs a component name")
    digest = hashlib.sha256(f"{int(seed)}/{name}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


@contextmanager
def component_stream(seed: int | None, name: str) -> Iterator[None]:
    """Draw from component ``name``'s own stream inside the block; torch's global generator is left as it was.

    With ``seed=None`` (a model built only to load weights into) the block draws from the global
    generator as usual.
    """
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(stream_seed(seed, name))
        yield


def stream_generator(seed: int | None, name: str) -> torch.Generator | None:
    """A generator on component ``name``'s stream, for draws during training (``None`` without a seed)."""
    return None if seed is None else torch.Generator().manual_seed(stream_seed(seed, name))
