"""The results contract: every headline figure a chapter quotes is recorded under one flat key.

``record(key, value)`` stores the number in ``results.json`` (``book/_build/results.json`` when the
book is built) *and* glues it into the notebook, so the prose can quote it with
``{glue:text}`key:.2f``` and tests can assert the claims the prose makes from the same file.

A results file belongs to one world: :func:`bind` (called once per chapter, after generating the
world) tags it with the world's preset and fingerprint under the reserved key ``_meta``, and
recording for another world starts a fresh file, so figures of the ``tiny`` and ``book`` presets
never mix. :func:`load` returns the numbers only; :func:`metadata` the tag.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
import warnings
from collections.abc import Sequence
from numbers import Real
from pathlib import Path
from typing import Any

import numpy as np

#: Environment variable that overrides where results are written.
RESULTS_ENV = "RETRIEVAL_LIB_RESULTS"
#: Environment variable naming a file to which every glue appends ``key<TAB>cell`` (the running cell's
#: number, ``n`` of ``In[n]``): a test reads it to check that prose quotes only figures glued above it.
GLUE_LOG_ENV = "RETRIEVAL_LIB_GLUE_LOG"
#: Keys are lower-case, dot-separated words (``bm25.recall@100.tail``).
KEY_PATTERN = re.compile(r"^[a-z0-9_@]+(\.[a-z0-9_@]+)+$")
#: Keys with these suffixes are wall-clock timings or ratios of timings: recorded, not expected to repeat.
TIMING_SUFFIXES = ("_seconds", "_time_ratio", "ms_per_query", "_ms", "qps", "_rps")
#: The reserved key that holds the file's world tag (``{"preset": ..., "world": ...}``).
META_KEY = "_meta"

_bound: dict[str, str] | None = None


def bind(world: Any) -> None:
    """Tag every later :func:`record` with ``world``'s preset and fingerprint (a world or its config).

    Recording into a file of another world (another preset, seed or config) then starts a fresh file.
    """
    global _bound
    config = getattr(world, "config", world)
    if not (hasattr(config, "name") and callable(getattr(config, "fingerprint", None))):
        raise TypeError(f"bind() takes a generated world or its config, got {type(world).__name__}")
    _bound = {"preset": str(config.name), "world": str(config.fingerprint())}


def results_path() -> Path:
    """Where results go.

    ``$RETRIEVAL_LIB_RESULTS`` if set, else the book's build folder of the enclosing repository (found by
    walking up to ``book/_config.yml``), else ``./results.json``.
    """
    env = os.environ.get(RESULTS_ENV)
    if env:
        return Path(env)
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        if (folder / "book" / "_config.yml").is_file():
            return folder / "book" / "_build" / "results.json"
    return here / "results.json"


def _read(path: str | Path | None) -> dict[str, Any]:
    p = Path(path) if path is not None else results_path()
    if not p.exists():
        return {}
    try:
        data = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{p} is not a valid results file ({err}); delete it and re-run the chapters") from err
    if not isinstance(data, dict):
        raise ValueError(f"{p} must hold a flat JSON object of numbers")
    return data


def load(path: str | Path | None = None) -> dict[str, float]:
    """All recorded numbers (an empty dict if none were recorded yet); the world tag is left out."""
    return {k: v for k, v in _read(path).items() if k != META_KEY}


def metadata(path: str | Path | None = None) -> dict[str, str]:
    """The world tag of a results file: ``{"preset": ..., "world": ...}`` (empty if untagged or missing)."""
    meta = _read(path).get(META_KEY, {})
    return dict(meta) if isinstance(meta, dict) else {}


def _write(data: dict[str, Any], path: Path) -> None:
    """Replace ``path`` atomically with ``data`` (sorted keys): a crash never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as tmp:
        json.dump(dict(sorted(data.items())), tmp, indent=1)
    os.replace(tmp.name, path)


def merge(paths: Sequence[str | Path], out: str | Path) -> dict[str, Any]:
    """Merge results files (one per chapter, in chapter order) into ``out``; return what was written.

    A key recorded by several files keeps the value of the last one, as when the chapters run one
    after another into one file. Missing files are skipped; files of different worlds are an error.
    """
    merged: dict[str, Any] = {}
    for path in paths:
        data = _read(path)
        if not data:
            continue
        meta = data.get(META_KEY)
        if META_KEY in merged and meta != merged[META_KEY]:
            raise ValueError(f"{path} holds results of another world ({meta}) than the files before it "
                             f"({merged[META_KEY]})")
        merged.update(data)
    _write(merged, Path(out))
    return merged


def _check(key: str, value: object) -> float | int:
    if not isinstance(key, str) or not KEY_PATTERN.fullmatch(key):
        raise ValueError(f"result key {key!r} must be lower-case dot-separated words, e.g. 'bm25.recall@100.all'")
    if isinstance(value, bool | np.bool_ | np.complexfloating) or not isinstance(value, Real | np.number):
        raise ValueError(f"result {key!r} must be a number, got {type(value).__name__}")
    if not math.isfinite(float(value)):
        raise ValueError(f"result {key!r} must be finite, got {value!r}")
    return int(value) if isinstance(value, int | np.integer) else float(value)


def record(key: str, value: float, path: str | Path | None = None, glue: bool = True) -> None:
    """Store ``value`` under ``key`` in the results file and glue it into the running notebook.

    The file is rewritten atomically, so a crash never leaves half a file; an unreadable file, or one
    of another world than the one :func:`bind` named, is replaced (with a warning) rather than mixed.
    """
    number = _check(key, value)
    if _bound is None:
        raise RuntimeError("call results.bind(world) before record(): results are tagged with their world")
    p = Path(path) if path is not None else results_path()
    try:
        data = _read(p)
    except ValueError as err:
        warnings.warn(f"{err}; starting a fresh results file", stacklevel=2)
        data = {}
    if data and data.get(META_KEY) != _bound:
        old = data.get(META_KEY) if isinstance(data.get(META_KEY), dict) else {}
        warnings.warn(f"{p} holds results of another world (preset {old.get('preset', '?')!r}); starting a fresh "
                      f"file for preset {_bound['preset']!r}", stacklevel=2)
        data = {}
    data[META_KEY] = dict(_bound)
    data[key] = number
    _write(data, p)
    if glue:
        _glue(key, number)


def _glue(key: str, value: float | int) -> None:
    """Glue into the notebook when running inside a Jupyter kernel with myst-nb installed."""
    try:
        from IPython import get_ipython
        from myst_nb import glue
    except ImportError:
        return
    shell = get_ipython()
    if shell is not None:
        glue(key, value, display=False)
        log = os.environ.get(GLUE_LOG_ENV)
        if log:  # the running cell's number n, as in In[n] (``In`` holds it by now; the counter is ahead)
            with open(log, "a") as out:
                out.write(f"{key}\t{len(shell.user_ns['In']) - 1}\n")


def glue_log(path: str | Path) -> dict[str, int]:
    """Key -> number ``n`` (``In[n]``) of the cell that first glued it, from a ``$RETRIEVAL_LIB_GLUE_LOG`` file."""
    cells: dict[str, int] = {}
    for line in Path(path).read_text().splitlines():
        key, _, count = line.partition("\t")
        cells.setdefault(key, int(count))
    return cells


def deterministic(results: dict[str, float]) -> dict[str, float]:
    """The results that must repeat exactly for the same config and seed (timings left out)."""
    return {k: v for k, v in results.items() if not k.endswith(TIMING_SUFFIXES)}
