"""Progress bars that a reader sees in a notebook and a built book does not.

``tqdm`` ignores its ``TQDM_DISABLE`` environment variable when ``disable`` is passed explicitly, so
every bar in the library goes through :func:`progress_bar`, which honours both the caller's
``progress`` flag and ``TQDM_DISABLE`` (set by ``book/build.py``).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from tqdm.auto import tqdm

TRUE_VALUES = {"1", "true", "yes", "on"}


def progress_bar(iterable: Iterable | None = None, *, progress: bool = True, **kwargs: Any) -> tqdm:
    """A ``tqdm`` bar, shown only when ``progress`` is true and ``TQDM_DISABLE`` is not set."""
    quiet = os.environ.get("TQDM_DISABLE", "").strip().lower() in TRUE_VALUES
    return tqdm(iterable, disable=quiet or not progress, **kwargs)
