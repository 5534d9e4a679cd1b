"""One artifact cache for expensive steps (graph embeddings, pre-training, training).

An artifact is keyed by a hash of everything that determines it: its inputs (data fingerprint, configs,
parameters), the source code of the modules that compute it, found by following their imports
within ``retrieval_lib`` (:func:`source_digest`), so an edited module can never serve a stale artifact,
and the numeric code paths it ran on (:func:`retrieval_lib.infra.numerics.describe`: torch's CPU
capability, its thread count and the pinned variables), since other kernels train other weights.
It is stored under ``$RETRIEVAL_LIB_CACHE`` (default: ``.cache/`` at the repository root, or
``~/.cache/retrieval_lib`` outside a checkout), written atomically, and recomputed when missing or
unreadable, so a corrupted file costs time, never a wrong result.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import torch

from retrieval_lib.infra import numerics

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


#: The package folder, whose modules :func:`source_digest` reads.
PACKAGE_DIR = Path(__file__).resolve().parents[1]


def _module_file(module: str) -> Path | None:
    """The source file of a ``retrieval_lib`` module (``None`` for anything outside the package)."""
    parts = module.split(".")
    if parts[0] != "retrieval_lib":
        return None
    base = PACKAGE_DIR.joinpath(*parts[1:])
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imported_modules(module: str, path: Path) -> set[str]:
    """``retrieval_lib`` modules a source file imports, with the packages whose ``__init__`` they run.

    ``from retrieval_lib.x import y`` may name module ``y``; relative imports are resolved against
    ``module``'s package.
    """
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            found.add(base)
            found |= {f"{base}.{a.name}" for a in node.names}
    with_packages = set()
    for name in found:
        parts = name.split(".")
        with_packages |= {".".join(parts[:i]) for i in range(1, len(parts) + 1)}
    return {m for m in with_packages if m.split(".")[0] == "retrieval_lib" and _module_file(m) is not None}


@functools.cache
def source_digest(modules: tuple[str, ...]) -> str:
    """A hash of the source of ``modules`` and of every ``retrieval_lib`` module they import, transitively.

    This is the code part of a cache key: editing any module an artifact depends on gives a new key.
    """
    seen: dict[str, Path] = {}
    todo = list(modules)
    while todo:
        module = todo.pop()
        path = _module_file(module)
        if path is None:
            raise ValueError(f"{module!r} is not a module of retrieval_lib")
        if module in seen:
            continue
        seen[module] = path
        todo += sorted(_imported_modules(module, path) - set(seen))
    digest = hashlib.sha256()
    for module in sorted(seen):
        digest.update(module.encode())
        digest.update(seen[module].read_bytes())
    return digest.hexdigest()[:16]


def artifact_key(name: str, parts: dict[str, Any]) -> str:
    """A stable key: the artifact's name plus a hash of its JSON-serialised determinants."""
    if not name.replace("_", "").replace("-", "").isalnum():
        raise ValueError(f"artifact name {name!r} must be alphanumeric (with - or _)")
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return f"{name}-{hashlib.sha256(blob).hexdigest()[:16]}"


def cached(name: str, parts: dict[str, Any], compute: Callable[[], T], save: Callable[[T, Path], None],
           load: Callable[[Path], T], *, code: str | Sequence[str], directory: Path | None = None) -> T:
    """Return the artifact ``name`` for ``parts``: loaded if cached and readable, else computed and saved.

    ``parts`` holds every input that changes the artifact; ``code`` names the module(s) that compute it
    (e.g. ``__name__``), whose source and imports join the key. ``save(value, folder)`` writes files
    into an empty folder; ``load(folder)`` reads them back and should raise on anything unexpected,
    which triggers a recompute.
    """
    modules = (code,) if isinstance(code, str) else tuple(code)
    parts = {**parts, "code": source_digest(modules), "numerics": numerics.describe()}
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


def weights_digest(model: torch.nn.Module) -> str:
    """A short hash of a model's weights (identifies a frozen or pre-trained input in cache keys)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]
