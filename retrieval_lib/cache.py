"""One artifact cache for expensive steps (graph embeddings, pre-training, training).

An artifact is keyed by a hash of everything that determines it (configs, parameters, a code version
string). It is stored under ``$RETRIEVAL_LIB_CACHE`` (default: ``.cache/`` at the repository root, or
``~/.cache/retrieval_lib`` outside a checkout), written atomically, and recomputed when missing or
unreadable, so a corrupted file costs time, never a wrong result.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

#: Environment variable that moves the cache.
CACHE_ENV = "RETRIEVAL_LIB_CACHE"


def cache_dir() -> Path:
    """The cache folder: ``$RETRIEVAL_LIB_CACHE``, else ``<repo>/.cache``, else ``~/.cache/retrieval_lib``."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env)
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        if (folder / "book" / "_config.yml").is_file() and (folder / "retrieval_lib").is_dir():
            return folder / ".cache"
    return Path.home() / ".cache" / "retrieval_lib"


def artifact_key(name: str, parts: dict[str, Any]) -> str:
    """A stable key: the artifact's name plus a hash of its JSON-serialised determinants."""
    if not name.replace("_", "").replace("-", "").isalnum():
        raise ValueError(f"artifact name {name!r} must be alphanumeric (with - or _)")
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return f"{name}-{hashlib.sha256(blob).hexdigest()[:16]}"


def cached(name: str, parts: dict[str, Any], compute: Callable[[], T], save: Callable[[T, Path], None],
           load: Callable[[Path], T], directory: Path | None = None) -> T:
    """Return the artifact ``name`` for ``parts``: loaded if cached and readable, else computed and saved.

    ``save(value, folder)`` writes files into an empty folder; ``load(folder)`` reads them back and
    should raise on anything unexpected, which triggers a recompute.
    """
    root = directory if directory is not None else cache_dir()
    folder = root / artifact_key(name, parts)
    if folder.is_dir():
        try:
            return load(folder)
        except Exception as err:  # noqa: BLE001 - any unreadable artifact is recomputed
            warnings.warn(f"cached artifact {folder.name} is unreadable ({err!r}); recomputing", stacklevel=2)
            shutil.rmtree(folder, ignore_errors=True)
    value = compute()
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{folder.name}-"))
    try:
        save(value, tmp)
        (tmp / "parts.json").write_text(json.dumps(parts, sort_keys=True, default=str, indent=1))
        if folder.exists():  # another process finished first: keep theirs
            shutil.rmtree(tmp)
        else:
            os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return value
